"""A simulated device farm on this machine (one OpenSSH server per device), for tests and demos."""
from __future__ import annotations

from harness.farm.devices import (
    DEVICE_CLASSES,
    EMULATED_DEVICE_CLASSES,
    DeviceClass,
    DeviceEnv,
    EmulatedEnv,
    classes_for,
    device_plan,
)
from harness.farm.emulated import check_can_emulate, ensure_emulated_env, qemu_path
from harness.farm.envs import FarmError, ensure_env
from harness.farm.sim import (
    DEFAULT_ENVS_DIR,
    DEFAULT_STATE_DIR,
    DEFAULT_TARGETS_DIR,
    DeviceStatus,
    Farm,
    SimDevice,
    farm_down,
    farm_status,
    farm_up,
    load_farm,
    sshd_path,
)

__all__ = ["DEVICE_CLASSES", "DEFAULT_ENVS_DIR", "DEFAULT_STATE_DIR", "DEFAULT_TARGETS_DIR", "DeviceClass",
           "DeviceEnv", "DeviceStatus", "EMULATED_DEVICE_CLASSES", "EmulatedEnv", "Farm", "FarmError", "SimDevice",
           "check_can_emulate", "classes_for", "device_plan", "ensure_emulated_env", "ensure_env", "farm_down",
           "farm_status", "farm_up", "load_farm", "qemu_path", "sshd_path"]

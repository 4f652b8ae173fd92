"""Shared fixtures: the simulated SSH farm (real sshd on loopback) and isolation from the user's SSH setup."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Tests run their own farm, apart from one a user started with `make farm-up`; both share the
# cached device Python environments, so only the very first run installs numpy<2 + tflite-runtime.
TEST_FARM_DIR = ROOT / ".harness" / "test-farm"
FARM_ENVS_DIR = ROOT / ".harness" / "farm-envs"


@pytest.fixture(autouse=True)
def _no_user_ssh_setup(monkeypatch):
    """Keep ~/.ssh/config and the user's ssh-agent out of tests (as fabric's conftest does)."""
    import paramiko

    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("SSH_AGENT_PID", raising=False)
    monkeypatch.setattr(paramiko.SSHConfig, "from_path", classmethod(lambda cls, path: cls()))


@pytest.fixture(scope="session")
def farm():
    """Three simulated devices (sim-pi4, sim-jetson, sim-x86), each an OpenSSH server on 127.0.0.1."""
    from harness.farm import FarmError, farm_down, farm_up, sshd_path

    try:
        sshd_path()
    except FarmError as exc:
        pytest.fail(str(exc), pytrace=False)
    farm = farm_up(3, state_dir=TEST_FARM_DIR, targets_dir=TEST_FARM_DIR / "targets", envs_dir=FARM_ENVS_DIR)
    try:
        yield farm
    finally:
        farm_down(TEST_FARM_DIR)


@pytest.fixture
def sim_target(farm):
    """Load a simulated device's TargetSpec by name, optionally with fields replaced."""
    import dataclasses

    from harness.schema.targets import load_target

    def load(name: str = "sim-x86", **changes):
        target = load_target(farm.target_file(name))
        return dataclasses.replace(target, **changes) if changes else target

    return load

"""The simulated farm: servers, limits, generated targets, and a full profile on two devices at once."""
from __future__ import annotations

import dataclasses
import socket
import threading
import time
from pathlib import Path

import pytest

from harness.farm import DEVICE_CLASSES, device_plan, farm_down, farm_status, farm_up
from harness.schema.targets import load_target
from harness.run.transport import open_transport

pytestmark = pytest.mark.ssh


def test_device_plan_cycles_through_the_classes():
    names = [name for name, _, _ in device_plan(5)]
    assert names == ["sim-pi4", "sim-jetson", "sim-x86", "sim-pi4-2", "sim-jetson-2"]
    assert {c.name for c in DEVICE_CLASSES} == {"sim-pi4", "sim-jetson", "sim-x86"}


def test_generated_targets_load_like_real_ones(farm):
    for device in farm.devices:
        target = load_target(device.target_file)
        assert target.transport == "ssh" and target.host == "127.0.0.1" and target.port == device.port
        assert target.host_key_policy == "reject"
        assert Path(target.key_file).is_absolute() and Path(target.known_hosts).read_text().startswith(
            f"[127.0.0.1]:{device.port} ssh-ed25519 ")
    assert [s.name for s in farm_status(farm.state_dir) if s.running and s.listening] == farm.target_names


def test_each_device_class_gets_its_own_threads_cpus_and_limits(farm, sim_target):
    seen = {}
    for device in farm.devices:
        transport = open_transport(sim_target(device.name))
        try:
            out = transport.run(["sh", "-c", "echo $OMP_NUM_THREADS; nproc; cat /proc/self/cgroup"], 30).stdout
        finally:
            transport.close()
        threads, nproc, cgroup_lines = out.split("\n", 2)
        cls = next(c for c in DEVICE_CLASSES if c.name == device.device_class)
        assert int(threads) == cls.threads
        assert int(nproc) == len(device.cpus)  # nproc follows the pinning
        seen[device.name] = (len(device.cpus), device.cgroups)
        for directory in device.cgroups:  # where the machine allows cgroups, sessions land in them
            assert f"harness-farm/{Path(directory).name}" in cgroup_lines
    assert seen["sim-pi4"][0] == 1
    pi_cgroups = seen["sim-pi4"][1]
    quota_files = [Path(d, "cpu.cfs_quota_us") for d in pi_cgroups if Path(d, "cpu.cfs_quota_us").exists()]
    quota_files += [Path(d, "cpu.max") for d in pi_cgroups if Path(d, "cpu.max").exists()]
    if not pi_cgroups:
        pytest.skip(f"no writable cgroups here: {farm.devices[0].notes}")
    assert quota_files and quota_files[0].read_text().split()[0] == "50000"  # half of one CPU


def test_farm_down_stops_servers_and_removes_targets_and_cgroups(tmp_path):
    from conftest import FARM_ENVS_DIR
    small = farm_up(1, state_dir=tmp_path / "farm", targets_dir=tmp_path / "targets", envs_dir=FARM_ENVS_DIR)
    assert small.started_s < 5  # the device environment is cached after the first farm-up
    (device,) = small.devices
    assert Path(device.target_file).exists()
    assert farm_down(tmp_path / "farm") == ["sim-pi4"]
    assert not Path(device.target_file).exists()
    assert all(not Path(d).exists() for d in device.cgroups)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", device.port), timeout=1).close()
    assert farm_down(tmp_path / "farm") == []  # idempotent


@pytest.mark.slow
def test_profile_on_two_simulated_devices_in_parallel_and_an_offline_one(farm, sim_target, tmp_path, monkeypatch):
    from harness.run import dispatch, pipeline
    from harness.run.plan import RunSettings
    from harness.prepare.cache import ContentCache
    from harness.schema.recipes import load_recipe
    from helpers import ROOT, digits_build, session_cache_dir

    digits_build()  # the reference model and its three formats, shared with the other tests
    intervals = {}
    real_job = dispatch.run_target_job

    def timed_job(job, progress=None):
        started = time.monotonic()
        try:
            return real_job(job, progress) if progress else real_job(job)
        finally:
            intervals[job.target.name] = (started, time.monotonic(), threading.current_thread().name)

    monkeypatch.setattr(dispatch, "run_target_job", timed_job)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    offline = dataclasses.replace(sim_target("sim-x86"), name="sim-offline", port=closed_port, connect_retries=0)
    targets = [sim_target("sim-pi4"), sim_target("sim-jetson"), offline]
    outcome = pipeline.run_profile([load_recipe("digits_cnn", ROOT / "models")], targets,
                                   settings=RunSettings(warmup=2, iterations=20, min_duration_s=0.0, profile=False),
                                   reports_dir=tmp_path / "reports", cache=ContentCache(session_cache_dir()))
    frame = outcome.frame.set_index(["target", "format"])
    status = frame["status"].to_dict()
    assert status[("sim-pi4", "tflite")] == "ok", frame.loc[("sim-pi4", "tflite"), "error_message"]
    assert status[("sim-pi4", "onnx")] == status[("sim-pi4", "openvino")] == "skipped"
    assert status[("sim-jetson", "onnx")] == "ok", frame.loc[("sim-jetson", "onnx"), "error_message"]
    assert status[("sim-jetson", "tflite")] == "ok", frame.loc[("sim-jetson", "tflite"), "error_message"]
    # The offline device fails alone; the others' results are all there.
    assert {status[("sim-offline", f)] for f in ("tflite", "onnx", "openvino")} == {"lost"}
    assert "cannot connect" in frame.loc[("sim-offline", "onnx"), "error_message"]
    # The devices ran at the same time, one worker each.
    (a0, a1, ta), (b0, b1, tb) = intervals["sim-pi4"], intervals["sim-jetson"]
    assert ta != tb and a0 < b1 and b0 < a1
    pi_row = frame.loc[("sim-pi4", "tflite")]
    assert pi_row["runtime"] == "tflite-runtime" and pi_row["numpy_version"].startswith("1.")
    probes = outcome.run_dir.devices()
    assert probes["sim-pi4"]["reachable"] and probes["sim-jetson"]["python"].startswith("3.8")

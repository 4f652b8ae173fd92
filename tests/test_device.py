"""Device operations over real SSH: the content-addressed cache, the health probe, the device lock."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from harness.run import probe as device
from harness.core.errors import ChecksumMismatch, CommandTimeout
from harness.run.transport import open_transport
from harness.core.files import file_sha256
from test_ssh_transport import CorruptingSSHTransport

pytestmark = pytest.mark.ssh


@pytest.fixture
def x86(sim_target):
    transport = open_transport(sim_target("sim-x86"))
    yield transport
    transport.close()


@pytest.fixture
def artifact(tmp_path):
    path = tmp_path / "model.tflite"
    # Unique per test, so no test sees another's cache entry.
    path.write_bytes(f"{tmp_path}".encode() * 2000)
    return path


def test_upload_lands_in_the_content_addressed_cache(x86, artifact):
    remote = device.ensure_artifact(x86, artifact)
    sha = file_sha256(artifact)
    assert remote == f"{x86.workdir}/cache/{sha}/model.tflite"
    assert Path(remote).read_bytes() == artifact.read_bytes()  # the device is this machine


def test_second_ensure_artifact_sends_nothing(x86, sim_target, artifact):
    first = device.ensure_artifact(x86, artifact)
    sent = dict(x86.stats)
    assert device.ensure_artifact(x86, artifact, file_sha256(artifact)) == first
    assert x86.stats["files_sent"] == sent["files_sent"] and x86.stats["bytes_sent"] == sent["bytes_sent"]
    # A new connection (a later run) finds it in the device's cache too.
    other = open_transport(sim_target("sim-x86"))
    try:
        assert device.ensure_artifact(other, artifact) == first
        assert other.stats["files_sent"] == 0
    finally:
        other.close()


def test_corrupted_upload_is_sent_once_more(sim_target, artifact):
    transport = CorruptingSSHTransport(sim_target("sim-x86"))
    transport.corrupt_sends = 1  # the first transfer is damaged, the second is clean
    try:
        remote = device.ensure_artifact(transport, artifact)
        assert transport.sends == 2 and transport.stats["files_sent"] == 1
        assert Path(remote).read_bytes() == artifact.read_bytes()
    finally:
        transport.close()


def test_upload_corrupted_twice_raises_and_caches_nothing(sim_target, artifact):
    transport = CorruptingSSHTransport(sim_target("sim-x86"))
    try:
        with pytest.raises(ChecksumMismatch, match="twice"):
            device.ensure_artifact(transport, artifact)
        assert transport.sends == 2
        assert not transport.exists(device.cache_path(transport, artifact, file_sha256(artifact)))
    finally:
        transport.close()


def test_probe_reports_each_devices_python_numpy_and_runtimes(sim_target):
    expected = {
        # device: (Python major.minor prefix, numpy major, runtimes that import)
        "sim-pi4": ("3.11", "1", {"tflite"}),
        "sim-jetson": (None, "1", {"onnx", "tflite"}),
        # the host's own Python: the three runtimes and torch (the harness's torch sources need it)
        "sim-x86": (None, None, {"onnx", "tflite", "openvino", "torch"}),
    }
    for name, (python_prefix, numpy_major, runtimes) in expected.items():
        target = sim_target(name)
        transport = open_transport(target)
        try:
            info = device.probe(transport, device.device_python(target, transport))
        finally:
            transport.close()
        assert info["reachable"] is True and info["target"] == name
        available = {fmt for fmt, r in info["runtimes"].items() if r["available"]}
        assert available == runtimes, (name, info["runtimes"])
        if python_prefix:
            assert info["python"].startswith(python_prefix)
        if numpy_major:
            assert info["numpy"].split(".")[0] == numpy_major
        assert info["mem_total_bytes"] > 0 and info["disk_free_bytes"] > 0 and info["cpu_count"] >= 1
        assert "cpu_governor" in info and "temperature_c" in info
        assert info["probe_total_s"] > 0 and json.dumps(info)


def test_probe_of_missing_python_says_what_to_set(x86):
    from harness.core.errors import RemoteCommandFailed
    with pytest.raises(RemoteCommandFailed, match="set `python:`"):
        device.probe(x86, "/no/such/python3")


def _agent_run(transport, agent, python, inputs, result, lock_timeout_s, holder, timeout_s=60):
    return transport.run([python, agent, "run", "--model", "unused.tflite", "--format", "tflite",
                          "--inputs", inputs, "--result", result, "--lock", device.lock_path(transport),
                          "--lock-timeout", str(lock_timeout_s), "--holder", holder], timeout_s=timeout_s)


@pytest.fixture
def blocked_holder(sim_target, tmp_path):
    """An agent run that takes the device lock and then blocks reading its inputs from a FIFO.

    The agent locks before it reads anything, so this is a real measuring run, held still.
    Yields (transport, agent path, python, fifo path, start function).
    """
    target = sim_target("sim-x86")
    transport = open_transport(target)
    agent = device.ensure_agent(transport)
    python = device.device_python(target, transport)
    fifo = f"{transport.workdir}/inputs-{tmp_path.name}.npz"
    transport.run(["rm", "-f", fifo], 30)
    assert transport.run(["mkfifo", fifo], 30).ok
    outcome = {}

    def start(timeout_s=60):
        def hold():
            try:
                outcome["result"] = _agent_run(transport, agent, python, fifo, f"{fifo}.first.json", 0,
                                               "first run", timeout_s)
            except CommandTimeout as exc:
                outcome["timeout"] = exc
        thread = threading.Thread(target=hold, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        lock_file = Path(device.lock_path(transport))
        while "first run" not in (lock_file.read_text() if lock_file.exists() else ""):
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        return thread, outcome

    yield transport, agent, python, fifo, start
    transport.run(["rm", "-f", fifo], 30)
    transport.close()


def test_second_run_on_a_locked_device_fails_busy_or_waits_until_timeout(sim_target, blocked_holder):
    transport, agent, python, fifo, start = blocked_holder
    thread, outcome = start()
    second = open_transport(sim_target("sim-x86"))  # another harness run: its own connection
    try:
        busy = _agent_run(second, agent, python, fifo, f"{fifo}.busy.json", 0, "second run")
        assert busy.exit_code == device.AGENT_EXIT_BUSY
        document = json.loads(Path(f"{fifo}.busy.json").read_text())
        assert document["error_category"] == "device_busy" and "first run" in document["error_message"]
        started = time.monotonic()
        waited = _agent_run(second, agent, python, fifo, f"{fifo}.wait.json", 1, "third run")
        assert waited.exit_code == device.AGENT_EXIT_BUSY and time.monotonic() - started >= 1.0
        assert "still locked after 1" in json.loads(Path(f"{fifo}.wait.json").read_text())["error_message"]
        # Release the first run: feeding its FIFO garbage ends it (as bad input), and the lock with it.
        assert second.run(["sh", "-c", f"printf garbage > {fifo}"], 30).ok
        thread.join(30)
        assert outcome["result"].exit_code == 4
        after = _agent_run(second, agent, python, f"{fifo}.none", f"{fifo}.after.json", 0, "fourth run")
        assert after.exit_code not in (0, device.AGENT_EXIT_BUSY)  # it got the lock, then found no inputs
        assert json.loads(Path(f"{fifo}.after.json").read_text())["error_category"] == "bad_input"
    finally:
        second.close()


def test_lock_is_released_when_the_holder_is_killed(sim_target, blocked_holder):
    transport, agent, python, fifo, start = blocked_holder
    thread, outcome = start(timeout_s=2)
    thread.join(30)
    assert isinstance(outcome.get("timeout"), CommandTimeout)
    _agent_run(transport, agent, python, f"{fifo}.none", f"{fifo}.after.json", 0, "next run")
    assert json.loads(Path(f"{fifo}.after.json").read_text())["error_category"] == "bad_input"


def test_probe_reuses_the_runtimes_while_the_environment_is_unchanged(sim_target, monkeypatch, tmp_path):
    """Over SSH: the second probe imports no runtime (its fingerprint is unchanged); a changed environment, or
    asking for a fresh probe, imports them all again."""
    target = sim_target("sim-x86")
    transport = open_transport(target)
    try:
        python = device.device_python(target, transport)
        first = device.probe(transport, python, fresh=True)
        second = device.probe(transport, python)
        assert second["runtimes_reused"] and second["runtimes"] == first["runtimes"]
        assert second["environment_fingerprint"] == first["environment_fingerprint"]
        assert not device.probe(transport, python, fresh=True)["runtimes_reused"]
    finally:
        transport.close()


def test_a_changed_environment_is_probed_again(tmp_path, monkeypatch):
    from harness.schema.targets import TargetSpec
    target = TargetSpec(name="here", transport="local", python="", workdir=str(tmp_path / "dev"))
    transport = open_transport(target)
    python = device.device_python(target, transport)
    first = device.probe(transport, python)
    again = device.probe(transport, python)
    assert again["runtimes_reused"] and again["numpy"] == first["numpy"]  # kept with the runtimes, not imported
    saved = tmp_path / "dev" / "probe-runtimes.json"
    saved.write_text(saved.read_text().replace('"numpy"', '"numpy_of_an_older_agent"'))
    assert not device.probe(transport, python)["runtimes_reused"]  # a saved probe without numpy's version: redone
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # another import path: what imports may differ
    changed = device.probe(transport, python)
    assert not changed["runtimes_reused"]
    assert device.probe(transport, python)["runtimes_reused"]

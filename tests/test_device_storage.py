"""Device storage a farm can trust, against real sshd devices: cached files verified on use, a bounded cache that
evicts, storage trouble named, and the cache tools that respect another run's lock.

The faults are made for real on the device's disk (the simulated devices keep their workdir on this machine):
bytes flipped in a cached file, as a failing SD card does; a workdir on a small tmpfs, as a full card is.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from harness.agent import agent
from harness.judge.verdict import EXIT_INFRASTRUCTURE, run_verdict
from harness.run import probe as device
from harness.run.device_job import run_target_job
from harness.run.plan import Cell, ModelEval, RunSettings, TargetJob
from harness.run.storage import DeviceCache
from harness.run.transport import open_transport
from harness.schema.rundir import RunDir
from helpers import ROOT, artifact_for, digits_build

pytestmark = pytest.mark.ssh

QUICK = RunSettings(warmup=1, iterations=5, max_samples=50, min_duration_s=0.0, profile=False)


def run_once(target, artifacts, tmp_path, run_id):
    """One run of these artifacts on one target, as the pipeline does it; (run dir, rows by format)."""
    prepared, _ = digits_build()
    run = RunDir.create(run_id, tmp_path / "reports")
    job = TargetJob(target, tuple(Cell(a, target.name) for a in artifacts), {"digits_cnn": ModelEval.of(prepared)},
                    str(run.root.resolve()), QUICK)
    rows = run_target_job(job)
    return run, {r["format"]: r for r in rows}


def flip_bytes(path: Path, start: int = 4096, count: int = 4096) -> None:
    """What a failing SD card does to a file: a block of it changes."""
    data = bytearray(path.read_bytes())
    for i in range(start, min(start + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def cached_file(workdir: Path, artifact) -> Path:
    return workdir / "cache" / artifact.file_sha256[0] / Path(artifact.files[0]).name


@pytest.fixture
def small_disk(tmp_path):
    """A directory on a tmpfs of the size asked for (unmounted afterwards)."""
    mounted = []

    def mount(size_bytes: int) -> Path:
        disk = tmp_path / f"disk{len(mounted)}"
        disk.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(disk)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs as the device's disk here: {done.stderr.strip()}")
        mounted.append(disk)
        os.chmod(disk, 0o777)
        return disk

    yield mount
    for disk in mounted:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# ---------------------------------------------------------------- verified on use
def test_flipped_bytes_in_a_cached_model_are_detected_uploaded_again_and_measured_right(sim_target, tmp_path):
    workdir = tmp_path / "device"
    target = sim_target("sim-x86", workdir=str(workdir))
    tflite = artifact_for("tflite")
    _, first = run_once(target, [tflite], tmp_path, "first")
    assert first["tflite"]["status"] == "ok", first["tflite"]["error_message"]
    assert first["tflite"]["cache_repair"] is None
    assert first["tflite"]["verify_ms"] > 0, "the agent checked the cached files before loading them"

    flip_bytes(cached_file(workdir, tflite))
    run, second = run_once(target, [tflite], tmp_path, "second")
    row = second["tflite"]
    assert row["status"] == "ok", row["error_message"]
    assert row["accuracy"] == pytest.approx(first["tflite"]["accuracy"]), "measured on the re-uploaded, right file"
    assert row["max_abs_diff"] < 1e-3
    assert "digits_cnn.tflite" in row["cache_repair"] and "uploaded again" in row["cache_repair"]
    assert row["artifact_sha256"] == tflite.sha256
    from harness.core.files import file_sha256
    assert file_sha256(cached_file(workdir, tflite)) == tflite.file_sha256[0], "the cache holds the right bytes again"
    assert "storage_suspect" not in run.devices()["sim-x86"], "one repaired entry does not make the storage suspect"


def test_a_file_corrupted_on_every_upload_fails_as_cache_corrupted_and_marks_the_storage_suspect(
        sim_target, tmp_path, monkeypatch):
    workdir = tmp_path / "device"
    target = sim_target("sim-x86", workdir=str(workdir))
    tflite, onnx = artifact_for("tflite"), artifact_for("onnx")
    real_ensure = device.ensure_artifact
    damaged = []

    def ensure_then_decay(transport, local_path, sha256=None):
        remote = real_ensure(transport, local_path, sha256)
        if remote.endswith(".tflite"):  # the card keeps the upload verified, then loses it before use
            flip_bytes(Path(remote))
            damaged.append(remote)
        return remote

    monkeypatch.setattr(device, "ensure_artifact", ensure_then_decay)
    run, rows = run_once(target, [tflite, onnx], tmp_path, "decaying")
    row = rows["tflite"]
    assert (row["status"], row["error_category"]) == ("failed", "cache_corrupted"), row["error_message"]
    assert len(damaged) == 2, "used once, evicted, uploaded again once, corrupted again: no third try"
    assert "corrupted again after a fresh upload" in row["error_message"]
    assert "digits_cnn.tflite" in row["cache_repair"]
    assert rows["onnx"]["status"] == "ok", "the other cells go on"
    verdict = run_verdict(list(rows.values()))
    assert verdict.exit_code == EXIT_INFRASTRUCTURE
    suspect = run.devices()["sim-x86"]["storage_suspect"]
    assert "digits_cnn.tflite" in suspect and "storage" in suspect

    # the mark stays on the device: the next probe shows it, and the report and the summary say so
    transport = open_transport(target)
    try:
        probe = device.probe(transport, device.device_python(target, transport))
    finally:
        transport.close()
    assert probe["storage"]["suspect"]["reason"] == suspect
    from harness.commands.profile import storage_lines
    from harness.report import write_report
    from harness.run.collate import collate
    outcome = collate(run)
    write_report(outcome, {target.name: target})
    lines = storage_lines(outcome)
    assert any(line.startswith("STORAGE SUSPECT on sim-x86") for line in lines), lines
    html = (run.root / "index.html").read_text()
    assert "storage SUSPECT" in html and "corrupted again after a fresh upload" in html


# ---------------------------------------------------------------- a bounded cache
def test_a_device_on_a_small_disk_evicts_old_entries_and_every_cell_completes(sim_target, tmp_path, small_disk):
    prepared, _ = digits_build()
    formats = ["tflite", "onnx", "openvino", "tflite", "onnx"]
    artifacts = {f: artifact_for(f) for f in set(formats)}
    one_run = device.AGENT_PATH.stat().st_size + prepared.eval_inputs_path.stat().st_size + max(
        a.size_bytes for a in artifacts.values())
    everything = sum(a.size_bytes for a in artifacts.values())
    disk = small_disk(4 << 20)
    target = sim_target("sim-x86", workdir=str(disk), cache_max_bytes=int(one_run * 1.6))
    assert everything > target.cache_max_bytes, "the runs together need more than the budget"
    sizes = []
    for k, fmt in enumerate(formats):
        _, rows = run_once(target, [artifacts[fmt]], tmp_path, f"turn{k}")
        assert rows[fmt]["status"] == "ok", rows[fmt]["error_message"]
        cached = sum(p.stat().st_size for p in (disk / "cache").rglob("*") if p.is_file())
        assert cached <= target.cache_max_bytes
        sizes.append(cached)
    print(f"cache bytes after each run ({', '.join(formats)}), budget {target.cache_max_bytes}: {sizes}")
    keys = {p.name for p in (disk / "cache").iterdir() if p.is_dir()}
    assert artifacts["onnx"].file_sha256[0] in keys, "the files of the last run stay"
    assert artifacts["openvino"].file_sha256[0] not in keys, "the least recently used entry went first"
    assert device.AGENT_PATH.name in {p.name for p in (disk / "cache").rglob("agent.py")}, "the agent is never evicted"


def test_an_artifact_larger_than_the_whole_budget_fails_as_device_disk_full(sim_target, tmp_path):
    tflite = artifact_for("tflite")
    target = sim_target("sim-x86", workdir=str(tmp_path / "device"), cache_max_bytes=tflite.size_bytes // 2)
    _, rows = run_once(target, [tflite], tmp_path, "too-big")
    row = rows["tflite"]
    assert (row["status"], row["error_category"]) == ("failed", "device_disk_full"), row["error_message"]
    message = row["error_message"]
    assert str(target.cache_max_bytes) in message and "exceed the whole budget" in message
    assert "cache_max_bytes:" in message, "what to change"
    assert not (tmp_path / "device" / "cache" / tflite.file_sha256[0]).exists(), "nothing was uploaded"
    assert run_verdict([row]).exit_code == EXIT_INFRASTRUCTURE


# ---------------------------------------------------------------- the cache tools
def harness_targets(target_file: Path, *flags: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "harness.cli", "targets", str(target_file), "--cache", *flags],
                          capture_output=True, text=True, env=env, timeout=120)


def test_cache_commands_list_verify_and_prune_and_wait_or_say_busy_on_a_locked_device(farm, sim_target, tmp_path):
    workdir = tmp_path / "device"
    target = sim_target("sim-x86", workdir=str(workdir))
    tflite = artifact_for("tflite")
    _, rows = run_once(target, [tflite], tmp_path, "filled")
    assert rows["tflite"]["status"] == "ok"
    doc = yaml.safe_load(Path(farm.target_file("sim-x86")).read_text())
    doc["workdir"] = str(workdir)
    target_file = tmp_path / "sim-x86.yaml"
    target_file.write_text(yaml.safe_dump(doc))

    listed = harness_targets(target_file)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "3 entries" in listed.stdout and "digits_cnn.tflite" in listed.stdout and "free of" in listed.stdout
    assert "[the agent: never evicted]" in listed.stdout

    flip_bytes(cached_file(workdir, tflite))
    verified = harness_targets(target_file, "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "1 bad, evicted" in verified.stdout and tflite.file_sha256[0][:12] in verified.stdout
    assert not cached_file(workdir, tflite).exists()

    # another run holds the device: the tools say busy, or wait for it
    with open(workdir / "device.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("run other-nightly pid=1\n")
        lock.flush()
        busy = harness_targets(target_file, "--prune")
        assert busy.returncode == 1, busy.stdout + busy.stderr
        assert "busy" in busy.stdout and "other-nightly" in busy.stdout and "--wait" in busy.stdout
        assert len([p for p in (workdir / "cache").iterdir() if len(p.name) == 64]) == 2, "prune touched nothing"
        threading.Timer(1.5, lambda: fcntl.flock(lock, fcntl.LOCK_UN)).start()
        started = time.monotonic()
        waited = harness_targets(target_file, "--prune", "--wait", "30")
        assert time.monotonic() - started >= 1.0
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "pruned 1 entry" in waited.stdout, "everything but the agent (the inputs)"
    remaining = [p for p in (workdir / "cache").iterdir() if len(p.name) == 64]
    assert len(remaining) == 1 and (remaining[0] / "agent.py").exists(), "only the agent is left"


def test_cache_list_of_a_device_pinned_by_a_run_in_progress_keeps_its_entries(sim_target, tmp_path):
    workdir = tmp_path / "device"
    target = sim_target("sim-x86", workdir=str(workdir))
    tflite = artifact_for("tflite")
    run_once(target, [tflite], tmp_path, "filled")
    transport = open_transport(target)
    try:
        cache = DeviceCache.of(target, transport, device.device_python(target, transport),
                               device.ensure_agent(transport))
        cache.pin("in-progress", [tflite.file_sha256[0]])
        pruned = cache.prune(0.0, lock_timeout_s=5)
        kept = {e["key"]: e["pinned"] for e in pruned["state"]["entries"]}
        assert kept.get(tflite.file_sha256[0]) == "run", "a running run's file is never evicted"
        assert len(pruned["evicted"]) == 1, "the unpinned inputs went"
        cache.unpin("in-progress")
        assert cache.prune(0.0, lock_timeout_s=5)["evicted"][0]["key"] == tflite.file_sha256[0]
    finally:
        transport.close()


# ---------------------------------------------------------------- compiled-model caches
class EngineRuntime(agent.Runtime):
    """A runtime with a compiled-engine cache, as ONNX Runtime's TensorRT provider keeps one: it writes an engine
    file into cache_dir on a cold load and fails to load one it cannot read. (No TensorRT on this machine; OpenVINO
    recompiles a damaged blob by itself, so it never reports one as failing.)"""

    fmt = "engine"

    def import_runtime(self):
        return "engine-runtime", "1.0"

    def load(self, path, weights=None, shapes=None):
        engine = os.path.join(self.cache_dir, "model.engine")
        if os.path.exists(engine):
            with open(engine, "rb") as handle:
                if handle.read() != b"ENGINE v1":
                    raise RuntimeError("deserializeCudaEngine failed: corrupted engine file")
        else:
            with open(engine, "wb") as handle:
                handle.write(b"ENGINE v1")
        self.input_names = ["x"]

    def prepare(self, feeds):
        return feeds

    def infer(self, prepared):
        return [prepared[0] * 2]

    def uses_cache(self):
        return True


def test_a_compiled_cache_that_fails_to_load_is_discarded_rebuilt_once_and_the_cell_says_so(tmp_path, monkeypatch):
    args = argparse.Namespace(cache_dir=str(tmp_path / "compiled" / "key"), format="engine", threads=1,
                              model=str(tmp_path / "model.onnx"), weights="", inputs="", runtime_config="")
    import numpy as np
    feeds = agent.Feeds({"f0": np.ones((1, 3), np.float32)}, [{"key": "f0", "name": "x", "mode": "sample"}])
    # the agent times a cold run's warm first use in a fresh process of itself, where this test's runtime does
    # not exist: here it is timed in this process (tests/test_runtime_configs.py runs the real one on OpenVINO)
    monkeypatch.setattr(agent, "warm_first_use", lambda args, cold_ms: {"load_warm_ms": 1.0,
                                                                        "first_inference_warm_ms": 1.0})
    runtime, _, cold, state = agent.load_runtime(EngineRuntime, args, {}, feeds)
    assert (state, runtime.cache_repair) == ("cold", None)
    assert cold["load_cold_ms"] > 0 and cold["first_inference_cold_ms"] > 0
    runtime, _, again, state = agent.load_runtime(EngineRuntime, args, {}, feeds)
    assert (state, runtime.cache_repair) == ("warm", None)
    assert (again["load_cold_ms"], again["first_inference_cold_ms"]) == \
        (cold["load_cold_ms"], cold["first_inference_cold_ms"]), "the cold first use, as recorded"
    assert again["load_warm_ms"] > 0 and again["load_warm_ms"] != 1.0, "a warm run's own first load"
    engine = next((tmp_path / "compiled" / "key").rglob("model.engine"))
    engine.write_bytes(b"\x00garbage")
    runtime, _, _, state = agent.load_runtime(EngineRuntime, args, {}, feeds)
    assert state == "cold", "compiled again"
    assert "failed to load" in runtime.cache_repair and "discarded and rebuilt" in runtime.cache_repair
    assert engine.read_bytes() == b"ENGINE v1"
    from harness.schema.results import agent_metrics
    assert agent.Doc.CACHE_REPAIR in agent.Doc.keys()
    assert agent_metrics({agent.Doc.VERIFY_MS: 1.5})["verify_ms"] == 1.5

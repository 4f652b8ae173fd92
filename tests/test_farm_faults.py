"""What a farm throws at a run: frozen devices, stalled agents, full and read-only disks, a garbage agent in the
device cache, a device clock that is wrong, a metric that misbehaves. Each is the device's or the host's trouble,
named as such (never a model failure), and a resume finishes what was missing.

Real parts: the simulated farm's OpenSSH servers, real SIGSTOP/SIGCONT, real tmpfs mounts for full and read-only
disks, the real agent and CLI.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.run.device_job import run_target_job
from harness.run.plan import Cell, ModelEval, RunSettings, TargetJob
from harness.schema.results import needs_rerun
from harness.schema.rundir import RunDir
from helpers import ROOT, artifact_for, digits_build, session_cache_dir
from test_faults import descendants, pids_with, wait_for

pytestmark = pytest.mark.slow

HARNESS = str(ROOT / ".venv" / "bin" / "harness")
AGENT = ROOT / "harness" / "agent" / "agent.py"
QUICK = RunSettings(warmup=1, iterations=5, max_samples=20, min_duration_s=0.0, profile=False)


def run_cells(target, artifacts, tmp_path, settings=QUICK, run_id="farm-faults"):
    prepared, _ = digits_build()
    run = RunDir.create(run_id, tmp_path / "reports")
    job = TargetJob(target, tuple(Cell(a, target.name) for a in artifacts), {"digits_cnn": ModelEval.of(prepared)},
                    str(run.root.resolve()), settings)
    return run, run_target_job(job)


def signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def target_file(farm, tmp_path, name="sim-x86", **changes) -> Path:
    doc = yaml.safe_load(Path(farm.target_file(name)).read_text())
    doc.update(changes)
    path = tmp_path / "targets" / f"{doc['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def cli(*argv, timeout=300, **kwargs):
    env = {**os.environ, "HARNESS_CACHE_DIR": str(session_cache_dir())}
    return subprocess.run([HARNESS, *argv], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
                          **kwargs)


def results_of(reports: Path, run_id: str):
    return {r["format"]: r for r in json.loads((reports / run_id / "results.json").read_text())}


# ---------------------------------------------------------------- hangs
def test_an_agent_stopped_mid_measurement_is_a_device_timeout_and_the_next_cell_still_runs(sim_target, tmp_path):
    target = sim_target("sim-x86", workdir=str(tmp_path / "device"))
    stopped = {}

    def stop_the_agent():
        agent = ("farm-faults", "digits_cnn__reference__tflite", "--iterations")
        wait_for(lambda: pids_with(*agent), 60, "the tflite agent")
        time.sleep(0.5)
        stopped["pids"] = pids_with(*agent)
        signal_all(stopped["pids"], signal.SIGSTOP)

    thread = threading.Thread(target=stop_the_agent, daemon=True)
    thread.start()
    settings = RunSettings(warmup=1, iterations=10 ** 9, max_samples=20, min_duration_s=60, max_duration_s=60,
                           profile=False, cell_timeout_s=6)
    try:
        run, rows = run_cells(target, [artifact_for("tflite")], tmp_path, settings)
    finally:
        signal_all(stopped.get("pids", []), signal.SIGCONT)
    thread.join(5)
    (row,) = rows
    assert (row["status"], row["error_category"]) == ("lost", "device_timeout"), row["error_message"]
    assert "stopped (state T)" in row["error_message"] and "killed" in row["error_message"]
    assert "harness run --resume farm-faults" in row["error_message"]
    assert needs_rerun(row)
    assert not any(Path(f"/proc/{p}").exists() and b"agent.py" in Path(f"/proc/{p}/cmdline").read_bytes()
                   for p in stopped["pids"]), "the stopped agent was killed"
    # the same device measures the next cell as usual
    _, (again,) = run_cells(target, [artifact_for("onnx")], tmp_path, run_id="after-stop")
    assert again["status"] == "ok"


def test_a_device_frozen_mid_measurement_is_device_timeout_exit_2_and_resume_completes(farm, tmp_path):
    device = next(d for d in farm.devices if d.name == "sim-x86")
    path = target_file(farm, tmp_path, name="sim-x86", workdir=str(tmp_path / "device"))
    doc = yaml.safe_load(path.read_text())
    doc.update(name="sim-frozen", connect_timeout_s=3, connect_retries=0, lock_timeout_s=120)
    path = tmp_path / "targets" / "sim-frozen.yaml"
    path.write_text(yaml.safe_dump(doc))
    reports = tmp_path / "reports"
    common = ["--reports-dir", str(reports), "--history", str(tmp_path / "history.sqlite")]
    env = {**os.environ, "HARNESS_CACHE_DIR": str(session_cache_dir())}
    proc = subprocess.Popen([HARNESS, "profile", "-t", str(path), "--formats", "tflite,onnx", "--max-samples", "20",
                             "--min-duration", "3", "--timeout", "12", "--no-profile", "--run-id", "frozen", *common],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    frozen = []
    try:
        wait_for(lambda: pids_with("frozen", "digits_cnn__reference__tflite", "--iterations"), 120, "the agent")
        time.sleep(0.5)
        frozen = [device.pid] + descendants(device.pid)  # sshd and every session: nothing answers any more
        signal_all(frozen, signal.SIGSTOP)
        out, err = proc.communicate(timeout=120)
    finally:
        signal_all(frozen, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err
    assert "Traceback" not in err + out
    rows = results_of(reports, "frozen")
    assert (rows["tflite"]["status"], rows["tflite"]["error_category"]) == ("lost", "device_timeout")
    assert "stopped answering" in rows["tflite"]["error_message"]
    assert "Not cleaned up" in rows["tflite"]["error_message"]  # says what was left on the device
    assert (rows["onnx"]["status"], rows["onnx"]["error_category"]) == ("lost", "device_timeout")
    assert "harness run --resume frozen" in out
    # the device answers again: the resume measures both cells (after the thawed agent lets go of the lock)
    resumed = cli("run", "--resume", "frozen", *common)
    assert resumed.returncode == 0, resumed.stderr
    assert "resume frozen: 0 cells already done, 2 to run" in resumed.stderr
    assert {f: r["status"] for f, r in results_of(reports, "frozen").items()} == {"tflite": "ok", "onnx": "ok"}


# ---------------------------------------------------------------- the device's cache and storage
def test_a_garbage_agent_in_the_device_cache_is_detected_and_replaced(sim_target, tmp_path):
    target = sim_target("sim-x86", workdir=str(tmp_path / "device"))
    _, (first,) = run_cells(target, [artifact_for("onnx")], tmp_path, run_id="first")
    assert first["status"] == "ok"
    (cached,) = (tmp_path / "device" / "cache").glob("*/agent.py")
    cached.write_text("this is not python {{{\n")
    _, (second,) = run_cells(target, [artifact_for("onnx")], tmp_path, run_id="second")
    assert second["status"] == "ok", second["error_message"]
    assert cached.read_bytes() == AGENT.read_bytes()


def test_each_device_job_leaves_no_run_folder_and_stale_ones_are_swept(sim_target, tmp_path):
    workdir = tmp_path / "device"
    target = sim_target("sim-x86", workdir=str(workdir))
    stale = workdir / "runs" / "killed-long-ago.sim-x86" / "cell"
    stale.mkdir(parents=True)
    (stale / "result.json.part").write_text("{")
    _, (row,) = run_cells(target, [artifact_for("tflite")], tmp_path, run_id="tidy")
    assert row["status"] == "ok"
    assert list((workdir / "runs").iterdir()) == [], "the run's own folder and the stale one are gone"


@pytest.fixture
def tmpfs(tmp_path):
    """A directory on a tmpfs of a given size and mode (unmounted afterwards)."""
    mounted = []

    def mount(name: str, size_bytes: int, read_only: bool = False) -> Path:
        where = tmp_path / name
        where.mkdir(parents=True, exist_ok=True)
        options = f"size={size_bytes}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        os.chmod(where, 0o777) if not read_only else None
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_device_disk_that_fills_while_the_agent_writes_is_device_disk_full_and_resumable(sim_target, tmp_path,
                                                                                            tmpfs):
    disk = tmpfs("device", 8 << 20)
    target = sim_target("sim-x86", workdir=str(disk))
    _, (first,) = run_cells(target, [artifact_for("onnx")], tmp_path, run_id="fills")  # model and inputs cached
    assert first["status"] == "ok"
    filler = disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)  # until ENOSPC
    _, (full,) = run_cells(target, [artifact_for("onnx")], tmp_path, run_id="full")
    assert (full["status"], full["error_category"]) == ("failed", "device_disk_full"), full["error_message"]
    assert "no space left on the device" in full["error_message"].lower()
    assert needs_rerun(full)
    assert not list(disk.rglob("*.part")), "a failed write leaves no part file"
    filler.unlink()
    _, (again,) = run_cells(target, [artifact_for("onnx")], tmp_path, run_id="full-again")
    assert again["status"] == "ok"


def test_a_read_only_device_workdir_is_named_with_its_fix(sim_target, tmp_path, tmpfs):
    disk = tmpfs("ro-device", 1 << 20, read_only=True)
    target = sim_target("sim-x86", workdir=str(disk / "harness"))
    _, rows = run_cells(target, [artifact_for("tflite"), artifact_for("onnx")], tmp_path, run_id="ro")
    for row in rows:
        assert (row["status"], row["error_category"]) == ("failed", "device_storage_readonly")
        assert "cannot be written" in row["error_message"] and "workdir" in row["error_message"]


def test_a_full_host_reports_directory_is_one_line_exit_2_and_resume_completes(tmp_path, tmpfs):
    reports = tmpfs("reports", 2 << 20)
    room = os.statvfs(reports).f_bavail * os.statvfs(reports).f_frsize
    (reports / "filler").write_bytes(b"\0" * (room - (96 << 10)))  # the manifest fits, the run's files do not
    common = ["--reports-dir", str(reports), "--history", str(tmp_path / "h.sqlite")]
    done = cli("profile", "-t", "local", "--formats", "tflite,onnx", "--iterations", "5", "--min-duration", "0",
               "--run-id", "host-full", *common)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("harness:")]
    assert "no space left on this host" in line and str(reports) in line and "--resume" in line
    (reports / "filler").unlink()
    resumed = cli("run", "--resume", "host-full", *common)
    assert resumed.returncode == 0, resumed.stderr
    assert {r["status"] for r in results_of(reports, "host-full").values()} == {"ok"}


# ---------------------------------------------------------------- a device clock that is wrong
def agent_cache(workdir: Path, *argv: str):
    done = subprocess.run([sys.executable, str(AGENT), "cache", *argv, "--workdir", str(workdir)],
                          capture_output=True, text=True, timeout=60)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pins_are_judged_by_the_hosts_clock_not_the_devices(tmp_path):
    workdir = tmp_path / "device"
    entry = workdir / "cache" / ("ab" * 32)
    entry.mkdir(parents=True)
    (entry / "model.onnx").write_bytes(b"x")
    host_now = time.time()
    agent_cache(workdir, "pin", "--run", "running.dev", "--keys", "ab" * 32, "--host-now", str(host_now))
    # the device's clock jumps two days ahead: the pin's file and the entry look two days old to the device
    two_days_ago = time.time() - 2 * 86400
    os.utime(workdir / "pins" / "running.dev.json", (two_days_ago, two_days_ago))
    os.utime(entry, (two_days_ago, two_days_ago))
    pruned = agent_cache(workdir, "prune", "--older-than-days", "1", "--host-now", str(host_now + 60))
    assert pruned["evicted"] == [] and entry.is_dir(), "a run in progress keeps its files"
    # once the host's clock says the pin is a day old, it has expired and the entry goes
    pruned = agent_cache(workdir, "prune", "--older-than-days", "1", "--host-now", str(host_now + 25 * 3600))
    assert [e["key"] for e in pruned["evicted"]] == ["ab" * 32]


# ---------------------------------------------------------------- metrics that misbehave
def test_a_metric_that_returns_nan_or_exits_ends_in_its_cells_evaluation_error():
    from harness.judge.evaluate import ScoringSpec, score_outputs
    outputs = {"y": np.eye(4, dtype=np.float32)}
    labels = np.arange(4)
    spec = ScoringSpec(metric="m.py:metric")

    def nan_metric(outputs, labels):
        return {"map": float("nan")}

    def exiting_metric(outputs, labels):
        sys.exit(7)

    for metric, said in ((nan_metric, "not a finite number"), (exiting_metric, "called sys.exit(7)")):
        row, _ = score_outputs(outputs, outputs, labels, spec, metric, {})
        assert said in row["evaluation_error"], row
        assert row["primary_value"] is None


def test_history_not_recorded_shows_with_q_and_in_the_summary(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = cli("profile", "-t", "local", "--formats", "onnx", "--iterations", "5", "--min-duration", "0", "-q",
               "--run-id", "no-history", "--reports-dir", str(tmp_path / "reports"),
               "--history", f"postgresql://u:secret@127.0.0.1:{port}/x")
    assert done.returncode == 0, done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if "history not recorded" in ln]
    assert "harness history --record no-history" in line and "secret" not in line
    summary = (tmp_path / "reports" / "no-history" / "summary.md").read_text()
    assert "History not recorded" in summary and "secret" not in summary

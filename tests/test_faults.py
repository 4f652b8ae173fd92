"""Fault injection against the simulated farm (real sshd on 127.0.0.1): each fault made on purpose, for real.

Every test injects one fault the way it happens in the field (a device that is
off, a device that dies mid-run, a crashing or hanging agent, a memory limit, a
damaged upload, a full disk, a changed host key, a killed host controller) and
checks that the cell records the category and a message that says what to do,
that the other cells and devices are not affected, and that nothing already
measured is lost.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import FARM_ENVS_DIR
from harness.run import device_job, probe as device, pipeline
from harness.prepare.cache import ContentCache
from harness.farm import farm_down, farm_up
from harness.run.device_job import run_target_job
from harness.run.plan import Cell, ModelEval, RunSettings, TargetJob
from harness.schema.recipes import load_recipe
from harness.schema.rundir import RunDir
from harness.core.files import file_sha256
from harness.run.transport.ssh import SSHTransport
from helpers import ROOT, artifact_for, digits_build, session_cache_dir

pytestmark = pytest.mark.ssh

HARNESS = str(ROOT / ".venv" / "bin" / "harness")
# Short runs: these tests are about faults, not timing (no minimum duration, no profiling pass).
QUICK = RunSettings(warmup=1, iterations=5, max_samples=20, min_duration_s=0.0, profile=False)
# Every shell metacharacter that could end a quoted word or start a command.
NASTY = "dev 'q' \"dq\" ; touch {pwned}; $(touch {pwned}2) `touch {pwned}3` &"


# ---------------------------------------------------------------- helpers
def model_evals():
    prepared, _ = digits_build()
    return {"digits_cnn": ModelEval.of(prepared)}


def run_cells(target, artifacts, tmp_path, settings=QUICK, run_id="faults"):
    """Run these artifacts on one target exactly as the pipeline does; returns (run dir, rows by format)."""
    run = RunDir.create(run_id, tmp_path / "reports")
    job = TargetJob(target, tuple(Cell(a, target.name) for a in artifacts), model_evals(), str(run.root.resolve()),
                    settings)
    rows = run_target_job(job)
    assert [json.loads(run.cell_path(r["cell_id"]).read_text())["row"] for r in rows] == rows, \
        "every row is on disk the moment its cell ends"
    return run, {r["format"]: r for r in rows}


def pids_with(*needles: str):
    """Processes on this machine (the simulated devices' machine) whose command line contains every needle."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                if all(n.encode() in cmdline for n in needles):
                    found.append(int(entry))
            except OSError:
                pass
    return found


def wait_for(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


def descendants(pid: int):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def kill_device(sshd_pid: int) -> None:
    """Power loss: SIGKILL a simulated device's sshd, every connection it serves and what runs under them.

    The sshd processes die first, so the controller sees a dropped connection
    rather than an exit status.
    """
    tree = descendants(sshd_pid)

    def is_sshd(pid):
        try:
            return Path(f"/proc/{pid}/comm").read_text().startswith("sshd")
        except OSError:
            return False
    for pid in [sshd_pid] + [p for p in tree if is_sshd(p)] + [p for p in tree if not is_sshd(p)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lock_is_free(path: str) -> bool:
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def write_python_wrapper(path: Path, real_python: str, before_run: str, comment: str) -> str:
    """A device `python` that behaves like the real one, except that before `agent.py run` it does before_run."""
    path.write_text(f"#!/bin/sh\n# {comment}\nulimit -c 0\n"
                    f"if [ \"$2\" = run ]; then {before_run}; fi\nexec {real_python} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


# ---------------------------------------------------------------- devices that go away
def test_offline_device_and_device_killed_mid_run_keep_other_results_and_resume_finishes_only_the_rest(
        tmp_path, monkeypatch, capsys):
    """One device is off before the run; another dies (sshd and all) while its agent measures a cell."""
    recipe = load_recipe("digits_cnn", ROOT / "models")
    digits_build()  # the session's cached build: the run below converts nothing
    state, targets_dir = tmp_path / "farm", tmp_path / "targets"
    farm = farm_up(3, state_dir=state, targets_dir=targets_dir, envs_dir=FARM_ENVS_DIR)
    try:
        x86 = next(d for d in farm.devices if d.name == "sim-x86")
        # A device that is down: a real target file whose port has no sshd behind it.
        down_doc = {**yaml.safe_load(Path(x86.target_file).read_text()), "name": "sim-down", "port": closed_port(),
                    "connect_retries": 0}
        down_file = targets_dir / "sim-down.yaml"
        down_file.write_text(yaml.safe_dump(down_doc))
        from harness.schema.targets import load_target
        targets = [load_target(str(targets_dir / f"{n}.yaml")) for n in ("sim-pi4", "sim-jetson", "sim-x86")]
        targets.append(load_target(str(down_file)))

        killed = {}

        def killer():
            try:
                # The x86 box's second cell (onnx) is measuring on the device: pull the plug.
                agent = ("digits_cnn__reference__onnx__sim-x86", "--iterations")
                wait_for(lambda: pids_with(*agent), 120, "the x86 onnx agent")
                killed["agents"] = pids_with(*agent)
                kill_device(x86.pid)
            except AssertionError as exc:
                killed["error"] = str(exc)
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        outcome = pipeline.run_profile([recipe], targets, settings=RunSettings(warmup=2, iterations=50,
                                                                               max_samples=50),
                                       run_id="device-lost", reports_dir=tmp_path / "reports",
                                       cache=ContentCache(session_cache_dir()))
        thread.join(5)
        assert "error" not in killed, killed.get("error")
        frame = outcome.frame.set_index(["target", "format"])
        status = frame["status"].to_dict()
        category = frame["error_category"].to_dict()
        # The devices that stayed up finished everything.
        assert status[("sim-pi4", "tflite")] == status[("sim-jetson", "onnx")] == status[("sim-jetson", "tflite")] \
            == "ok"
        assert status[("sim-pi4", "onnx")] == status[("sim-jetson", "openvino")] == "skipped"
        # What the dead device measured before it died is kept; the rest is lost and says why.
        assert status[("sim-x86", "tflite")] == "ok"
        for fmt in ("onnx", "openvino"):
            assert (status[("sim-x86", fmt)], category[("sim-x86", fmt)]) == ("lost", "device_lost")
        assert "connection to the device was lost" in frame.loc[("sim-x86", "onnx"), "error_message"]
        # the cell after it never started: it does not carry the running command's message
        assert frame.loc[("sim-x86", "openvino"), "error_message"] == \
            "not started: the device was lost while digits_cnn__reference__onnx__sim-x86 ran"
        for fmt in ("tflite", "onnx", "openvino"):
            assert (status[("sim-down", fmt)], category[("sim-down", fmt)]) == ("lost", "device_unreachable")
        assert "cannot connect" in frame.loc[("sim-down", "tflite"), "error_message"]
        assert "sshd listens" in frame.loc[("sim-down", "tflite"), "error_message"]  # what to check next
        assert not outcome.run_dir.devices()["sim-down"]["reachable"]
        assert sorted(outcome.missing) == sorted(f"digits_cnn__reference__{f}__{t}" for t, f in
                                                 [("sim-x86", "onnx"), ("sim-x86", "openvino"),
                                                  ("sim-down", "tflite"), ("sim-down", "onnx"),
                                                  ("sim-down", "openvino")])
        assert not any(Path(f"/proc/{p}/cmdline").exists() and Path(f"/proc/{p}/cmdline").read_bytes()
                       for p in killed["agents"]), "the device's processes died with it"
        cells = outcome.run_dir.root / "cells"
        kept = {p.name: p.read_bytes() for p in cells.glob("*.json")
                if json.loads(p.read_text())["row"]["status"] != "lost"}
        assert len(kept) == 7

        # Both devices come back (the farm restarts on new ports; the offline one was the same box).
        farm = farm_up(3, state_dir=state, targets_dir=targets_dir, envs_dir=FARM_ENVS_DIR)
        x86 = next(d for d in farm.devices if d.name == "sim-x86")
        down_file.write_text(yaml.safe_dump({**down_doc, "port": x86.port}))
        monkeypatch.setenv("HARNESS_CACHE_DIR", str(session_cache_dir()))
        from harness.cli import main
        assert main(["run", "--resume", "device-lost", "--reports-dir", str(tmp_path / "reports"),
                     "--no-report"]) == 0
        out = capsys.readouterr()
        assert "resume device-lost: 7 cells already done, 5 to run" in out.err + out.out
        after = {p.name: p for p in cells.glob("*.json")}
        assert len(after) == 12
        assert {n: after[n].read_bytes() for n in kept} == kept, "finished cells are not run again"
        rows = {json.loads(p.read_text())["row"]["cell_id"]: json.loads(p.read_text())["row"] for p in after.values()}
        assert {rows[c]["status"] for c in outcome.missing} == {"ok"}
        assert "missing, lost or device busy" not in out.out
    finally:
        farm_down(state)


def test_connection_dropped_during_file_operations_is_a_connect_error(tmp_path, sim_target):
    """SFTP reports a dead connection as OSError('Socket is closed'); the pipeline needs ConnectError (device_lost)."""
    from harness.core.errors import ConnectError
    transport = SSHTransport(sim_target("sim-x86"))
    try:
        transport.exists("/")
        transport.client.get_transport().sock.close()  # the link drops under an open session
        local = tmp_path / "f.bin"
        local.write_bytes(b"x" * 1000)
        for operation in (lambda: transport.exists("/"), lambda: transport.get("/etc/hostname", tmp_path / "h"),
                          lambda: transport.put(local, f"{transport.workdir}/dropped/f.bin"),
                          lambda: device.ensure_artifact(transport, local)):
            with pytest.raises(ConnectError) as info:
                operation()
            assert "sim-x86" in str(info.value)
    finally:
        transport.close()


# ---------------------------------------------------------------- agents that crash, hang or run out of memory
def test_hung_agent_is_killed_at_its_timeout_and_leaves_no_process_or_lock(sim_target, tmp_path):
    target = sim_target("sim-x86", workdir=str(tmp_path / "device"))
    started = time.monotonic()
    run, rows = run_cells(target, [artifact_for("tflite")], tmp_path,
                          RunSettings(warmup=0, iterations=10**9, cell_timeout_s=3))
    row = rows["tflite"]
    assert (row["status"], row["error_category"]) == ("failed", "timeout")
    assert "killed after 3s timeout" in row["error_message"]
    assert time.monotonic() - started < 30
    cell = row["cell_id"]
    wait_for(lambda: not pids_with(cell), 5, "the timed-out agent to be gone")
    # The kernel drops the flock when the killed process has fully exited (a moment after SIGKILL).
    wait_for(lambda: lock_is_free(str(tmp_path / "device" / "device.lock")), 5, "the device lock to be free")
    assert not list((tmp_path / "device" / ".pids").iterdir()), "pid files are cleaned up"


def test_agent_that_segfaults_is_recorded_as_crashed(sim_target, tmp_path):
    real = sim_target("sim-x86").python
    python = write_python_wrapper(
        tmp_path / "python", real, f"exec {real} -c 'import ctypes; ctypes.string_at(0)'",
        "Injected fault: this device's Python dies with SIGSEGV whenever it runs a model (as a runtime built for "
        "another CPU does); the health probe still works.")
    _, rows = run_cells(sim_target("sim-x86", python=python, workdir=str(tmp_path / "device")),
                        [artifact_for("tflite")], tmp_path)
    row = rows["tflite"]
    assert (row["status"], row["error_category"]) == ("failed", "crashed"), row["error_message"]
    assert row["error_message"].startswith("agent exited 139")
    assert row["latency_p50_ms"] is None


def test_model_the_runtime_rejects_fails_its_cell_with_the_runtimes_message(sim_target, tmp_path):
    """A file that is not a model (named with spaces, quotes and ';'), on a device whose other cells still run."""
    good = artifact_for("onnx")
    junk = tmp_path / "not a 'model'; touch PWNED.tflite"
    junk.write_bytes(b"this is not a flatbuffer\n" * 100)
    sha = file_sha256(junk)
    bad = dataclasses.replace(artifact_for("tflite"), files=(str(junk),), file_sha256=(sha,), sha256=sha,
                              path=str(junk), size_bytes=junk.stat().st_size)
    _, rows = run_cells(sim_target("sim-x86", workdir=str(tmp_path / "device")), [bad, good], tmp_path)
    row = rows["tflite"]
    assert (row["status"], row["error_category"]) == ("failed", "load_failed")
    assert "could not load" in row["error_message"] and "not a 'model'; touch PWNED.tflite" in row["error_message"]
    assert rows["onnx"]["status"] == "ok"
    assert not list(tmp_path.rglob("PWNED"))


def _memory_cgroup(limit_bytes: int):
    """A memory cgroup with this limit (v1 or v2), or skip saying why there is none."""
    name = f"harness-test-oom-{uuid.uuid4().hex[:8]}"
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    base = Path("/sys/fs/cgroup") if v2 else Path("/sys/fs/cgroup/memory")
    if not v2 and not base.is_dir():
        pytest.skip("no cgroup memory controller on this machine: cannot give a device a memory limit")
    directory = base / name
    try:
        directory.mkdir()
        if v2:
            (directory / "memory.max").write_text(str(limit_bytes))
            if (directory / "memory.swap.max").exists():
                (directory / "memory.swap.max").write_text("0")
        else:
            (directory / "memory.limit_in_bytes").write_text(str(limit_bytes))
    except OSError as exc:
        if directory.exists():
            directory.rmdir()
        pytest.skip(f"cgroups are not writable here ({exc.strerror}: {exc.filename}): cannot limit memory")
    return directory


def test_agent_killed_for_memory_is_recorded_as_oom_killed(sim_target, tmp_path):
    # 8 MiB: the agent needs about 40 MiB (Python, numpy and the runtime) before it measures anything.
    group = _memory_cgroup(8 << 20)
    try:
        real = sim_target("sim-x86").python
        python = write_python_wrapper(
            tmp_path / "python", real, f"echo $$ > {group / 'cgroup.procs'}",
            "This device runs models under an 8 MiB memory limit (a cgroup): the kernel kills the agent.")
        _, rows = run_cells(sim_target("sim-x86", python=python, workdir=str(tmp_path / "device")),
                            [artifact_for("tflite")], tmp_path)
    finally:
        wait_for(lambda: not (group / "cgroup.procs").read_text().strip(), 5, "the cgroup to empty")
        group.rmdir()
    row = rows["tflite"]
    assert (row["status"], row["error_category"]) == ("failed", "oom_killed"), row["error_message"]
    assert row["error_message"].startswith("agent exited 137")
    assert "raise the device's memory limit or use a smaller variant" in row["error_message"]


# ---------------------------------------------------------------- uploads
class CorruptsTFLiteUploads(SSHTransport):
    """A link that damages every .tflite transfer: one byte of the temporary file on the device is flipped after
    the SFTP upload and before the on-device sha256 check (what a bad cable or SD card does). Other files pass."""

    def __init__(self, target):
        super().__init__(target)
        self.damaged = []

    def _send_file(self, local_path, remote_tmp):
        super()._send_file(local_path, remote_tmp)
        if str(local_path).endswith(".tflite"):
            with self._sftp().open(remote_tmp, "r+") as handle:
                first = handle.read(1)
                handle.seek(0)
                handle.write(bytes([first[0] ^ 0xFF]))
            self.damaged.append(remote_tmp)


def test_corrupted_upload_is_sent_again_once_then_fails_the_cell_clearly(sim_target, tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr(device_job, "open_transport", lambda target: opened.append(CorruptsTFLiteUploads(target))
                        or opened[-1])
    tflite, onnx = artifact_for("tflite"), artifact_for("onnx")
    target = sim_target("sim-x86", workdir=str(tmp_path / "device"))  # an empty device cache: every file is sent
    _, rows = run_cells(target, [tflite, onnx], tmp_path)
    row = rows["tflite"]
    assert (row["status"], row["error_category"]) == ("failed", "upload_failed")
    assert len(opened[0].damaged) == 2, "sent once, detected, sent once more, detected again"
    assert "sha256 on the device" in row["error_message"] and "twice" in row["error_message"]
    assert "check the device's storage and the link" in row["error_message"]
    assert not list((tmp_path / "device" / "cache" / tflite.file_sha256[0]).glob("*")), "nothing damaged is cached"
    assert rows["onnx"]["status"] == "ok", rows["onnx"]["error_message"]


def test_full_disk_on_the_device_fails_the_upload_and_says_so(sim_target, tmp_path):
    prepared, _ = digits_build()
    tflite = artifact_for("tflite")
    room = device.AGENT_PATH.stat().st_size + prepared.eval_inputs_path.stat().st_size + (64 << 10)
    assert tflite.size_bytes > 2 * (64 << 10), "the model must not fit in the space left"
    disk = tmp_path / "small disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={room}", "tmpfs", str(disk)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs as the device's disk here: {mount.stderr.strip()}")
    try:
        _, rows = run_cells(sim_target("sim-x86", workdir=str(disk)), [tflite], tmp_path)
        leftovers = [p.name for p in disk.rglob("*.part")]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)
    row = rows["tflite"]
    # the cache's budget (derived from the small disk's free space at the first probe) says so before any upload
    assert (row["status"], row["error_category"]) == ("failed", "device_disk_full"), row["error_message"]
    assert "No space left on the device" in row["error_message"]
    assert "workdir:" in row["error_message"]  # what to change
    assert not leftovers, "the partial upload was removed"


# ---------------------------------------------------------------- host keys
def test_changed_host_key_is_refused_and_every_cell_says_how_to_fix_it(sim_target, tmp_path):
    target = sim_target("sim-x86")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    kind, key = (tmp_path / "impostor.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{target.port} {kind} {key}\n")
    started = time.monotonic()
    run, rows = run_cells(dataclasses.replace(target, known_hosts=str(known_hosts)),
                          [artifact_for(f) for f in ("tflite", "onnx")], tmp_path)
    assert time.monotonic() - started < 10, "a changed key is not retried"
    for row in rows.values():
        assert (row["status"], row["error_category"]) == ("failed", "host_key_changed"), "a security event, not lost"
        assert "CHANGED" in row["error_message"]
        assert f"ssh-keygen -R '[127.0.0.1]:{target.port}'" in row["error_message"]
    probe = run.devices()["sim-x86"]
    assert not probe["reachable"] and probe["error_type"] == "HostKeyChanged"


# ---------------------------------------------------------------- a killed host controller
def test_killed_host_controller_loses_nothing_measured_and_resume_finishes(tmp_path):
    digits_build()  # the subprocesses use the session's cache: they convert nothing
    env = {**os.environ, "HARNESS_CACHE_DIR": str(session_cache_dir())}
    env.pop("SSH_AUTH_SOCK", None)
    target = tmp_path / "box.yaml"
    # lock_timeout_s: the killed controller's last agent still holds the device until it ends, as on a real box.
    target.write_text(yaml.safe_dump({"name": "box", "transport": "local", "python": "",
                                      "workdir": str(tmp_path / "box"), "lock_timeout_s": 60}))
    reports = tmp_path / "reports"
    cells = reports / "ctl" / "cells"
    proc = subprocess.Popen([HARNESS, "profile", "-t", str(target), "--run-id", "ctl", "--reports-dir", str(reports),
                             "--iterations", "3000", "--warmup", "5", "--max-samples", "100", "--no-report", "-q"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: cells.is_dir() and any(cells.glob("*.json")) or proc.poll() is not None, 120,
                 "the first cell")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    written = sorted(p.name for p in cells.iterdir())
    assert all(not name.startswith(".") for name in written), f"no half-written file: {written}"
    measured = {name: json.loads((cells / name).read_text()) for name in written}  # each one is valid JSON
    assert 1 <= len(measured) < 3, "killed after the first cell and before the last"
    assert {m["row"]["status"] for m in measured.values()} == {"ok"}
    before = {name: (cells / name).read_bytes() for name in written}
    resumed = subprocess.run([HARNESS, "run", "--resume", "ctl", "--reports-dir", str(reports), "--no-report"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(measured)} cells already done, {3 - len(measured)} to run" in resumed.stdout + resumed.stderr
    assert {name: (cells / name).read_bytes() for name in written} == before
    rows = [json.loads(p.read_text())["row"] for p in cells.glob("*.json")]
    assert sorted(r["format"] for r in rows) == ["onnx", "openvino", "tflite"]
    assert {r["status"] for r in rows} == {"ok"}, [r["error_message"] for r in rows]
    assert "3 cells: 3 ok" in resumed.stdout


# ---------------------------------------------------------------- names that a shell would misread
@pytest.mark.parametrize("transport", ["ssh", "local"])
def test_workdir_with_spaces_quotes_and_semicolons_works_and_runs_nothing(transport, sim_target, tmp_path):
    pwned = f"/tmp/harness-pwned-{uuid.uuid4().hex[:8]}"
    workdir = tmp_path / NASTY.format(pwned=pwned)
    if transport == "ssh":
        target = sim_target("sim-x86", workdir=str(workdir))
    else:
        from harness.schema.targets import TargetSpec
        target = TargetSpec(name="local-nasty", transport="local", python="", workdir=str(workdir))
    _, rows = run_cells(target, [artifact_for("tflite")], tmp_path)
    assert rows["tflite"]["status"] == "ok", rows["tflite"]["error_message"]
    assert list(workdir.joinpath("cache").iterdir()), "the device cache is inside the odd directory"
    for suffix in ("", "2", "3"):
        assert not os.path.exists(pwned + suffix)

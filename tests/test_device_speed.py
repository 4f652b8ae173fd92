"""The device speed reference: a fixed workload the agent times around each repeat, against the device's usual.

Pure parts first (the reason, the retries, the device's store); then real runs on the local target whose agent
runs in a real cgroup: quiet runs, a run under a real 90 % CPU quota, and a heavier model under the same name.
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness.agent import agent
from harness.agent.agent import Doc, SpeedReference, read_cgroup_cpu
from harness.core.files import file_sha256
from harness.judge.device_noise import cgroup_throttling, slow_device_reason, slowdown_causes
from harness.run.cell_steps import measure_while_slow
from harness.run.device_job import run_target_job
from harness.run.measurement import combine_repeats
from harness.run.plan import Cell, ModelEval, RunSettings, TargetJob
from harness.run.rows import CellEnded
from harness.schema.results import FAILED, Category, results_frame
from harness.schema.rundir import RunDir
from harness.schema.targets import QuietLimits, TargetSpec

SLOW = ("slower than its reference", "a CPU quota held the agent back")


def slow_in(reasons) -> bool:
    return any(s in (reasons or "") for s in SLOW)


# ---------------------------------------------------------------- pure
def reading(t, periods=0, throttled=0, ns=0, some_us=0, quota=9000):
    return {"monotonic_s": t, "cpu_jiffies": None, "cpu_count": 2,
            "cgroup_cpu": [{"path": "/sys/fs/cgroup/cpu/dev", "version": "v1", "quota_us": quota, "period_us": 10000,
                            "nr_periods": periods, "nr_throttled": throttled, "throttled_ns": ns}],
            "cpu_pressure": {"some_total_us": some_us, "full_total_us": 0}}


def doc(drift, latency=1.0, t=1.0, throttled=0):
    usual = 20.0
    return {Doc.STATUS: "ok", Doc.LATENCIES_MS: [latency] * 10, Doc.TIMED_ITERATIONS: 10, Doc.TIMED_S: t,
            Doc.CONDITIONS: {"before": reading(0.0), "after": reading(t, 1000, throttled, throttled * 10 ** 6)},
            Doc.REFERENCE: {"ms": usual * (1 + drift) if drift is not None else 20.0,
                            "usual_ms": usual if drift is not None else None, "drift": drift}}


def test_a_device_slower_than_its_reference_names_the_cpu_quota_that_throttled_it():
    slow = doc(0.12, throttled=840)
    reason = slow_device_reason(slow[Doc.REFERENCE], slow[Doc.CONDITIONS]["before"], slow[Doc.CONDITIONS]["after"])
    assert reason == ("the device ran 12% slower than its reference while timing: CPU quota (9000 us of every "
                      "10000 us), 840 of 1000 periods throttled, 0.84 s throttled")
    quiet = doc(0.03, throttled=0)
    assert slow_device_reason(quiet[Doc.REFERENCE], None, None) is None, "within quiet.max_reference_drift"
    assert slow_device_reason(doc(None)[Doc.REFERENCE], None, None) is None, "no usual yet: not judged"
    assert slow_device_reason(slow[Doc.REFERENCE], None, None, QuietLimits(max_reference_drift=None)) is None
    unexplained = slow_device_reason(slow[Doc.REFERENCE], {}, {})
    assert unexplained.endswith("no cause visible in its cgroup, CPU pressure, clock or temperature")
    # a quota bites in bursts a short reference may fall between: its throttled time says so by itself
    bitten = doc(0.01, throttled=80)
    assert slow_device_reason(bitten[Doc.REFERENCE], bitten[Doc.CONDITIONS]["before"],
                              bitten[Doc.CONDITIONS]["after"]) == (
        "a CPU quota held the agent back 8% of the time while timing (its reference ran +1% against its usual): "
        "CPU quota (9000 us of every 10000 us), 80 of 1000 periods throttled, 0.08 s throttled")


def test_pressure_clock_and_heat_are_named_as_causes():
    before = {**reading(0.0), "temperature_c": 60.0}
    after = {**reading(2.0, some_us=600_000), "temperature_c": 81.0,
             "own_cpu": {"cpu": 4, "cur_freq_khz": 600000, "max_freq_khz": 1800000, "governor": "schedutil"}}
    assert slowdown_causes(before, after) == [
        "CPU pressure: runnable tasks waited for a CPU 30% of the time (PSI)",
        "CPU 4 at 600 of 1800 MHz (schedutil)", "temperature 81 C"]
    assert cgroup_throttling(reading(0), reading(1, 100, 0)) is None


def test_a_slow_repeat_is_measured_again_until_quiet_and_one_that_stays_slow_is_noisy():
    runs = iter([doc(0.02, latency=1.0)])
    kept, notes = measure_while_slow(lambda n: next(runs), doc(0.15, latency=1.3, throttled=900), QuietLimits())
    assert kept[Doc.REFERENCE]["drift"] == 0.02 and len(notes) == 1 and not notes[0]["kept"]
    row, extras = combine_repeats([kept], QuietLimits(), remeasured=notes)
    assert row["noisy"] is False and row["remeasured"] == 1 and row["device_speed"] == pytest.approx(1 / 1.02)
    assert extras["remeasured"][0]["latency_median_ms"] == 1.3

    slow = iter([doc(0.10, throttled=800), doc(0.20, throttled=950)])
    calls = []
    kept, notes = measure_while_slow(lambda n: calls.append(n) or next(slow), doc(0.12, throttled=840),
                                     QuietLimits(max_remeasures=2))
    assert calls == [1, 2] and kept[Doc.REFERENCE]["drift"] == 0.10, "the least slow run is kept"
    assert [n["kept"] for n in notes] == [False, True, False]
    row, _ = combine_repeats([kept], QuietLimits(), remeasured=notes)
    assert row["noisy"] is True and row["remeasured"] == 2
    assert "the device ran 10% slower than its reference while timing: CPU quota" in row["noise_reasons"]
    assert "800 of 1000 periods throttled" in row["noise_reasons"]

    def fails(n):
        raise CellEnded(FAILED, Category.TIMEOUT, "timed out")
    kept, notes = measure_while_slow(fails, doc(0.12), QuietLimits())
    assert kept[Doc.REFERENCE]["drift"] == 0.12 and notes[0]["kept"], "a failed run again keeps what there was"
    assert measure_while_slow(fails, doc(0.12), QuietLimits(max_reference_drift=None))[1] == []


def test_columns_and_an_old_agent_without_a_reference():
    row, extras = combine_repeats([{Doc.LATENCIES_MS: [1.0] * 5}])
    assert row["reference_ms"] is None and row["device_speed"] is None and row["remeasured"] == 0
    frame = results_frame([{"run_id": "r", "cell_id": "c", "model": "m", "variant": "v", "format": "onnx",
                            "target": "t", "status": "ok", "remeasured": 2, "device_speed": 0.9}])
    assert str(frame["remeasured"].dtype) == "Int64" and frame["device_speed"][0] == 0.9


def test_the_devices_usual_is_kept_per_agent_and_a_slow_run_does_not_move_it(tmp_path):
    def finish_with(ms, drift_limit=0.05):
        ref = SpeedReference(str(tmp_path), drift_limit)
        ref.times_ms, ref.at = [ms], ["before"]
        return ref.finish()
    first = finish_with(20.0)
    assert first["usual_ms"] is None and first["calibrated"] and first["units"] >= 1
    finish_with(21.0), finish_with(19.0)
    fourth = finish_with(20.4)
    assert fourth["usual_ms"] == 20.0 and fourth["drift"] == pytest.approx(0.02) and not fourth["calibrated"]
    slow = finish_with(24.24)
    assert slow["usual_ms"] == pytest.approx(20.2) and slow["drift"] == pytest.approx(0.2)
    assert finish_with(20.0)["usual_ms"] == pytest.approx(20.2), "the slow run is not part of the usual"
    store = json.loads((tmp_path / agent.REFERENCE_FILE).read_text())
    (entry,) = store.values()
    assert list(store) == [agent.reference_key()] and [r["accepted"] for r in entry["runs"]][-2:] == [False, True]
    for _ in range(agent.REFERENCE_RESET_AFTER):
        assert not finish_with(30.0)["usual_reset"]
    reset = finish_with(30.0)
    assert reset["usual_reset"] and reset["usual_ms"] == 30.0 and reset["drift"] == 0.0, \
        "a device that stays slower for REFERENCE_RESET_AFTER runs: that is its usual now"
    assert finish_with(30.3)["usual_ms"] == 30.0
    assert SpeedReference(None).finish()["usual_ms"] is None, "no workdir: timed, never judged"


def test_the_agent_reads_its_own_cgroup_here():
    groups = read_cgroup_cpu()
    if not Path("/proc/self/cgroup").exists():
        pytest.skip("no /proc/self/cgroup")
    assert groups and {"nr_periods", "nr_throttled", "throttled_ns", "quota_us"} <= set(groups[0])


# ---------------------------------------------------------------- real runs under real cgroups
def _cpu_group(name: str, quota_us=None, period_us=10000):
    """A CPU cgroup (v1 or v2) whose processes outweigh the rest of this shared machine (cpu.shares / cpu.weight),
    with a quota if asked; skips where cgroups are not writable."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    base = Path("/sys/fs/cgroup") if v2 else Path("/sys/fs/cgroup/cpu")
    if not v2 and not (base / "cpu.cfs_quota_us").exists():
        pytest.skip("no cgroup CPU controller on this machine: cannot put the device under a CPU quota")
    directory = base / f"harness-test-speed-{name}-{uuid.uuid4().hex[:6]}"
    try:
        directory.mkdir()
        if v2:
            (directory / "cpu.weight").write_text("10000")
            if quota_us:
                (directory / "cpu.max").write_text(f"{quota_us} {period_us}")
        else:
            (directory / "cpu.shares").write_text("100000")
            if quota_us:
                (directory / "cpu.cfs_period_us").write_text(str(period_us))
                (directory / "cpu.cfs_quota_us").write_text(str(quota_us))
    except OSError as exc:
        if directory.exists():
            directory.rmdir()
        pytest.skip(f"cgroups are not writable here ({exc.strerror}: {exc.filename})")
    return directory


def _wrapper(path: Path, group: Path) -> str:
    """A device `python` whose agent runs inside `group` (the probe too)."""
    path.write_text(f"#!/bin/sh\n# the device: its agent runs in the cgroup {group}\n"
                    f"echo $$ > {group / 'cgroup.procs'}\nexec {sys.executable} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """Runs on one local device (its own workdir, so its own usual), quiet, under a 90 % quota, and quiet with a
    heavier model; each run: digits_cnn onnx, 3 repeats of 1 s, as a nightly measures."""
    from helpers import artifact_for, digits_build, heavier_dense_onnx
    prepared, _ = digits_build()
    tmp = tmp_path_factory.mktemp("speed")
    quiet, quota = _cpu_group("quiet"), _cpu_group("quota", quota_us=9000)
    light = artifact_for("onnx")
    heavy_path = heavier_dense_onnx(tmp / "digits_cnn.onnx", light.interface)
    sha = file_sha256(heavy_path)
    heavy = dataclasses.replace(light, path=str(heavy_path), files=(str(heavy_path),), file_sha256=(sha,), sha256=sha,
                                size_bytes=heavy_path.stat().st_size)
    evals = {"digits_cnn": ModelEval.of(prepared)}
    settings = RunSettings(warmup=5, iterations=20, min_duration_s=1.0, max_samples=20, profile=False, repeats=3)
    runs = {}

    def run(name, group, artifact):
        # only the speed reference and the cgroup's own throttling judge this device: the load of whatever else
        # shares this machine (the other tests, other jobs) is not what these tests are about
        target = TargetSpec(name="speed-dev", transport="local", python=_wrapper(tmp / f"python-{name}", group),
                            workdir=str(tmp / "device"), runtimes=("onnx",), lock_timeout_s=60.0,
                            quiet=QuietLimits(max_other_busy_cpus=None, max_load_per_cpu=None))
        rundir = RunDir.create(name, tmp / "reports")
        started = time.perf_counter()
        (row,) = run_target_job(TargetJob(target, (Cell(artifact, target.name),), evals, str(rundir.root.resolve()),
                                          settings))
        wall = time.perf_counter() - started
        record = json.loads(rundir.cell_path(row["cell_id"]).read_text())
        documents = [json.loads(p.read_text()) for p in sorted((rundir.root / "agent").glob("*.json"))]
        runs[name] = {"row": row, "record": record, "wall_s": wall, "documents": documents}
        return runs[name]

    try:
        run("first", quiet, light)       # the device's first runs: they make its usual
        run("quiet", quiet, light)
        run("quiet2", quiet, light)
        run("quota", quota, light)
        run("heavier", quiet, heavy)
    finally:
        for group in (quiet, quota):
            group.rmdir()
    runs["reports"] = tmp / "reports"
    return runs


@pytest.mark.slow
def test_a_run_under_a_real_cpu_quota_is_noisy_naming_the_throttling_and_a_quiet_run_is_not(device):
    quota = device["quota"]["row"]
    # A shared VM's own speed moves between minutes (this test's reference read 14.0 and 20.5 ms in two runs ten
    # minutes apart, 2026-12-07): a slow spell during one quiet run is a slow device, rightly flagged. Of two quiet
    # runs, one must pass as quiet; the false-alarm rate itself is the nightly calibration's figure.
    quiet = next((device[n]["row"] for n in ("quiet", "quiet2") if not slow_in(device[n]["row"]["noise_reasons"])),
                 device["quiet"]["row"])
    print("\nquiet:", quiet["device_speed"], quiet["reference_ms"], quiet["reference_usual_ms"], quiet["remeasured"],
          quiet["noise_reasons"], quiet["latency_mean_ms"])
    print("quota:", quota["device_speed"], quota["reference_ms"], quota["reference_usual_ms"], quota["remeasured"],
          quota["noise_reasons"], quota["latency_mean_ms"])
    assert quiet["status"] == quota["status"] == "ok"
    assert not slow_in(quiet["noise_reasons"]), quiet["noise_reasons"]
    # the usual comes from the device's own runs so far (a fresh device's first run may itself be a slow one)
    seen = [device[n]["row"]["reference_ms"] for n in ("first", "quiet", "quiet2")]
    assert quiet["device_speed"] > 0.95 and 0.95 * min(seen) <= quiet["reference_usual_ms"] <= 1.05 * max(seen)
    assert quota["noisy"] is True and slow_in(quota["noise_reasons"])
    assert "CPU quota (9000 us of every 10000 us)" in quota["noise_reasons"]
    assert "periods throttled" in quota["noise_reasons"]
    # a repeat that stayed slow was measured twice more; on a machine shared with others the quota bites less
    # (the agent also waits for a CPU), and a run again may come out within the limit
    assert quota["remeasured"] >= 2, "a slow repeat was measured again"
    stayed = re.findall(r"repeat (\d): (?:the device ran \d+% slower than its reference|a CPU quota held the agent "
                        r"back \d+% of the time)[^;]*: CPU quota \(9000 us of every 10000 us\), \d+ of \d+ periods "
                        r"throttled", quota["noise_reasons"])
    assert stayed, quota["noise_reasons"]
    notes = device["quota"]["record"]["remeasured"]
    assert all(slow_in(n["reason"]) and max(n["drift"], n["quota_share"] or 0) > 0.05 for n in notes)
    assert len(device["quota"]["record"]["reference"]) == 3, "each kept repeat's reference is in the cell record"


@pytest.mark.slow
def test_a_heavier_model_under_the_same_name_is_slower_but_not_noisy_for_its_device(device):
    light, heavy = device["quiet"]["row"], device["heavier"]["row"]
    print("\nheavier:", heavy["device_speed"], heavy["latency_mean_ms"], "vs", light["latency_mean_ms"],
          heavy["noise_reasons"])
    assert heavy["cell_id"] == light["cell_id"]
    assert heavy["latency_p50_ms"] > 3 * light["latency_p50_ms"], "a real slowdown of the model"
    assert not slow_in(heavy["noise_reasons"])
    assert heavy["device_speed"] > 0.95


@pytest.mark.slow
def test_the_reference_costs_under_5_percent_of_a_cells_time(device):
    for name in ("quiet", "heavier"):
        run = device[name]
        cost_s = sum((d.get(Doc.REFERENCE) or {}).get("cost_ms", 0.0) for d in run["documents"]) / 1e3
        share = cost_s / run["wall_s"]
        print(f"\n{name}: reference {cost_s * 1e3:.0f} ms of {run['wall_s']:.2f} s ({share:.1%}) over "
              f"{len(run['documents'])} agent runs")
        assert share < 0.05



def test_the_nightly_calibration_reports_the_references_false_alarms_and_detections():
    from harness.bench.nightly import reference_flags
    flags = reference_flags({"slow": ["", "the device ran 9% slower than its reference while timing: x", ""],
                             "quota_slow": ["a CPU quota held the agent back 7% of the time: CPU quota (9000 us ...)",
                                            ""]})
    assert flags == {"quiet_flagged": 1, "quiet_reruns": 3, "quota_flagged": 1, "quota_reruns": 2,
                     "quota_naming_the_quota": 1}
    assert reference_flags({})["quiet_reruns"] == 0


@pytest.mark.slow
def test_after_three_quiet_runs_the_gate_does_not_pass_a_quota_run_and_fails_a_heavier_build(device, tmp_path):
    """The release gate over the same runs, in order: three quiet nights pass, the night under a 90 % CPU quota is
    not judged (exit 2) naming the device's state, and a heavier model under the same name fails (exit 1)."""
    import subprocess
    policy = tmp_path / "policy.yaml"
    policy.write_text("defaults:\n  max_latency_regression: 0.10\n")
    history = tmp_path / "history.sqlite"

    def gate(run_id):
        return subprocess.run([str(Path(sys.executable).with_name("harness")), "gate", "--run", run_id, "--policy",
                               str(policy), "--reports-dir", str(device["reports"]), "--history", str(history)],
                              capture_output=True, text=True, timeout=120)

    passed = []
    for night in ("first", "quiet", "quiet2"):
        judged = gate(night)
        # a quiet night during one of the shared VM's slow spells is a slow device: not judged (exit 2), said so
        slow = slow_in(device[night]["row"]["noise_reasons"])
        assert judged.returncode == (2 if slow else 0), judged.stdout
        passed += [] if slow else [night]
    assert passed, "no quiet night passed"
    quota = gate("quota")
    assert quota.returncode in (1, 2), quota.stdout
    assert "CPU quota" in quota.stdout and "throttled" in quota.stdout, quota.stdout
    heavier = gate("heavier")
    assert heavier.returncode == 1, heavier.stdout
    assert passed[-1] in heavier.stdout, heavier.stdout  # judged against the newest night that passed

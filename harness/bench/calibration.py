"""Gate calibration: how often the regression judge cries wolf, and how often it catches a real slowdown.

Measured, not simulated: every (model, format) cell is rerun `reruns` times,
each rerun being `repeats` independent agent processes interleaved across all
cells (A B C ... A B C ...), exactly as a nightly measures a device. Then, per
cell, with harness.judge.regression.compare_latency and the gate's default
min_effect (5 %) and alpha (1 %):

* noise only: every pair of reruns (i < j), baseline i and candidate j, the
  history store's between-run spread taken from the other reruns (all but j,
  as a nightly series would have it). A regression called here is a false alarm.
* slowdown applied: the same pairs with the candidate's real samples
  multiplied by 1.10. Missing it is a miss.
* slowdown made real: `quota_reruns` more reruns with every agent process in a
  CPU cgroup limited to 90 % of one CPU (cgroup v1 cpu.cfs_period_us 10000,
  cpu.cfs_quota_us 9000; v2 cpu.max "9000 10000"), each compared with every
  normal rerun. The table shows the median change the quota really made: a
  model whose inference is far shorter than the 10 ms period mostly runs
  between throttles, so its median barely moves, and a judge of medians
  rightly calls that no regression. Where cgroups are not writable this part
  says so and is skipped.

The models are built here with the frameworks' own converters (Keras ->
TFLite with TFLiteConverter, -> ONNX with tf2onnx, ONNX -> OpenVINO IR), so the
calibration does not lean on the pipeline it calibrates: a digits-sized CNN
(about 20 us), and the bench ConvNet's six 3x3 conv layers on 32x32x3 (about
1 ms) and on 112x112x3 (about 10 ms), with seeded random weights.
"""
from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from harness.judge.regression import DEFAULT_ALPHA, DEFAULT_MIN_EFFECT, between_run_spread, compare_latency
from harness.judge.device_noise import noise_reasons, slow_device_reason
from harness.schema.targets import QuietLimits
from harness.bench.models import BenchModel, build_keras_model
from harness.bench.errors import BenchError
from harness.bench.vendor import AGENT, TOOL_TIMEOUT_S, write_random_inputs

FORMATS = ("tflite", "onnx", "openvino")
#: (name, input shape, architecture, what it stands for)
CALIBRATION_MODELS = (
    ("calib_tiny", (1, 8, 8, 1), "tiny", "digits-sized CNN, about 20 us"),
    ("calib_1ms", (1, 32, 32, 3), "convnet", "bench ConvNet on 32x32x3, about 1 ms"),
    ("calib_10ms", (1, 112, 112, 3), "convnet", "bench ConvNet on 112x112x3, about 10 ms"),
)
QUOTA_PERIOD_US, QUOTA_US = 10000, 9000


# ---------------------------------------------------------------- models
def build_models(cache_dir: Path, log: Callable[[str], None] = print) -> List[BenchModel]:
    """The calibration models as .tflite, .onnx and OpenVINO IR, built once into cache_dir."""
    return [build_keras_model(cache_dir, name, shape, arch, note, log) for name, shape, arch, note in CALIBRATION_MODELS]


# ---------------------------------------------------------------- a CPU quota
class CpuQuota:
    """A cgroup that holds a process to QUOTA_US of every QUOTA_PERIOD_US on one CPU (v1 or v2)."""

    def __init__(self, root: Path = Path("/sys/fs/cgroup")):
        self.path: Optional[Path] = None
        self.procs = ""
        self.problem = ""
        name = f"harness-bench-quota-{os.getpid()}"
        try:
            if (root / "cpu" / "cpu.cfs_quota_us").exists():  # cgroup v1
                path = root / "cpu" / name
                path.mkdir(exist_ok=True)
                (path / "cpu.cfs_period_us").write_text(str(QUOTA_PERIOD_US))
                (path / "cpu.cfs_quota_us").write_text(str(QUOTA_US))
                self.kind = f"cgroup v1 cpu.cfs_period_us {QUOTA_PERIOD_US}, cpu.cfs_quota_us {QUOTA_US}"
            elif (root / "cgroup.controllers").exists():  # cgroup v2
                path = root / name
                path.mkdir(exist_ok=True)
                (path / "cpu.max").write_text(f"{QUOTA_US} {QUOTA_PERIOD_US}")
                self.kind = f"cgroup v2 cpu.max {QUOTA_US} {QUOTA_PERIOD_US}"
            else:
                self.problem = f"no cgroup CPU controller under {root}"
                return
            self.path, self.procs = path, str(path / "cgroup.procs")
        except OSError as exc:
            self.problem = f"cgroups are not writable here ({type(exc).__name__}: {exc})"

    def wrap(self, argv: List[str]) -> List[str]:
        """argv, run inside the cgroup (the shell puts itself in, then execs argv)."""
        return ["sh", "-c", f'echo $$ > "{self.procs}" && exec "$@"', "sh", *argv]

    def close(self) -> None:
        if self.path is not None:
            try:
                self.path.rmdir()
            except OSError:
                pass


# ---------------------------------------------------------------- measuring
@functools.lru_cache(maxsize=None)
def agent_supports(flag: str) -> bool:
    proc = subprocess.run([sys.executable, str(AGENT), "run", "--help"], capture_output=True, text=True, timeout=60)
    return flag in proc.stdout


def run_agent_samples(model: Path, fmt: str, inputs: Path, duration_s: float, workdir: Path,
                      quota: Optional[CpuQuota] = None, est_ms: Optional[float] = None) -> Dict[str, Any]:
    """One agent process timing one model: its samples (ms) and what it recorded beside them."""
    with tempfile.TemporaryDirectory(prefix="calib-", dir=workdir) as tmp:
        result = Path(tmp) / "result.json"
        argv = [sys.executable, str(AGENT), "run", "--model", str(model), "--format", fmt, "--inputs", str(inputs),
                "--result", str(result), "--warmup", "10", "--threads", "1"]
        if agent_supports("--min-duration"):
            argv += ["--min-duration", str(duration_s), "--iterations", "100"]
        if agent_supports("--max-reference-drift"):  # the device speed reference's usual, kept as on a device
            argv += ["--workdir", str(workdir / "device")]
        else:  # an agent without time-based measurement: as many iterations as fill duration_s
            argv += ["--iterations", str(max(100, int(duration_s * 1e3 / (est_ms or 1.0))))]
        if quota is not None:
            argv = quota.wrap(argv)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
        if not result.exists():
            raise BenchError(f"the agent wrote no result (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
        doc = json.loads(result.read_text())
    if doc.get("status") != "ok":
        raise BenchError(f"the agent failed on {model.name} ({fmt}): {doc.get('error_message')}")
    return {"samples": doc.get("latencies_ms") or [], "block_size": doc.get("block_size"),
            "conditions": doc.get("conditions"), "reference": doc.get("reference")}


@dataclass
class CellSeries:
    """Every rerun of one (model, format) cell: reruns -> repeats -> samples (ms)."""

    model: str
    fmt: str
    runs: List[List[List[float]]] = field(default_factory=list)
    quota_runs: List[List[List[float]]] = field(default_factory=list)
    block_sizes: List[Optional[int]] = field(default_factory=list)
    #: per rerun: why the quiet-device guard (default target limits) would call it noisy ('' = quiet)
    noise: List[str] = field(default_factory=list)
    #: per rerun, per repeat: the agent's before/after readings (to judge again with other limits)
    conditions: List[List[Any]] = field(default_factory=list)
    #: per rerun, and per quota rerun: why the device speed reference calls it slower than usual ('' = it does
    #: not; single agent runs, not measured again as the pipeline would); `noise` has these reasons too
    slow: List[str] = field(default_factory=list)
    quota_slow: List[str] = field(default_factory=list)


def measure(models: Sequence[BenchModel], reruns: int, repeats: int, quota_reruns: int, duration_s: float,
            workdir: Path, log: Callable[[str], None] = print,
            limits: QuietLimits = QuietLimits()) -> Tuple[Dict[str, CellSeries], str]:
    """Run every cell `reruns` x `repeats` times, repeats interleaved across cells; then the quota reruns."""
    cells = [(m, f) for m in models for f in FORMATS if f in m.files]
    series = {f"{m.name}/{f}": CellSeries(m.name, f) for m, f in cells}
    inputs = {m.name: write_random_inputs(workdir / f"{m.name}-inputs.npz", m.input_shape) for m in models}
    estimate: Dict[str, float] = {}
    for m, f in cells:  # a short probe: the iteration count for an agent without --min-duration
        estimate[f"{m.name}/{f}"] = float(sorted(run_agent_samples(m.files[f], f, inputs[m.name], 0.05, workdir,
                                                                   est_ms=1.0)["samples"])[50] or 1.0)

    def one_rerun(quota: Optional[CpuQuota]) -> Dict[str, List[List[float]]]:
        got: Dict[str, List[List[float]]] = {k: [] for k in series}
        readings: Dict[str, List[Any]] = {k: [] for k in series}
        slow.update({k: "" for k in series})
        for _ in range(repeats):
            for m, f in cells:  # A B C ... A B C
                key = f"{m.name}/{f}"
                out = run_agent_samples(m.files[f], f, inputs[m.name], duration_s, workdir, quota, estimate[key])
                got[key].append(out["samples"])
                conditions = out.get("conditions") or {}
                reason = slow_device_reason(out.get("reference"), conditions.get("before"), conditions.get("after"),
                                            limits)
                if reason:
                    slow[key] = "; ".join([slow[key]] * bool(slow[key]) + [reason])
                if quota is None:
                    series[key].block_sizes.append(out["block_size"])
                    conditions = out.get("conditions") or {}
                    readings[key].append(conditions)
                    reasons = noise_reasons(conditions.get("before"), conditions.get("after"), limits)
                    noise[key] = "; ".join([noise[key]] * bool(noise[key]) + reasons + ([reason] if reason else []))
        for key, values in readings.items():
            if values:
                series[key].conditions.append(values)
        return got

    noise: Dict[str, str] = {}
    slow: Dict[str, str] = {}
    for r in range(reruns):
        started = time.perf_counter()
        noise.update({k: "" for k in series})
        for key, reps in one_rerun(None).items():
            series[key].runs.append(reps)
            series[key].noise.append(noise[key])
            series[key].slow.append(slow[key])
        log(f"  rerun {r + 1}/{reruns}: {len(cells)} cells x {repeats} repeats in {time.perf_counter() - started:.0f}s")
    def add(got: Dict[str, List[List[float]]]) -> None:
        for key, reps in got.items():
            series[key].quota_runs.append(reps)
            series[key].quota_slow.append(slow[key])

    return series, run_under_quota(quota_reruns, one_rerun, add, log)


def run_under_quota(reruns: int, one_rerun: Callable[[Optional["CpuQuota"]], Any], add: Callable[[Any], None],
                    log: Callable[[str], None] = print, label: str = "quota rerun") -> str:
    """`reruns` calls of one_rerun(quota), each result handed to `add`: the quota's description, or why it was
    skipped ('' for none asked)."""
    if reruns <= 0:
        return ""
    quota = CpuQuota()
    if quota.path is None:
        note = f"slowdown made real with a CPU quota: skipped, {quota.problem}"
        log(f"  {note}")
        return note
    try:
        for r in range(reruns):
            add(one_rerun(quota))
            log(f"  {label} {r + 1}/{reruns} ({quota.kind})")
    finally:
        quota.close()
    return quota.kind


# ---------------------------------------------------------------- analysis (pure)
def run_median(run: Sequence[Sequence[float]]) -> float:
    import numpy as np
    return float(math.exp(np.mean([math.log(float(np.median(r))) for r in run if len(r)])))


def noisy_reruns(series: CellSeries, limits: Optional[QuietLimits] = None) -> List[bool]:
    """Per rerun: did the quiet-device guard flag any of its repeats (with `limits`, from the stored readings)?"""
    n = len(series.runs)
    if limits is not None and len(series.conditions) == n:
        return [any(noise_reasons((c or {}).get("before"), (c or {}).get("after"), limits) for c in rerun)
                for rerun in series.conditions]
    return [bool(x) for x in series.noise] + [False] * (n - len(series.noise))


def analyse(series: CellSeries, slowdown: float = 0.10, min_effect: float = DEFAULT_MIN_EFFECT,
            alpha: float = DEFAULT_ALPHA, limits: Optional[QuietLimits] = None,
            quiet_subset: bool = True) -> Dict[str, Any]:
    """False alarms and detections for one cell's reruns (see the module docstring).

    With quiet_subset, `quiet` holds the same analysis over the reruns the guard passed (history from them
    alone, as the history store keeps only quiet runs): what the gate would judge."""
    import numpy as np
    runs = series.runs
    medians = [run_median(r) for r in runs]
    n = len(runs)
    noisy = noisy_reruns(series, limits)
    false_alarms = caught = caught_no_history = pairs = quiet_pairs = quiet_alarms = quiet_caught = 0
    intervals = []
    for j in range(n):
        history = between_run_spread([m for k, m in enumerate(medians) if k != j])
        slowed = [[x * (1.0 + slowdown) for x in rep] for rep in runs[j]]
        for i in range(j):
            pairs += 1
            alarm = compare_latency(runs[i], runs[j], min_effect=min_effect, alpha=alpha, history=history).regressed
            hit = compare_latency(runs[i], slowed, min_effect=min_effect, alpha=alpha, history=history)
            false_alarms += alarm
            caught += hit.regressed
            if not (noisy[i] or noisy[j]):  # what the gate judges: pairs of quiet reruns
                quiet_pairs += 1
                quiet_alarms += alarm
                quiet_caught += hit.regressed
            if hit.ci_low is not None:
                intervals.append((hit.ci_low, hit.ci_high))
            caught_no_history += compare_latency(runs[i], slowed, min_effect=min_effect, alpha=alpha).regressed
    quota: Dict[str, Any] = {}
    if series.quota_runs:
        history = between_run_spread(medians)
        quota_medians = [run_median(r) for r in series.quota_runs]
        hits = [compare_latency(base, cand, min_effect=min_effect, alpha=alpha, history=history).regressed
                for cand in series.quota_runs for base in runs]
        quota = {"pairs": len(hits), "caught": int(sum(hits)),
                 "median_change": float(np.median(quota_medians) / np.median(medians) - 1.0)}
    logs = np.log(medians) if medians else np.array([])
    repeat_cvs = [float(np.std(np.log([np.median(r) for r in run]), ddof=1)) for run in runs if len(run) > 1]
    blocks = sorted({b for b in series.block_sizes if b})
    return {"model": series.model, "fmt": series.fmt, "reruns": n,
            "repeats": len(runs[0]) if runs else 0,
            "median_ms": float(np.median(medians)) if medians else None,
            "between_run_cv": float(np.std(logs, ddof=1)) if n > 1 else None,
            "between_repeat_cv": float(np.median(repeat_cvs)) if repeat_cvs else None,
            "block_sizes": blocks, "pairs": pairs, "false_alarms": int(false_alarms),
            "noisy_reruns": int(sum(noisy)), "quiet_pairs": quiet_pairs, "quiet_false_alarms": int(quiet_alarms),
            "quiet_caught": int(quiet_caught),
            "quiet": _quiet_subset(series, noisy, slowdown, min_effect, alpha) if quiet_subset else None,
            "noise_reasons": sorted({x.split(" (")[0] for x in series.noise if x})[:3],
            "caught": int(caught), "caught_without_history": int(caught_no_history),
            "ci_width_median": float(np.median([hi - lo for lo, hi in intervals])) if intervals else None,
            "ci_covers_slowdown": (sum(lo <= slowdown <= hi for lo, hi in intervals) / len(intervals))
            if intervals else None,
            "quota": quota}


def _quiet_subset(series: CellSeries, noisy: List[bool], slowdown: float, min_effect: float,
                  alpha: float) -> Optional[Dict[str, Any]]:
    keep = [i for i, flag in enumerate(noisy) if not flag]
    if len(keep) < 2:
        return None
    quiet = CellSeries(series.model, series.fmt, runs=[series.runs[i] for i in keep],
                       quota_runs=series.quota_runs, noise=[""] * len(keep))
    row = analyse(quiet, slowdown, min_effect, alpha, quiet_subset=False)
    return {k: row[k] for k in ("reruns", "between_run_cv", "pairs", "false_alarms", "caught",
                                "caught_without_history", "quota")}


def summarize(series: Dict[str, CellSeries], limits: Optional[QuietLimits] = None) -> Dict[str, Any]:
    """The table rows and the totals, from measured (or reloaded) series."""
    rows = [analyse(s, limits=limits) for s in series.values()]
    quiet = [r["quiet"] for r in rows if r.get("quiet")]
    return {"rows": rows, "false_alarms": sum(r["false_alarms"] for r in rows),
            "pairs": sum(r["pairs"] for r in rows), "caught": sum(r["caught"] for r in rows),
            "quiet_false_alarms": sum(q["false_alarms"] for q in quiet), "quiet_pairs": sum(q["pairs"] for q in quiet),
            "quiet_caught": sum(q["caught"] for q in quiet)}


def reanalyse(path: Path, limits: Optional[QuietLimits] = None) -> Dict[str, Any]:
    """The analysis again from calibration-samples.json.gz (another quiet limit, say), without measuring."""
    import gzip
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        raw = json.load(handle)
    return summarize({k: CellSeries(**v) for k, v in raw.items()}, limits)


def calibration(bench_cache: Path, workdir: Path, reruns: int = 10, repeats: int = 3, quota_reruns: int = 5,
                duration_s: float = 1.0, log: Callable[[str], None] = print,
                limits: QuietLimits = QuietLimits()) -> Dict[str, Any]:
    """Build the models, measure, analyse: bench.json's `calibration` section."""
    models = build_models(bench_cache, log)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    series, quota_note = measure(models, reruns, repeats, quota_reruns, duration_s, workdir, log, limits)
    summary = summarize(series, limits)
    rows = summary["rows"]
    total_pairs = sum(r["pairs"] for r in rows)
    return {"models": [{"name": m.name, "input_shape": list(m.input_shape), "note": m.note} for m in models],
            "settings": {"reruns": reruns, "repeats": repeats, "quota_reruns": quota_reruns,
                         "duration_s": duration_s, "slowdown": 0.10, "min_effect": DEFAULT_MIN_EFFECT,
                         "alpha": DEFAULT_ALPHA, "agent_min_duration": agent_supports("--min-duration")},
            "quota": quota_note, "rows": rows, "wall_s": time.perf_counter() - started,
            "false_alarms": summary["false_alarms"], "pairs": total_pairs, "caught": summary["caught"],
            "quiet_false_alarms": summary["quiet_false_alarms"], "quiet_pairs": summary["quiet_pairs"],
            "quiet_caught": summary["quiet_caught"], "quiet_limits": asdict(limits),
            "raw": {k: asdict(s) for k, s in series.items()}}

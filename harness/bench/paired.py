"""Gate calibration of paired runs: the judge `harness gate` applies to a run made with --baseline-model-file.

Each rerun measures every (model, format) cell as two sides, A (the baseline)
and B (the candidate), in `repeats` rounds of independent agent processes,
B right after A and the rounds interleaved across cells (A1 B1 A1' B1' ... then
round 2), exactly as `harness profile --baseline-model-file` orders a run. Both
sides run the same file, so per rerun:

* noise only: B against A, with harness.judge.regression.compare_latency(paired=True)
  and no history, the paired gate's judge: the noise is the spread of the
  per-round differences of the run itself. A regression called here is a
  false alarm;
* slowdown applied: B's real samples multiplied by 1.10. Missing it is a miss;
* slowdown made real: `quota_reruns` more reruns with every B process in the
  90 % CPU quota of harness.bench.calibration.CpuQuota.

Reruns are independent paired runs, so the counts are over reruns, not over
pairs of reruns as in the history calibration (harness.bench.calibration).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from harness.judge.device_noise import noise_reasons
from harness.schema.pairing import PAIRED_MIN_DURATION_S, PAIRED_REPEATS
from harness.judge.regression import DEFAULT_ALPHA, DEFAULT_MIN_EFFECT, compare_latency
from harness.schema.targets import QuietLimits
from harness.bench.calibration import FORMATS, CpuQuota, build_models, run_agent_samples, run_median, run_under_quota
from harness.bench.models import BenchModel
from harness.bench.vendor import write_random_inputs

#: Repeats = samples per repeat (ms); a side of a rerun = its repeats
Repeats = List[List[float]]


@dataclass
class PairedSeries:
    """Every paired rerun of one (model, format) cell."""

    model: str
    fmt: str
    #: per rerun: (A's repeats, B's repeats)
    runs: List[List[Repeats]] = field(default_factory=list)
    #: per quota rerun: (A's repeats, B's repeats under the quota)
    quota_runs: List[List[Repeats]] = field(default_factory=list)
    #: per rerun: why the quiet-device guard (default limits) would call it noisy ('' = quiet)
    noise: List[str] = field(default_factory=list)


def measure(models: Sequence[BenchModel], reruns: int, repeats: int, quota_reruns: int, duration_s: float,
            workdir: Path, log: Callable[[str], None] = print,
            limits: QuietLimits = QuietLimits()) -> Dict[str, PairedSeries]:
    """reruns (then quota_reruns) x repeats rounds x cells x (A, B), in that nesting."""
    cells = [(m, f) for m in models for f in FORMATS if f in m.files]
    series = {f"{m.name}/{f}": PairedSeries(m.name, f) for m, f in cells}
    inputs = {m.name: write_random_inputs(workdir / f"{m.name}-inputs.npz", m.input_shape) for m in models}

    def one_rerun(quota: Optional[CpuQuota]) -> Dict[str, List[Repeats]]:
        got: Dict[str, List[Repeats]] = {k: [[], []] for k in series}
        noise = {k: [] for k in series}
        for _ in range(repeats):
            for m, f in cells:
                key = f"{m.name}/{f}"
                for side, wrap in ((0, None), (1, quota)):
                    out = run_agent_samples(m.files[f], f, inputs[m.name], duration_s, workdir, wrap)
                    got[key][side].append(out["samples"])
                    conditions = out.get("conditions") or {}
                    noise[key] += noise_reasons(conditions.get("before"), conditions.get("after"), limits)
        if quota is None:
            for key, reasons in noise.items():
                series[key].noise.append("; ".join(sorted(set(r.split(" (")[0] for r in reasons))))
        return got

    for r in range(reruns):
        started = time.perf_counter()
        for key, sides in one_rerun(None).items():
            series[key].runs.append(sides)
        log(f"  paired rerun {r + 1}/{reruns}: {len(cells)} cells x {repeats} rounds x 2 sides in "
            f"{time.perf_counter() - started:.0f}s")
    def add(got: Dict[str, List[Repeats]]) -> None:
        for key, sides in got.items():
            series[key].quota_runs.append(sides)

    run_under_quota(quota_reruns, one_rerun, add, log, "paired quota rerun")
    return series


# ---------------------------------------------------------------- analysis (pure)
def analyse(series: PairedSeries, slowdown: float = 0.10, min_effect: float = DEFAULT_MIN_EFFECT,
            alpha: float = DEFAULT_ALPHA) -> Dict[str, Any]:
    import numpy as np
    false_alarms = caught = 0
    changes, widths, covers = [], [], 0
    for a, b in series.runs:
        noise_only = compare_latency(a, b, min_effect=min_effect, alpha=alpha, paired=True)
        slowed = compare_latency(a, [[x * (1.0 + slowdown) for x in r] for r in b], min_effect=min_effect,
                                 alpha=alpha, paired=True)
        false_alarms += noise_only.regressed
        caught += slowed.regressed
        changes.append(noise_only.relative_change)
        if slowed.ci_low is not None:
            widths.append(slowed.ci_high - slowed.ci_low)
            covers += slowed.ci_low <= slowdown <= slowed.ci_high
    quota: Dict[str, Any] = {}
    if series.quota_runs:
        hits = [compare_latency(a, b, min_effect=min_effect, alpha=alpha, paired=True) for a, b in series.quota_runs]
        quota = {"reruns": len(hits), "caught": int(sum(h.regressed for h in hits)),
                 "median_change": float(np.median([h.relative_change for h in hits]))}
    repeat_cvs = [float(np.std(np.log([np.median(r) for r in side]), ddof=1))
                  for a, b in series.runs for side in (a, b) if len(side) > 1]
    n = len(series.runs)
    return {"model": series.model, "fmt": series.fmt, "reruns": n,
            "repeats": len(series.runs[0][0]) if n else 0,
            "median_ms": float(np.median([run_median(a) for a, _ in series.runs])) if n else None,
            "between_repeat_cv": float(np.median(repeat_cvs)) if repeat_cvs else None,
            "noise_only_change_sd": float(np.std(changes, ddof=1)) if n > 1 else None,
            "false_alarms": int(false_alarms), "caught": int(caught),
            "ci_width_median": float(np.median(widths)) if widths else None,
            "ci_covers_slowdown": covers / len(widths) if widths else None,
            "noisy_reruns": sum(bool(x) for x in series.noise), "quota": quota}


def reanalyse(path: Path) -> Dict[str, Any]:
    """The analysis again from paired-calibration-samples.json.gz, without measuring."""
    import gzip
    import json
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        raw = json.load(handle)
    return summarize({k: PairedSeries(**v) for k, v in raw.items()})


def summarize(series: Dict[str, PairedSeries]) -> Dict[str, Any]:
    rows = [analyse(s) for s in series.values()]
    return {"rows": rows, "reruns": sum(r["reruns"] for r in rows),
            "false_alarms": sum(r["false_alarms"] for r in rows), "caught": sum(r["caught"] for r in rows)}


def paired_calibration(bench_cache: Path, workdir: Path, reruns: int = 10, repeats: int = PAIRED_REPEATS,
                       quota_reruns: int = 2, duration_s: float = PAIRED_MIN_DURATION_S,
                       log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Build the calibration models, measure paired reruns, analyse: bench.json's `paired_calibration`."""
    models = build_models(bench_cache, log)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    series = measure(models, reruns, repeats, quota_reruns, duration_s, workdir, log)
    return {"settings": {"reruns": reruns, "repeats": repeats, "quota_reruns": quota_reruns,
                         "duration_s": duration_s, "slowdown": 0.10, "min_effect": DEFAULT_MIN_EFFECT,
                         "alpha": DEFAULT_ALPHA},
            **summarize(series), "wall_s": time.perf_counter() - started,
            "raw": {k: asdict(s) for k, s in series.items()}}

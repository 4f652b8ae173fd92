"""Regressions of a run against a baseline run. Pure: numpy, scipy and dicts.

Latency is judged on the per-iteration samples, not on summary numbers, so
that noise alone does not fail a build while a real slowdown does. A cell's
latency has regressed only when both hold:

1. significance: a one-sided Mann-Whitney U test says the candidate's samples
   are stochastically larger than the baseline's, p < alpha (default 0.01);
2. size: the estimated slowdown is at least `min_effect` (default 5 %) and
   at least `min_shift_ms` in absolute terms (default 0.02 ms). The estimate
   is the Hodges-Lehmann shift of log latency (the median of all pairwise
   differences log(new) - log(old)), reported as exp(shift) - 1 with its
   Moses 95 % confidence interval.

The rank test makes no normality assumption and shrugs off the odd 10x
outlier (a GC pause, a context switch); the minimum effect keeps a tiny but
"significant" shift from failing a build, which with hundreds of samples
happens for 1 % changes nobody should act on. Under identical distributions
the rule alarms with probability below alpha, whatever the noise. Whether a
real 10 % slowdown is caught depends on noise and sample count: the shift's
standard error is about cv * sqrt(2 / n), and it must be well under 2.5 % to
put a 10 % shift clearly past the 5 % bar; with a coefficient of variation of
10 % that is n >= 100 iterations per cell, with 15 % about 300.

What it cannot see: drift between runs that shifts all samples of a run
together (another tenant on the device, a different CPU governor). Samples
within a run are compared with samples within another, so such drift looks
like a real change. The minimum effect absorbs small drift; the absolute
floor keeps microsecond models (where a 5 us wobble is 20 %) from failing on
timer and scheduling jitter; the device probe in the report shows the
governor and temperature so a reader can tell. Pin the device's CPUs
(taskset, a performance governor) for nightly series. The test follows the
bulk of the distribution; a longer tail alone is held by the gate's
absolute max_latency_p99_ms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .results import OK, finite_or_none as _num

DEFAULT_ALPHA = 0.01
DEFAULT_MIN_EFFECT = 0.05
#: shifts smaller than this (ms) are timer and scheduling jitter, whatever their relative size
DEFAULT_MIN_SHIFT_MS = 0.02
#: fewer samples than this on either side: latency is not judged
MIN_SAMPLES = 10


@dataclass(frozen=True)
class LatencyComparison:
    n_baseline: int
    n_candidate: int
    baseline_median_ms: Optional[float]
    candidate_median_ms: Optional[float]
    #: candidate median / baseline median - 1 (0.10 = 10 % slower)
    relative_change: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]
    p_value: Optional[float]
    regressed: bool
    #: 'mann-whitney' when judged, 'insufficient-samples' when not
    method: str

    def describe(self) -> str:
        if self.method != "mann-whitney":
            return f"not judged: {self.n_baseline} baseline / {self.n_candidate} new samples (need {MIN_SAMPLES})"
        return (f"median {self.baseline_median_ms:.3f} -> {self.candidate_median_ms:.3f} ms "
                f"({self.relative_change:+.1%}, 95% CI {self.ci_low:+.1%}..{self.ci_high:+.1%}, "
                f"p={self.p_value:.2g})")


def _clean(samples: Sequence[float] | np.ndarray | None) -> np.ndarray:
    if samples is None:
        return np.empty(0)
    array = np.asarray(samples, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


#: pairwise differences beyond this many are computed on an evenly spaced subsample
MAX_PAIRS = 1_000_000


def _thin(samples: np.ndarray, keep: int) -> np.ndarray:
    """An evenly spaced subsample of the sorted samples (keeps the distribution's shape)."""
    if len(samples) <= keep:
        return samples
    return np.sort(samples)[np.linspace(0, len(samples) - 1, keep).round().astype(int)]


def log_shift(baseline: np.ndarray, candidate: np.ndarray,
              confidence: float = 0.95) -> tuple[float, float, float]:
    """Hodges-Lehmann shift of log latency with its Moses confidence interval.

    Returns (estimate, low, high) as relative changes: exp(shift) - 1. The
    estimate is the median of all pairwise differences log(c) - log(b), which
    uses every sample (more efficient than comparing two medians) and is as
    robust to outliers as the rank test it belongs to.
    """
    from scipy.stats import norm
    keep = max(MIN_SAMPLES, int(math.sqrt(MAX_PAIRS)))
    b, c = np.log(_thin(baseline, keep)), np.log(_thin(candidate, keep))
    diffs = np.sort((c[:, None] - b[None, :]).ravel())
    n, m, total = len(b), len(c), len(diffs)
    z = norm.ppf(0.5 + confidence / 2.0)
    k = int(math.floor(n * m / 2.0 - z * math.sqrt(n * m * (n + m + 1) / 12.0)))
    k = min(max(k, 0), total - 1)
    estimate = float(np.median(diffs))
    return math.expm1(estimate), math.expm1(float(diffs[k])), math.expm1(float(diffs[total - 1 - k]))


def compare_latency(baseline: Sequence[float] | np.ndarray | None, candidate: Sequence[float] | np.ndarray | None,
                    *, min_effect: float = DEFAULT_MIN_EFFECT, alpha: float = DEFAULT_ALPHA,
                    min_shift_ms: float = DEFAULT_MIN_SHIFT_MS) -> LatencyComparison:
    """Has `candidate` got slower than `baseline`? See the module docstring for the rule."""
    from scipy.stats import mannwhitneyu
    base, cand = _clean(baseline), _clean(candidate)
    base, cand = base[base > 0], cand[cand > 0]
    if len(base) < MIN_SAMPLES or len(cand) < MIN_SAMPLES:
        return LatencyComparison(len(base), len(cand), None, None, None, None, None, None, False,
                                 "insufficient-samples")
    change, ci_low, ci_high = log_shift(base, cand)
    p_value = float(mannwhitneyu(cand, base, alternative="greater").pvalue)
    base_median = float(np.median(base))
    regressed = p_value < alpha and change >= min_effect and base_median * change >= min_shift_ms
    return LatencyComparison(len(base), len(cand), base_median, float(np.median(cand)), change,
                             ci_low, ci_high, p_value, regressed, "mann-whitney")


# ---------------------------------------------------------------- whole runs
@dataclass(frozen=True)
class CellChange:
    """One metric of one cell compared with the baseline run."""

    cell_id: str
    model: str
    variant: str
    format: str
    target: str
    #: 'status', 'latency', 'accuracy' or 'memory'
    metric: str
    baseline: Any
    current: Any
    regressed: bool
    detail: str
    latency: Optional[LatencyComparison] = None




def _key(row: Mapping[str, Any]) -> str:
    return "__".join(str(row.get(c)) for c in ("model", "variant", "format", "target"))


def compare_runs(current_rows: Sequence[Mapping[str, Any]], baseline_rows: Sequence[Mapping[str, Any]],
                 current_samples: Mapping[str, Sequence[float]], baseline_samples: Mapping[str, Sequence[float]],
                 *, min_effect: float = DEFAULT_MIN_EFFECT, alpha: float = DEFAULT_ALPHA,
                 min_shift_ms: float = DEFAULT_MIN_SHIFT_MS, max_accuracy_drop: float = 0.01,
                 max_memory_increase: float = 0.10) -> List[CellChange]:
    """Compare every cell present in both runs; `regressed` marks what got worse.

    Cells are matched by (model, variant, format, target). Samples are keyed
    by cell_id. Accuracy drop is absolute (0.01 = one point); memory increase
    is relative to the baseline's peak RSS.
    """
    base_by_key: Dict[str, Mapping[str, Any]] = {_key(r): r for r in baseline_rows}
    changes: List[CellChange] = []
    for row in sorted(current_rows, key=_key):
        base = base_by_key.get(_key(row))
        if base is None:
            continue
        ident = dict(cell_id=str(row.get("cell_id")), model=str(row.get("model")), variant=str(row.get("variant")),
                     format=str(row.get("format")), target=str(row.get("target")))
        if base.get("status") == OK and row.get("status") != OK:
            changes.append(CellChange(metric="status", baseline=OK, current=row.get("status"), regressed=True,
                                      detail=f"was ok, now {row.get('status')}: {row.get('error_message') or ''}"
                                      .rstrip(": "), **ident))
            continue
        if row.get("status") != OK or base.get("status") != OK:
            continue
        latency = compare_latency(baseline_samples.get(str(base.get("cell_id"))),
                                  current_samples.get(ident["cell_id"]), min_effect=min_effect, alpha=alpha,
                                  min_shift_ms=min_shift_ms)
        changes.append(CellChange(metric="latency", baseline=latency.baseline_median_ms,
                                  current=latency.candidate_median_ms, regressed=latency.regressed,
                                  detail=latency.describe(), latency=latency, **ident))
        acc_base, acc_now = _num(base.get("accuracy")), _num(row.get("accuracy"))
        if acc_base is not None and acc_now is not None:
            drop = acc_base - acc_now
            changes.append(CellChange(metric="accuracy", baseline=acc_base, current=acc_now,
                                      regressed=drop > max_accuracy_drop,
                                      detail=f"accuracy {acc_base:.4f} -> {acc_now:.4f} ({-drop:+.4f})", **ident))
        mem_base, mem_now = _num(base.get("peak_rss_bytes")), _num(row.get("peak_rss_bytes"))
        if mem_base and mem_now is not None:
            rise = mem_now / mem_base - 1.0
            changes.append(CellChange(metric="memory", baseline=mem_base, current=mem_now,
                                      regressed=rise > max_memory_increase,
                                      detail=f"peak RSS {mem_base / 2**20:.1f} -> {mem_now / 2**20:.1f} MB "
                                             f"({rise:+.1%})", **ident))
    return changes


def regressions(changes: Sequence[CellChange]) -> List[CellChange]:
    return [c for c in changes if c.regressed]

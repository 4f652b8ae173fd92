"""Nightly series and their change points. Pure numpy over what the history store holds.

A series is one cell key (model, variant, format, target, runtime configuration: regression.history_key) and
one figure, over the recorded runs in order. Figures: the run-level median, mean and p90 latency (from the
stored samples, as the regression judge computes them), peak memory and the primary figure (accuracy or the
recipe's metric). A cell measured on a noisy device, and every cell of a run the gate could not judge
(gate_status 'not_judged'), stays in the series with its status but is never a value the detector or a
baseline uses.

Change points are found by binary segmentation with a t test (the classic mean-shift detector; Apache Otava
uses the same t test for the significance of its splits): in a segment, the split with the largest
two-sample t statistic (pooled variance) is a change point when its p value, Bonferroni-corrected over the
segment's candidate splits, is below alpha (0.01); the two halves are then searched the same way, until no
segment has a significant split. Each side of a change point has at least two used runs: one odd night is not
a change. Latency and memory are analysed as log values (a shift is a ratio); the primary figure as it is.
Each change point carries the shift between the segment before and the segment after it, with its 95 %
t interval.

Why not E-Divisive means with a permutation test, which this module used first: on the nightly calibration's
real reruns (python -m harness.bench.nightly, 180 series) it found a 10 % shift within 4 quiet nights for 95 %
of series where this finds it within 3, at 0.23 against 0.59 false change points per 100 series-nights (the
target is 1). Two reasons, both at the newest runs where a nightly gate looks: the energy statistic weighs a
split by tau (m - tau) / m, so a split two or three runs from the end loses to random balanced splits of the
same series; and a permutation test of two new runs among m cannot give p below 2 / C(m, 2), 0.015 for
m = 17, so a shift two quiet nights old could never be significant at 0.01.

A regression change point is one whose shift goes the bad way (slower, bigger, less accurate), whose interval
excludes no change, and whose size is at least the policy's threshold for that figure. The nightly gate rule
fails a run when such a change point lies among the newest N runs of any of its series; the baseline a nightly
run is compared with is the segment since the last change point, not one earlier run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from harness.core.numbers import finite_or_none

#: the figures a series can follow; the first three are latency (regression.LATENCY_FIGURES)
TREND_FIGURES = ("median", "mean", "p90", "peak_memory", "primary")
LATENCY_TREND_FIGURES = ("median", "mean", "p90")
#: a rise is a regression for these; for the primary figure (accuracy, the recipe's metric) a fall is
HIGHER_IS_WORSE = {"median": True, "mean": True, "p90": True, "peak_memory": True, "primary": False}
#: analysed on the log scale: the shift is a ratio
LOG_SCALE = {"median": True, "mean": True, "p90": True, "peak_memory": True, "primary": False}
UNITS = {"median": "ms", "mean": "ms", "p90": "ms", "peak_memory": "MiB", "primary": ""}
#: significance of each segment's best split, after the Bonferroni correction over its candidate splits
DEFAULT_CHANGE_ALPHA = 0.01
#: the fewest runs on each side of a change point: one odd night is not a change
MIN_SEGMENT_RUNS = 2
#: only the newest runs of a series are analysed (cost grows with the square of the length)
MAX_SERIES_RUNS = 120
#: point statuses: a value the detector uses, or why not
POINT_OK, POINT_NOISY, POINT_NOT_JUDGED = "ok", "noisy", "not_judged"
#: shift thresholds for a regression change point where the policy names none
DEFAULT_THRESHOLDS = {"median": 0.05, "mean": 0.05, "p90": 0.05, "peak_memory": 0.05, "primary": 0.01}


# ---------------------------------------------------------------- binary segmentation
def _best_split(x: np.ndarray, min_size: int) -> Tuple[int, float]:
    """The split of one segment with the largest two-sample t statistic (pooled variance), and its p value:
    two-sided, Bonferroni-corrected over the segment's candidate splits. Every split's t from prefix sums, O(m)."""
    from scipy.special import stdtr  # Student's t distribution, without importing scipy.stats (most of a second)
    m = len(x)
    tau = np.arange(min_size, m - min_size + 1)
    total, squares = np.concatenate([[0.0], np.cumsum(x)]), np.concatenate([[0.0], np.cumsum(x * x)])
    left_n, right_n = tau, m - tau
    left_mean, right_mean = total[tau] / left_n, (total[m] - total[tau]) / right_n
    # the sums of squares about each side's mean (clipped: rounding can make a constant side's slightly negative)
    spread = np.maximum((squares[tau] - left_n * left_mean ** 2) + (squares[m] - squares[tau] - right_n * right_mean ** 2),
                        0.0)
    pooled = np.maximum(spread / (m - 2), np.finfo(np.float64).tiny)
    t = np.abs(right_mean - left_mean) / np.sqrt(pooled * (1.0 / left_n + 1.0 / right_n))
    best = int(np.argmax(t))
    return int(tau[best]), min(1.0, float(2.0 * stdtr(m - 2, -t[best])) * len(tau))


def segment_series(values: Sequence[float], *, alpha: float = DEFAULT_CHANGE_ALPHA,
                   min_size: int = MIN_SEGMENT_RUNS) -> List[Tuple[int, float]]:
    """Change points of a series by binary segmentation with a t test: [(index, p)], index the first value of
    the new segment, in order. Deterministic: the same series gives the same answer."""
    x = np.asarray(values, dtype=np.float64)
    found: List[Tuple[int, float]] = []
    segments = [(0, len(x))]
    best_of: Dict[Tuple[int, int], Tuple[int, float]] = {}
    while True:
        candidates = []
        for a, b in segments:
            if b - a < 2 * min_size or np.ptp(x[a:b]) == 0:
                continue
            if (a, b) not in best_of:
                best_of[(a, b)] = _best_split(x[a:b], min_size)
            tau, p = best_of[(a, b)]
            candidates.append((p, a, b, tau))
        if not candidates:
            break
        p, a, b, tau = min(candidates)
        if p > alpha:
            break
        found.append((a + tau, p))
        segments.remove((a, b))
        segments += [(a, a + tau), (a + tau, b)]
    return sorted(found)


# ---------------------------------------------------------------- series
@dataclass(frozen=True)
class TrendPoint:
    run_id: str
    value: Optional[float]
    #: 'ok' (used), 'noisy' (measured on a busy device) or 'not_judged' (the gate could not judge the run)
    status: str = POINT_OK
    #: the run's recorded gate verdict (History: 'passed', 'failed', 'not_judged' or None)
    gate_status: Optional[str] = None


@dataclass(frozen=True)
class ChangePoint:
    """A persistent shift in one series."""

    key: Tuple[str, ...]
    figure: str
    #: the first run of the new segment
    run_id: str
    #: after / before - 1 for log-scale figures; after - before for the primary figure
    shift: float
    ci_low: float
    ci_high: float
    p_value: float
    before_runs: Tuple[str, ...]
    after_runs: Tuple[str, ...]
    before_value: float
    after_value: float
    #: the shift goes the bad way, its interval excludes no change, and it is at least the threshold
    regression: bool
    #: position among the series' used values (the first run of the new segment)
    index: int = 0

    def describe(self) -> str:
        unit = UNITS[self.figure]
        relative = LOG_SCALE[self.figure]
        fmt = (lambda v: f"{v:+.1%}") if relative else (lambda v: f"{v:+.4f}")
        kind = "REGRESSION" if self.regression else ("improvement" if self._better() else "change")
        return (f"{kind}: {self.figure} {self.before_value:.4g} -> {self.after_value:.4g}{(' ' + unit) if unit else ''}"
                f" ({fmt(self.shift)}, 95% CI {fmt(self.ci_low)}..{fmt(self.ci_high)}, p={self.p_value:.3f}) "
                f"at run {self.run_id}; before: {len(self.before_runs)} runs "
                f"({self.before_runs[0]}..{self.before_runs[-1]}), after: {len(self.after_runs)} runs "
                f"({self.after_runs[0]}..{self.after_runs[-1]})")

    def _better(self) -> bool:
        return (self.shift < 0) == HIGHER_IS_WORSE[self.figure]


@dataclass(frozen=True)
class Trend:
    """One series: a cell key and a figure over the recorded runs, oldest first."""

    key: Tuple[str, ...]
    figure: str
    points: Tuple[TrendPoint, ...]
    change_points: Tuple[ChangePoint, ...] = field(default=())

    @property
    def used(self) -> List[TrendPoint]:
        return [p for p in self.points if p.status == POINT_OK and p.value is not None]

    @property
    def label(self) -> str:
        return series_label(self.key, self.figure)


def series_label(key: Sequence[str], figure: str) -> str:
    """'model / variant / format on target [threads 1, options]: figure'."""
    model, variant, fmt, target = key[:4]
    config = [f"threads {key[4]}" if len(key) > 4 and key[4] else "", key[5] if len(key) > 5 and key[5] else ""]
    config_text = ", ".join(c for c in config if c)
    return f"{model} / {variant} / {fmt} on {target}{f' [{config_text}]' if config_text else ''}: {figure}"


def cell_figure(row: Mapping[str, Any], samples: Any, figure: str) -> Optional[float]:
    """One cell's value of a trend figure: latency from its samples (else the row's column), peak memory in MiB,
    the primary figure."""
    from harness.judge.regression import FIGURE_COLUMNS, run_level_figure
    if figure in LATENCY_TREND_FIGURES:
        value = run_level_figure(samples, figure) if samples is not None else None
        if value is None:
            value = finite_or_none(row.get(FIGURE_COLUMNS[figure]))
        return value if value is not None and value > 0 else None
    if figure == "peak_memory":
        peak = finite_or_none(row.get("peak_rss_bytes"))
        return peak / 2 ** 20 if peak else None
    if figure == "primary":
        return finite_or_none(row.get("primary_value"))
    raise ValueError(f"unknown trend figure {figure!r}; known: {', '.join(TREND_FIGURES)}")


def latency_figures(row: Mapping[str, Any], samples: Any) -> Dict[str, Optional[float]]:
    """One cell's run-level latency figures (cell_figure): what the history store keeps beside its samples, so a
    series is read from three numbers per cell instead of recomputed from every sample on every read."""
    return {figure: cell_figure(row, samples, figure) for figure in LATENCY_TREND_FIGURES}


def _is_noisy(row: Mapping[str, Any]) -> bool:
    return str(row.get("noisy")).strip().lower() in ("true", "1", "1.0", "yes")


def build_trends(cells: Iterable[Mapping[str, Any]], figures: Sequence[str] = TREND_FIGURES,
                 keys: Optional[Iterable[Tuple[str, ...]]] = None) -> List[Trend]:
    """Series from the store's cells (History.trend_cells, oldest first, plus any run appended), one per cell key
    and figure; only `keys` when given. The newest MAX_SERIES_RUNS runs of each. A cell with `figures`
    (History.trend_figure_cells: its latency_figures as stored) is read from them, else from its samples."""
    from harness.judge.regression import history_key
    wanted = set(keys) if keys is not None else None
    points: Dict[Tuple[Tuple[str, ...], str], List[TrendPoint]] = {}
    for cell in cells:
        row = cell["row"]
        key = tuple(history_key(row))
        if wanted is not None and key not in wanted:
            continue
        status = POINT_NOT_JUDGED if cell.get("gate_status") == "not_judged" else \
            POINT_NOISY if _is_noisy(row) else POINT_OK
        stored = cell.get("figures") or {}
        for figure in figures:
            value = stored[figure] if figure in stored else cell_figure(row, cell.get("samples"), figure)
            if value is None and figure in ("primary", "peak_memory"):
                continue  # a figure this cell does not have (no metric, no memory reading)
            points.setdefault((key, figure), []).append(
                TrendPoint(str(cell["run_id"]), value, status, cell.get("gate_status")))
    return [Trend(key, figure, tuple(pts[-MAX_SERIES_RUNS:])) for (key, figure), pts in sorted(points.items())]


def _shift(before: np.ndarray, after: np.ndarray, log_scale: bool) -> Tuple[float, float, float]:
    """The shift after vs before and its 95 % t interval with the pooled variance (the test's own model: a
    shift moves the level, not the noise; two nights after a change have no spread of their own worth a
    Welch interval), on the analysis scale, back-transformed."""
    from scipy.special import stdtrit  # Student's t quantile, without importing scipy.stats (most of a second)
    d = float(after.mean() - before.mean())
    df = len(before) + len(after) - 2
    spread = float(((before - before.mean()) ** 2).sum() + ((after - after.mean()) ** 2).sum())
    half = float(stdtrit(df, 0.975)) * math.sqrt(spread / df * (1.0 / len(before) + 1.0 / len(after))) \
        if df > 0 else 0.0
    if log_scale:
        return math.expm1(d), math.expm1(d - half), math.expm1(d + half)
    return d, d - half, d + half


def find_change_points(trend: Trend, *, alpha: float = DEFAULT_CHANGE_ALPHA,
                       thresholds: Optional[Mapping[str, float]] = None) -> Trend:
    """The trend with its change points (binary segmentation over the values it uses)."""
    used = trend.used
    if len(used) < 2 * MIN_SEGMENT_RUNS:
        return trend
    log_scale = LOG_SCALE[trend.figure]
    raw = np.array([p.value for p in used], dtype=np.float64)
    values = np.log(raw) if log_scale else raw
    found = segment_series(values, alpha=alpha)
    bounds = [0] + [i for i, _ in found] + [len(values)]
    threshold = (thresholds or {}).get(trend.figure, DEFAULT_THRESHOLDS[trend.figure])
    changes = []
    for n, (index, p) in enumerate(found):
        before, after = slice(bounds[n], index), slice(index, bounds[n + 2])
        shift, low, high = _shift(values[before], values[after], log_scale)
        worse = HIGHER_IS_WORSE[trend.figure]
        regression = (low > 0 and shift >= threshold) if worse else (high < 0 and -shift >= threshold)
        centre = (lambda v: float(np.exp(v.mean()))) if log_scale else (lambda v: float(v.mean()))
        changes.append(ChangePoint(
            trend.key, trend.figure, used[index].run_id, shift, low, high, p,
            tuple(q.run_id for q in used[before]), tuple(q.run_id for q in used[after]),
            centre(values[before]), centre(values[after]), regression, index))
    return Trend(trend.key, trend.figure, trend.points, tuple(changes))


def newest_regressions(trend: Trend, window_runs: int) -> List[ChangePoint]:
    """Regression change points among the newest `window_runs` used runs of the series."""
    n = len(trend.used)
    return [c for c in trend.change_points if c.regression and c.index >= n - window_runs]


def last_segment(trend: Trend) -> List[TrendPoint]:
    """The used points since the series' last change point: what a new run is judged against.

    Runs whose gate failed are left out of it while others remain: a slowdown's first nights are not yet a
    change point, and must not drag the baseline towards themselves. When every run since the change point
    failed (the team lives with the new level), they are the baseline.
    """
    used = trend.used
    start = trend.change_points[-1].index if trend.change_points else 0
    segment = used[start:]
    passing = [p for p in segment if p.gate_status != "failed"]
    return passing or segment

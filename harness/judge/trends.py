"""Nightly series and their change points. Pure numpy over what the history store holds.

A series is one cell key (model, variant, format, target, runtime configuration: regression.history_key) and
one figure, over the recorded runs in order. Figures: the run-level median, mean and p90 latency (from the
stored samples, as the regression judge computes them), peak memory, the primary figure (accuracy or the
recipe's metric) and energy per inference (where the device's sensor measured it, docs/energy.md). A cell
measured on a noisy device, and every cell of a run the gate could not judge (gate_status 'not_judged'), stays
in the series with its status but is never a value the detector or a baseline uses.

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
TREND_FIGURES = ("median", "mean", "p90", "peak_memory", "primary", "energy")
LATENCY_TREND_FIGURES = ("median", "mean", "p90")
#: a rise is a regression for these; for the primary figure (accuracy, the recipe's metric) a fall is
HIGHER_IS_WORSE = {"median": True, "mean": True, "p90": True, "peak_memory": True, "primary": False, "energy": True}
#: analysed on the log scale: the shift is a ratio
LOG_SCALE = {"median": True, "mean": True, "p90": True, "peak_memory": True, "primary": False, "energy": True}
UNITS = {"median": "ms", "mean": "ms", "p90": "ms", "peak_memory": "MiB", "primary": "", "energy": "mJ"}
#: significance of each segment's best split, after the Bonferroni correction over its candidate splits
DEFAULT_CHANGE_ALPHA = 0.01
#: the fewest runs on each side of a change point: one odd night is not a change
MIN_SEGMENT_RUNS = 2
#: only the newest runs of a series are analysed (cost grows with the square of the length)
MAX_SERIES_RUNS = 120
#: point statuses: a value the detector uses, or why not
POINT_OK, POINT_NOISY, POINT_NOT_JUDGED = "ok", "noisy", "not_judged"
#: the trimmed t of a split: deviations from a side's median are clipped at this many robust SDs, on sides of at
#: least TRIM_MIN_SIDE runs (a smaller side has no median to trust)
TRIM_SIGMAS = 4.0
TRIM_MIN_SIDE = 8
#: the robust SD is at least this share of the side's plain SD (one odd night among 8 still lies far past it)
TRIM_SD_FLOOR = 0.5
#: the trimmed test's Bonferroni-corrected p is multiplied by this before it is set against the t test's, so the
#: pair alarms on quiet series no more often than the t test alone (measured: tests/test_robust_split.py)
TRIMMED_TEST_PENALTY = 1.5
#: shift thresholds for a regression change point where the policy names none
#: energy's is wider: a 20 Hz sensor over about a second of timing is noisier than a latency median (docs/energy.md)
DEFAULT_THRESHOLDS = {"median": 0.05, "mean": 0.05, "p90": 0.05, "peak_memory": 0.05, "primary": 0.01, "energy": 0.20}


# ---------------------------------------------------------------- binary segmentation
def _trimmed_split_t(x: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Each split's two-sample t with the pooled variance, but on a side of at least TRIM_MIN_SIDE runs each
    value's deviation from the side's median is clipped at TRIM_SIGMAS robust standard deviations (1.4826 MAD)
    before the side's mean and sum of squares are taken (a Huber-type trimmed mean and winsorized variance). One
    odd night among many then counts as a night TRIM_SIGMAS off, not as its full distance, in the variance of
    every split. A side with fewer runs has no median to trust and is taken as it is (the plain t test's mean and
    sum of squares). All splits at once: a (splits x runs) matrix, NaN outside the side."""
    m = len(x)
    left = np.arange(m)[None, :] < tau[:, None]

    def side(mask: np.ndarray, n: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        values = np.where(mask, x[None, :], np.nan)
        median = np.nanmedian(values, axis=1)
        # the robust SD, floored at half the side's plain SD: a side of a few distinct values (nights that
        # repeat a level) has a MAD near 0, and clipping at it would shrink the real spread, not an odd night
        mad = np.maximum(1.4826 * np.nanmedian(np.abs(values - median[:, None]), axis=1),
                         TRIM_SD_FLOOR * np.nanstd(values, axis=1))
        trimmed = (n >= TRIM_MIN_SIDE) & (mad > 0)
        centre = np.where(trimmed, median, np.nanmean(values, axis=1))
        limit = np.where(trimmed, TRIM_SIGMAS * mad, np.inf)
        residual = np.clip(values - centre[:, None], -limit[:, None], limit[:, None])
        mean_residual = np.nanmean(residual, axis=1)
        squares = np.nansum((residual - mean_residual[:, None]) ** 2, axis=1)
        return centre + mean_residual, squares

    left_n, right_n = tau.astype(np.float64), (m - tau).astype(np.float64)
    left_loc, left_ss = side(left, left_n)
    right_loc, right_ss = side(~left, right_n)
    pooled = np.maximum((left_ss + right_ss) / (m - 2), np.finfo(np.float64).tiny)
    return np.abs(right_loc - left_loc) / np.sqrt(pooled * (1.0 / left_n + 1.0 / right_n))


def _best_split(x: np.ndarray, min_size: int, robust: bool = True) -> Tuple[int, float]:
    """The split of one segment with the largest two-sample t statistic (pooled variance), and its p value:
    two-sided, Bonferroni-corrected over the segment's candidate splits. Every split's t from prefix sums, O(m).

    With `robust` (the default), the best split's significance is also asked of a trimmed t (_trimmed_split_t),
    and the split's p value is the smaller of the two corrected ones, the trimmed test's first multiplied by
    TRIMMED_TEST_PENALTY so the pair alarms on quiet series no more often than the t test alone (calibrated by
    simulation: tests/test_robust_split.py). One odd night (a CPU quota, another tenant) inflates the pooled
    variance of every split of its segment and can hide a real step from the t test; the trimmed t counts it
    as a night TRIM_SIGMAS robust SDs off."""
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
    p_t = min(1.0, float(2.0 * stdtr(m - 2, -t[best])) * len(tau))
    if not robust:
        return int(tau[best]), p_t
    # The split stays where the t statistic puts it: trimming inside a side would clip the first runs of a new
    # level that the split put on the wrong side, and find the step a run early. Only its significance is
    # asked of the trimmed t too.
    trimmed = float(_trimmed_split_t(x, tau[best:best + 1])[0])
    p_trimmed = min(1.0, float(2.0 * stdtr(m - 2, -trimmed)) * len(tau) * TRIMMED_TEST_PENALTY)
    return int(tau[best]), min(p_t, p_trimmed)


def segment_series(values: Sequence[float], *, alpha: float = DEFAULT_CHANGE_ALPHA,
                   min_size: int = MIN_SEGMENT_RUNS, robust: bool = True) -> List[Tuple[int, float]]:
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
                best_of[(a, b)] = _best_split(x[a:b], min_size, robust)
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
    the primary figure, energy per inference in mJ (None where it was not measured)."""
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
    if figure == "energy":
        energy = finite_or_none(row.get("energy_mj_per_inference"))
        return energy if energy is not None and energy > 0 else None
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
            if value is None and figure in ("primary", "peak_memory", "energy"):
                continue  # a figure this cell does not have (no metric, no memory or power reading)
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


# ---------------------------------------------------------------- detectability
#: detectability: the shift the nightly rule finds within this many nights, with this probability
DETECT_NIGHTS = 3
DETECT_POWER = 0.8
#: a series needs this many quiet runs for its spread to be measured
DETECT_MIN_RUNS = 4


def detectable_shift(spread: float, runs_before: int, *, alpha: float = DEFAULT_CHANGE_ALPHA,
                     nights: int = DETECT_NIGHTS, power: float = DETECT_POWER, log_scale: bool = True) -> float:
    """The smallest shift the change-point rule finds `nights` runs after it happened, with probability `power`,
    in a series of `runs_before` quiet runs whose run-to-run spread is `spread` (SD of log values for latency):
    the shift d where the split's t statistic, d / (spread sqrt(1/runs_before + 1/nights)), reaches the
    Bonferroni-corrected critical value of the segment's splits plus the `power` quantile of t (the normal
    approximation of the noncentral t). Relative (0.05 = 5 %) for log-scale figures."""
    from scipy.special import stdtrit
    m = runs_before + nights
    splits = max(m - 2 * MIN_SEGMENT_RUNS + 1, 1)
    df = max(m - 2, 1)
    critical = float(stdtrit(df, 1.0 - alpha / (2.0 * splits))) + float(stdtrit(df, power))
    d = spread * math.sqrt(1.0 / runs_before + 1.0 / nights) * critical
    return math.expm1(d) if log_scale else d


def series_spread(values: Sequence[float], log_scale: bool = True) -> Optional[float]:
    """The run-to-run spread of a quiet series: from successive differences (regression.between_run_spread), so
    a past step counts once; None under DETECT_MIN_RUNS values."""
    from harness.judge.regression import between_run_spread
    if log_scale:
        spread = between_run_spread(list(values))
        return None if spread is None else spread.cv
    x = np.asarray(values, dtype=np.float64)
    if len(x) < DETECT_MIN_RUNS:
        return None
    return float(math.sqrt(np.mean(np.diff(x) ** 2) / 2.0))


def trend_detectability(trend: Trend, *, alpha: float = DEFAULT_CHANGE_ALPHA) -> Optional[float]:
    """detectable_shift of a series from its own quiet history: the used runs since its last change point."""
    values = [p.value for p in last_segment(trend) if p.value is not None]
    spread = series_spread(values, LOG_SCALE[trend.figure])
    if spread is None:
        return None
    return detectable_shift(spread, len(values), alpha=alpha, log_scale=LOG_SCALE[trend.figure])


def describe_detectability(by_figure: Mapping[str, Optional[float]]) -> str:
    """'detectable: median 3 %, mean 9 %, p90 14 %' (unknown: too few quiet runs)."""
    parts = [f"{f} {'?' if v is None else f'{v:.0%}'}" for f, v in by_figure.items()]
    return f"detectable within {DETECT_NIGHTS} nights: {', '.join(parts)}"


def judgeable_counts(detectability: Mapping[Tuple[str, ...], Mapping[str, Optional[float]]],
                     thresholds: Mapping[str, float]) -> Dict[str, Tuple[int, int]]:
    """By figure: (series whose detectable shift is within the figure's threshold, series with a known one)."""
    counts: Dict[str, Tuple[int, int]] = {}
    for by_figure in detectability.values():
        for figure, value in by_figure.items():
            if value is None:
                continue
            ok, known = counts.get(figure, (0, 0))
            counts[figure] = (ok + int(value <= thresholds.get(figure, DEFAULT_THRESHOLDS.get(figure, 0.05))),
                              known + 1)
    return counts


# ---------------------------------------------------------------- device-wide shifts
#: a device change: at least this share of a device's series, and at least DEVICE_MIN_SERIES of them, of at
#: least DEVICE_MIN_MODELS models (one model's cells moving together is that model's change: its build)
DEVICE_SHARE = 0.6
DEVICE_MIN_SERIES = 3
DEVICE_MIN_MODELS = 2


@dataclass(frozen=True)
class DeviceShift:
    """Most series of one device changed at the same run: the device moved, not N models."""

    target: str
    run_id: str
    #: the median shift of the series that moved (after / before - 1)
    shift: float
    moved: int
    of: int
    models: int

    def describe(self) -> str:
        who = "every cell" if self.moved == self.of else f"{self.moved} of {self.of} cells"
        return (f"device change: {who} on {self.target} moved {self.shift:+.0%} at run {self.run_id} "
                f"({self.models} models): one change of the device, not {self.moved} model regressions")


def device_shifts(trends: Sequence[Trend], figure: str = "median", *, share: float = DEVICE_SHARE,
                  min_series: int = DEVICE_MIN_SERIES) -> List[DeviceShift]:
    """Runs at which most series of one device (target) have a change point of `figure` in the same direction.
    A series counts towards a run's share when it used that run."""
    found: List[DeviceShift] = []
    series = [t for t in trends if t.figure == figure]
    for target in sorted({t.key[3] for t in series}):
        mine = [t for t in series if t.key[3] == target]
        runs = sorted({c.run_id for t in mine for c in t.change_points})
        for run_id in runs:
            active = [t for t in mine if any(p.run_id == run_id for p in t.used)]
            for sign in (1, -1):
                moved = [(t, c) for t in active for c in t.change_points if c.run_id == run_id and c.shift * sign > 0]
                models = len({t.key[0] for t, _ in moved})
                if len(moved) >= max(min_series, math.ceil(share * len(active))) and models >= DEVICE_MIN_MODELS:
                    shift = math.expm1(float(np.median([math.log1p(c.shift) for _, c in moved]))) \
                        if LOG_SCALE[figure] else float(np.median([c.shift for _, c in moved]))
                    found.append(DeviceShift(target, run_id, shift, len(moved), len(active), models))
    return found

"""Regressions of a run against a baseline run. Pure: numpy, scipy and dicts.

A latency change is judged on three kinds of noise, each measured, never assumed
where it can be measured:

1. within-run: the per-iteration (or per-block) samples of each repeat give the
   sampling error of that repeat's median, (pi/2) * s^2 / n on log latency,
   with s the MAD-scaled spread of the log samples;
2. between-repeat: a cell measured in `repeats` independent agent runs
   (interleaved across the device's cells) gives one median per repeat; their
   spread is the process-to-process noise (memory layout, frequency, the other
   tenants) that no number of iterations inside one process averages away;
3. between-run: the history store's medians of the same cell key (model,
   variant, format, target, runtime config) over earlier runs, whose robust
   spread is the drift a nightly series really has (`between_run_spread`).

The run-level figure is the mean over repeats of log(median). Its variance is
the largest of the three sources that applies (within / k, between-repeat / k,
between-run); when a run has a single repeat and the history fewer than
MIN_HISTORY_RUNS runs, nothing measures the between-run part and
`assumed_run_cv` (3 % by default, near the 2.5 % seen between reruns of
EfficientNet-Lite0) stands in for it, with few degrees of freedom, and the
description says so. The change d = m_new - m_base has standard error
se = sqrt(var_base + var_new), and a cell has regressed when

* a one-sided t test on d / se (degrees of freedom of the dominant source)
  gives p < alpha (default 0.01), and
* the within-run samples agree: a one-sided Mann-Whitney U test of all new
  against all baseline samples gives p < alpha, and
* the estimated slowdown exp(d) - 1 is at least `min_effect` (relative,
  default 5 %). There is no absolute floor: a 20 us model is judged like a
  10 ms one, against its own measured noise.

A paired run (harness.schema.pairing: the baseline file measured in the same run,
repeat k of each side back to back) is judged on the per-round differences
log(median new_k) - log(median base_k) instead: their spread, with k - 1
degrees of freedom, is the noise, since drift shared by a round cancels in
its difference; no history enters (`paired=True`).

Every change carries its 95 % confidence interval exp(d +- t * se) - 1.
Under no change the rule alarms with probability below alpha as long as the
noise estimates are honest; how often a real 10 % slowdown is caught depends
on the noise, which is why `make bench` calibrates it on real reruns.
Latency is judged on three figures of the distribution, each with its own
test and interval (`figure`): the median (the bulk), the mean (what throughput
sees: stalls that hit a fraction of inferences move it, not the median) and the
90th percentile (the tail users feel as jank). The run-level figure, the noise
sources and the t test are the same for each; what differs is the per-repeat
statistic and its within-run sampling error:

* median: log(median), variance (pi/2) s^2 / n as above;
* mean: log(mean), variance var(x) / (n mean^2) (delta method);
* p90: log of the Harrell-Davis estimate of the 0.9 quantile (a weighted sum
  of all order statistics, steadier than one order statistic), with the
  variance read off the distribution-free order-statistic 95 % interval of the
  quantile (binomial ranks n q -+ 1.96 sqrt(n q (1 - q))).

The within-run confirmation is a Mann-Whitney U test for the median (a rank
test of location) and a bootstrap for the mean and p90 (resampling each side's
samples, the one-sided p is the share of replicates where the new figure is
not above the baseline's), since a rank test of location says nothing about a
tail.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from harness.schema.results import OK
from harness.core.numbers import finite_or_none

DEFAULT_ALPHA = 0.01
DEFAULT_MIN_EFFECT = 0.05
#: kept for callers that set an absolute floor explicitly; the default is none
DEFAULT_MIN_SHIFT_MS = 0.0
#: fewer samples than this in a repeat: the repeat is not used; none left: latency is not judged
MIN_SAMPLES = 10
#: the history store's spread is used from this many earlier runs of the cell key on
MIN_HISTORY_RUNS = 4
#: at most this many of the newest runs make the history spread
MAX_HISTORY_RUNS = 30
#: a difference between successive runs beyond this many robust standard deviations is a step (a past
#: regression or upgrade), not noise; only trimmed in series of at least STEP_TRIM_MIN_DIFFS differences
STEP_TRIM_SIGMAS = 5.0
STEP_TRIM_MIN_DIFFS = 9
#: a paired round whose difference is beyond this many robust standard deviations of the median difference is
#: left out (one side's process in a pathological mode); only in runs of at least ROUND_TRIM_MIN rounds
ROUND_TRIM_SIGMAS = 5.0
ROUND_TRIM_MIN = 6
#: between-run spread of log latency assumed when nothing measures it (one repeat, no history)
DEFAULT_ASSUMED_RUN_CV = 0.03
#: how much that assumption is worth, in degrees of freedom
ASSUMED_RUN_DF = 4
#: the latency figures judged; a policy's latency_figures names a subset (default: all)
LATENCY_FIGURES = ("median", "mean", "p90")
#: the tail quantile of the 'p90' figure
TAIL_QUANTILE = 0.90
#: bootstrap replicates of the within-run confirmation for the mean and p90 (seeded: the same data, the same p)
BOOTSTRAP_REPLICATES = 400
#: the results-table column that holds each figure of one run, where no samples were kept
FIGURE_COLUMNS = {"median": "latency_p50_ms", "mean": "latency_mean_ms", "p90": "latency_p90_ms"}
#: latency samples: one array (one repeat) or one array per repeat
Samples = Union[Sequence[float], np.ndarray, Sequence[Sequence[float]], None]


@dataclass(frozen=True)
class RunSpread:
    """Between-run spread of one cell key's log median, from the history store."""

    #: standard deviation of log(median) between runs (about the coefficient of variation)
    cv: float
    #: runs it was estimated from
    runs: int
    #: degrees of freedom of the estimate
    df: int


@dataclass(frozen=True)
class CellBaseline:
    """The baseline of one cell key: its newest passing measurement, in whichever run it was recorded
    (History.cell_baselines)."""

    run_id: str
    #: the baseline cell's result row, as recorded
    row: Mapping[str, Any]
    #: its latency samples (one array, or one per repeat); None where none were kept
    samples: Any
    #: the newest passing measurement of this key that measured energy per inference, as (run id, mJ): the
    #: baseline's own run where it did, an earlier one where its sensor gave no figure; None: never measured
    energy: Optional[Tuple[str, float]] = None


@dataclass(frozen=True)
class LatencyComparison:
    n_baseline: int
    n_candidate: int
    baseline_median_ms: Optional[float]
    candidate_median_ms: Optional[float]
    #: exp(mean log repeat median, new - baseline) - 1 (0.10 = 10 % slower)
    relative_change: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]
    #: one-sided p of the run-level t test (the decisive one)
    p_value: Optional[float]
    regressed: bool
    #: 'noise-aware' when judged, 'insufficient-samples' when not
    method: str
    #: one-sided Mann-Whitney U p of all new against all baseline samples
    p_within: Optional[float] = None
    repeats_baseline: int = 0
    repeats_candidate: int = 0
    #: standard error of the log change and its degrees of freedom
    se: Optional[float] = None
    df: Optional[float] = None
    #: which noise source set the standard error: 'within-run', 'between-repeat', 'history' or 'assumed'
    noise_source: str = ""
    #: that source's spread, as a CV of the run-level figure's inputs
    noise_cv: Optional[float] = None
    #: what the judge knew, in words
    noise_note: str = ""
    #: which figure of the distribution was compared: 'median', 'mean' or 'p90' (LATENCY_FIGURES)
    figure: str = "median"

    @property
    def judged(self) -> bool:
        return self.method == "noise-aware"

    def describe(self) -> str:
        if not self.judged:
            return (f"{self.figure} not judged: {self.n_baseline} baseline / {self.n_candidate} new samples "
                    f"(need {MIN_SAMPLES})")
        return (f"{self.figure} {self.baseline_median_ms:.4g} -> {self.candidate_median_ms:.4g} ms "
                f"({self.relative_change:+.1%}, 95% CI {self.ci_low:+.1%}..{self.ci_high:+.1%}, "
                f"p={self.p_value:.2g}; {self.noise_note})")


def _clean(samples: Sequence[float] | np.ndarray | None) -> np.ndarray:
    if samples is None:
        return np.empty(0)
    array = np.asarray(samples, dtype=np.float64).ravel()
    return array[np.isfinite(array) & (array > 0)]


def as_repeats(samples: Samples) -> List[np.ndarray]:
    """One clean array per repeat: a flat sequence is one repeat, a sequence of sequences is one per repeat."""
    if samples is None:
        return []
    if isinstance(samples, np.ndarray):
        if samples.ndim <= 1:
            return [_clean(samples)]
        return [_clean(r) for r in samples]
    items = list(samples)
    if items and all(isinstance(x, (list, tuple, np.ndarray)) for x in items):
        return [_clean(r) for r in items]
    return [_clean(items)]


def flat_samples(samples: Samples) -> np.ndarray:
    """Every sample of every repeat in one array."""
    parts = as_repeats(samples)
    return np.concatenate(parts) if parts else np.empty(0)


def _log_median_and_var(samples: np.ndarray) -> Tuple[float, float]:
    """log(median) and its sampling variance, (pi/2) * (1.4826 * MAD(log x))^2 / n."""
    logs = np.log(samples)
    center = float(np.median(logs))
    scale = 1.4826 * float(np.median(np.abs(logs - center)))
    return center, (math.pi / 2.0) * scale * scale / len(logs)


def harrell_davis(samples: np.ndarray, quantile: float) -> float:
    """The Harrell-Davis estimate of a quantile: every order statistic weighted by a Beta((n+1)q, (n+1)(1-q))
    probability mass, so the estimate moves smoothly with the data instead of jumping between two samples."""
    ordered = np.sort(np.asarray(samples, dtype=np.float64))
    if len(ordered) == 1:
        return float(ordered[0])
    return float(np.dot(_harrell_davis_weights(len(ordered), quantile), ordered))


#: Gauss-Legendre nodes per order statistic's interval: the Beta density varies on a scale of about
#: sqrt(q(1-q)/n), far wider than an interval's 1/n, so a few nodes integrate it to float precision
_HD_NODES = np.polynomial.legendre.leggauss(12)


@functools.lru_cache(maxsize=256)
def _harrell_davis_weights(n: int, quantile: float) -> np.ndarray:
    """The Beta((n+1)q, (n+1)(1-q)) probability of each interval [(i-1)/n, i/n], integrated with numpy alone:
    importing scipy.stats for beta.cdf costs most of a second on every run that draws the trend page."""
    # the weights depend only on n: a nightly series computes them once per sample count, not once per cell
    a, b = (n + 1) * quantile, (n + 1) * (1.0 - quantile)
    nodes, node_weights = _HD_NODES
    starts = np.arange(n)[:, None] / n
    x = starts + (nodes[None, :] + 1.0) / (2.0 * n)          # nodes inside each interval, never 0 or 1
    log_pdf = (a - 1.0) * np.log(x) + (b - 1.0) * np.log1p(-x) + (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b))
    weights = np.exp(log_pdf) @ node_weights / (2.0 * n)
    # A shape parameter below 2 makes the density (or its slope) singular at that end, which quadrature misses:
    # that end's interval gets what the others leave of the total probability, 1.
    if b < 2.0 <= a:
        weights[-1] = 1.0 - weights[:-1].sum()
    elif a < 2.0 <= b:
        weights[0] = 1.0 - weights[1:].sum()
    return weights / weights.sum()


def _log_figure_and_var(samples: np.ndarray, figure: str) -> Tuple[float, float]:
    """log(figure) of one repeat's samples and its within-run sampling variance (see the module docstring)."""
    if figure == "median":
        return _log_median_and_var(samples)
    n = len(samples)
    if figure == "mean":
        mean = float(np.mean(samples))
        return math.log(mean), float(np.var(samples, ddof=1)) / (n * mean * mean)
    if figure == "p90":
        logs = np.sort(np.log(samples))
        z, q = 1.96, TAIL_QUANTILE
        half = z * math.sqrt(n * q * (1.0 - q))
        low, high = max(0, int(math.floor(n * q - half)) - 1), min(n - 1, int(math.ceil(n * q + half)) - 1)
        return math.log(harrell_davis(samples, q)), ((float(logs[high]) - float(logs[low])) / (2 * z)) ** 2
    raise ValueError(f"unknown latency figure {figure!r}; known: {', '.join(LATENCY_FIGURES)}")


def figure_value(samples: np.ndarray, figure: str) -> float:
    """One repeat's figure in ms: its median, mean or Harrell-Davis p90."""
    return math.exp(_log_figure_and_var(np.asarray(samples, dtype=np.float64), figure)[0])


def run_level_figure(samples: Samples, figure: str = "median") -> Optional[float]:
    """A run's figure (ms): exp(mean over repeats of log figure); None without samples."""
    repeats = [r for r in as_repeats(samples) if len(r) >= 2]
    if not repeats:
        return None
    return float(np.exp(np.mean([_log_figure_and_var(r, figure)[0] for r in repeats])))


def _bootstrap_p_greater(base: np.ndarray, cand: np.ndarray, figure: str) -> float:
    """One-sided bootstrap p that the new figure is above the baseline's: the share of replicates (each side
    resampled with replacement) where it is not, with the +1 correction so it is never 0."""
    rng = np.random.default_rng(0)
    reducer = (lambda x: np.mean(x, axis=1)) if figure == "mean" else \
        (lambda x: np.quantile(x, TAIL_QUANTILE, axis=1))
    not_above, done, chunk = 0, 0, 50
    while done < BOOTSTRAP_REPLICATES:
        m = min(chunk, BOOTSTRAP_REPLICATES - done)
        fb = reducer(base[rng.integers(0, len(base), (m, len(base)))])
        fc = reducer(cand[rng.integers(0, len(cand), (m, len(cand)))])
        not_above += int(np.sum(fc <= fb))
        done += m
    return (not_above + 1) / (BOOTSTRAP_REPLICATES + 1)


def repeat_spread(samples: Samples) -> Optional[float]:
    """Between-repeat spread of a figure: the standard deviation of log(median) over its repeats (None for one)."""
    medians = [float(np.median(r)) for r in as_repeats(samples) if len(r)]
    if len(medians) < 2:
        return None
    return float(np.std(np.log(medians), ddof=1))


def between_run_spread(medians_ms: Sequence[Optional[float]]) -> Optional[RunSpread]:
    """Robust between-run spread of a cell key's medians, oldest run first (None with too few runs).

    Successive differences of log(median), so that a real step (a past
    regression, a runtime upgrade) counts once rather than inflating every
    deviation from the mean; differences beyond four robust standard
    deviations are such steps and are left out.
    """
    values = [v for v in (finite_or_none(m) for m in medians_ms) if v is not None and v > 0][-MAX_HISTORY_RUNS:]
    if len(values) < MIN_HISTORY_RUNS:
        return None
    diffs = np.diff(np.log(values))
    kept = diffs
    if len(diffs) >= STEP_TRIM_MIN_DIFFS:
        # a median of few differences is itself too noisy to tell a step from noise: trim only in longer series
        # successive differences of a steady series centre on zero
        kept = diffs[_inliers(diffs, 0.0, STEP_TRIM_SIGMAS)]
    sigma = math.sqrt(float(np.mean(kept * kept)) / 2.0)
    return RunSpread(cv=sigma, runs=len(values), df=len(kept))


def _typical_rounds(diffs: np.ndarray) -> List[int]:
    """The rounds of a paired run whose difference is within ROUND_TRIM_SIGMAS robust standard deviations
    of the median difference. A process that lands in a pathological mode (seen with OpenVINO here: one
    process in ten or twenty running 2x slower, both sides alike) is not the model's speed; a candidate
    that is slower in most rounds moves the median, not one round. Only from ROUND_TRIM_MIN rounds on."""
    if len(diffs) < ROUND_TRIM_MIN:
        return list(range(len(diffs)))
    return [int(i) for i in np.flatnonzero(_inliers(diffs, float(np.median(diffs)), ROUND_TRIM_SIGMAS))]


def _inliers(values: np.ndarray, center: float, sigmas: float) -> np.ndarray:
    """Which values lie within `sigmas` robust standard deviations (1.4826 x MAD about `center`) of it;
    all of them when that deviation is zero."""
    distance = np.abs(values - center)
    robust = 1.4826 * float(np.median(distance))
    return np.ones(len(values), dtype=bool) if robust == 0 else distance <= sigmas * robust


def _insufficient(n_base: int, n_cand: int) -> LatencyComparison:
    return LatencyComparison(n_base, n_cand, None, None, None, None, None, None, False, "insufficient-samples")


def compare_latency(baseline: Samples, candidate: Samples, *, min_effect: float = DEFAULT_MIN_EFFECT,
                    alpha: float = DEFAULT_ALPHA, history: Optional[RunSpread] = None,
                    assumed_run_cv: float = DEFAULT_ASSUMED_RUN_CV,
                    min_shift_ms: float = DEFAULT_MIN_SHIFT_MS, paired: bool = False,
                    figure: str = "median") -> LatencyComparison:
    """Has `candidate`'s `figure` (median, mean or p90) got slower than `baseline`'s? See the module docstring.

    baseline / candidate: one array of samples (ms) or one per repeat.
    history: the cell key's between-run spread of this figure from the history store, if known.
    paired: the two were measured in the same run, repeat k of each back to back (harness.schema.pairing); with as
    many usable repeats on each side, the noise is the spread of the per-round differences (a paired t test).
    """
    from scipy.stats import mannwhitneyu, t as student_t
    base_all, cand_all = as_repeats(baseline), as_repeats(candidate)
    base = [r for r in base_all if len(r) >= MIN_SAMPLES]
    cand = [r for r in cand_all if len(r) >= MIN_SAMPLES]
    n_base, n_cand = sum(len(r) for r in base_all), sum(len(r) for r in cand_all)
    if figure not in LATENCY_FIGURES:
        raise ValueError(f"unknown latency figure {figure!r}; known: {', '.join(LATENCY_FIGURES)}")
    if not base or not cand:
        return replace(_insufficient(n_base, n_cand), figure=figure)
    kb, kc = len(base), len(cand)
    stats_b = [_log_figure_and_var(r, figure) for r in base]
    stats_c = [_log_figure_and_var(r, figure) for r in cand]
    log_b = np.array([m for m, _ in stats_b])
    log_c = np.array([m for m, _ in stats_c])
    rounds = paired and kb == kc == len(base_all) == len(cand_all) and kb > 1
    notes = []
    if rounds:
        keep = _typical_rounds(log_c - log_b)
        if len(keep) < kb:
            notes.append(f"{kb - len(keep)} of {kb} rounds left out: one side's process ran far off the others "
                         f"({', '.join(f'{math.expm1(float(log_c[i] - log_b[i])):+.0%}' for i in range(kb) if i not in keep)})")
            base, cand = [base[i] for i in keep], [cand[i] for i in keep]
            stats_b, stats_c = [stats_b[i] for i in keep], [stats_c[i] for i in keep]
            log_b, log_c = log_b[keep], log_c[keep]
            kb = kc = len(keep)
    d = float(log_c.mean() - log_b.mean())

    # The within-run sampling error is a lower bound on each repeat's noise. The between-repeat spread of
    # repeat medians already includes it, and the history's between-run spread of run-level figures includes
    # everything, so those broad sources set the degrees of freedom; the largest estimate sets the variance.
    within = float(np.mean([v for _, v in stats_b + stats_c]))
    df_rep = (kb - 1) + (kc - 1)
    broad: List[Tuple[float, float, float, str]] = []  # (baseline var, new var, df, source)
    if rounds:
        # Drift shared by the two sides of a round cancels in its difference: what is left is the spread of
        # the per-round differences, split evenly between the sides so the rule below stays one formula.
        spread = float(np.var(log_c - log_b, ddof=1))
        broad.append((spread / (2 * kb), spread / (2 * kc), float(kb - 1), "paired rounds"))
        notes.insert(0, f"paired: {kb} rounds, per-round difference SD {math.sqrt(spread):.1%}")
    elif df_rep > 0:
        pooled = ((float(np.var(log_b, ddof=1)) * (kb - 1) if kb > 1 else 0.0) +
                  (float(np.var(log_c, ddof=1)) * (kc - 1) if kc > 1 else 0.0)) / df_rep
        broad.append((pooled / kb, pooled / kc, float(df_rep), "between-repeat"))
        notes.append(f"between-repeat CV {math.sqrt(pooled):.1%} ({kb}+{kc} repeats)")
    if history is not None and not rounds:
        broad.append((history.cv ** 2, history.cv ** 2, float(max(history.df, 1)), "history"))
        notes.insert(0, f"between-run CV {history.cv:.1%} over {history.runs} runs")
    if not broad:
        broad.append((assumed_run_cv ** 2, assumed_run_cv ** 2, float(ASSUMED_RUN_DF), "assumed"))
        notes.append(f"between-run spread unknown (one repeat, under {MIN_HISTORY_RUNS} runs of history): "
                     f"assumed CV {assumed_run_cv:.0%}")
    top = max(broad, key=lambda b: b[0] + b[1])
    var_b, var_c, df, source = max(top[0], within / kb), max(top[1], within / kc), top[2], top[3]
    if within / kb + within / kc > top[0] + top[1]:
        source = "within-run"
    noise_cv = math.sqrt(max(top[0] * kb, within) if source != "history" else top[0])
    notes.insert(0, f"noise: {source}")
    se = math.sqrt(var_b + var_c)
    df = max(df, 1.0)
    p_run = float(student_t.sf(d / se, df)) if se > 0 else (0.0 if d > 0 else 1.0)
    half = float(student_t.ppf(0.975, df)) * se
    flat_b, flat_c = np.concatenate(base), np.concatenate(cand)
    p_within = float(mannwhitneyu(flat_c, flat_b, alternative="greater").pvalue) if figure == "median" \
        else _bootstrap_p_greater(flat_b, flat_c, figure)
    base_median, cand_median = float(np.exp(log_b.mean())), float(np.exp(log_c.mean()))
    change = math.expm1(d)
    regressed = (p_run < alpha and p_within < alpha and change >= min_effect
                 and base_median * change >= min_shift_ms)
    return LatencyComparison(
        n_base, n_cand, base_median, cand_median, change, math.expm1(d - half), math.expm1(d + half), p_run,
        regressed, "noise-aware", p_within=p_within, repeats_baseline=kb, repeats_candidate=kc, se=se, df=df,
        noise_source=source, noise_cv=noise_cv, noise_note="; ".join(notes), figure=figure)


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




#: a cell key's columns: what must match for two runs' figures to be comparable
KEY_COLUMNS = ("model", "variant", "format", "target")
#: the runtime configuration that must match too. Hook: add columns here (an execution provider, a precision
#: hint, a batch size) as the results table gains them; history spreads and baselines then key on them.
#: runtime_options is a runtime configuration's options (harness.schema.runtime_configs), '' for the runtime's default, so
#: rows from before configurations existed (None) key with today's default ones
RUNTIME_CONFIG_COLUMNS = ("threads", "runtime_options")


def _key(row: Mapping[str, Any]) -> str:
    options = row.get("runtime_options")
    return "__".join(str(row.get(c)) for c in KEY_COLUMNS) + (f"__{options}" if isinstance(options, str) and options
                                                                else "")


def history_key(row: Mapping[str, Any]) -> Tuple[str, ...]:
    """(model, variant, format, target, runtime config...) of a row: the history series it belongs to."""
    config = []
    for c in RUNTIME_CONFIG_COLUMNS:
        value = row.get(c)
        number = finite_or_none(value)
        config.append("" if value is None or (number is None and not isinstance(value, str))
                      else str(int(number)) if number is not None and number == int(number) else str(value))
    return tuple(str(row.get(c)) for c in KEY_COLUMNS) + tuple(config)


def compare_runs(current_rows: Sequence[Mapping[str, Any]], baseline_rows: Sequence[Mapping[str, Any]],
                 current_samples: Mapping[str, Samples], baseline_samples: Mapping[str, Samples],
                 *, min_effect: float = DEFAULT_MIN_EFFECT, alpha: float = DEFAULT_ALPHA,
                 min_shift_ms: float = DEFAULT_MIN_SHIFT_MS, max_accuracy_drop: float = 0.01,
                 max_memory_increase: float = 0.10,
                 history: Optional[Mapping[Tuple[str, ...], RunSpread]] = None,
                 figures: Sequence[str] = LATENCY_FIGURES,
                 figure_history: Optional[Mapping[str, Mapping[Tuple[str, ...], RunSpread]]] = None
                 ) -> List[CellChange]:
    """Compare every cell present in both runs; `regressed` marks what got worse.

    Latency is compared on each of `figures` (metric 'latency' for the median, 'latency_mean',
    'latency_p90'); `history` is the median's between-run spread by history key, `figure_history` the
    others' by figure.

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
        for figure in figures:
            spreads = (history or {}) if figure == "median" else (figure_history or {}).get(figure, {})
            latency = compare_latency(baseline_samples.get(str(base.get("cell_id"))),
                                      current_samples.get(ident["cell_id"]), min_effect=min_effect, alpha=alpha,
                                      min_shift_ms=min_shift_ms, history=spreads.get(history_key(row)),
                                      figure=figure)
            changes.append(CellChange(metric=latency_metric(figure), baseline=latency.baseline_median_ms,
                                      current=latency.candidate_median_ms, regressed=latency.regressed,
                                      detail=latency.describe(), latency=latency, **ident))
        acc_base, acc_now = finite_or_none(base.get("accuracy")), finite_or_none(row.get("accuracy"))
        if acc_base is not None and acc_now is not None:
            drop = acc_base - acc_now
            changes.append(CellChange(metric="accuracy", baseline=acc_base, current=acc_now,
                                      regressed=drop > max_accuracy_drop,
                                      detail=f"accuracy {acc_base:.4f} -> {acc_now:.4f} ({-drop:+.4f})", **ident))
        mem_base, mem_now = finite_or_none(base.get("peak_rss_bytes")), finite_or_none(row.get("peak_rss_bytes"))
        if mem_base and mem_now is not None:
            rise = mem_now / mem_base - 1.0
            changes.append(CellChange(metric="memory", baseline=mem_base, current=mem_now,
                                      regressed=rise > max_memory_increase,
                                      detail=f"peak RSS {mem_base / 2**20:.1f} -> {mem_now / 2**20:.1f} MB "
                                             f"({rise:+.1%})", **ident))
    return changes


def latency_metric(figure: str) -> str:
    """The name a latency figure's comparison goes by: 'latency' for the median, 'latency_mean', 'latency_p90'."""
    return "latency" if figure == "median" else f"latency_{figure}"


def regressions(changes: Sequence[CellChange]) -> List[CellChange]:
    return [c for c in changes if c.regressed]

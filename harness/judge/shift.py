"""The shift function of a latency change: how each part of the distribution moved. Pure numpy.

After Rousselet, Pernet and Wilcox ("Beyond differences in means: robust graphical methods to compare two
groups in neuroscience", 2017) and Wilcox's `shifthd`: each decile of the baseline and candidate samples is
estimated by Harrell-Davis (regression.harrell_davis: a Beta-weighted sum of every order statistic), and the
difference of each pair, here relative (candidate / baseline - 1), gets a percentile bootstrap interval
(SHIFT_REPLICATES resamples of each side, seeded: the same samples, the same interval). The 99th percentile is
added to the deciles, since stalls that hit one inference in fifty show there first.

A CPU quota or a noisy neighbour moves the tail and hardly the median; a slower build moves every decile alike.
`ShiftFunction.describe` says which, e.g. "p10 +1% [-1%..+2%], ..., p90 +14% [+9%..+19%], p99 +30%
[+21%..+41%]: the tail moved".

`distribution_p` tests the raw samples with Mann-Whitney and Kolmogorov-Smirnov (one-sided: the candidate is
slower, or its distribution lies to the right somewhere), and returns the smaller p value, doubled (Bonferroni
over the two tests). It imports scipy.stats when called, never at import: the report and the trend page import
this module on every run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np

#: the quantiles a shift function shows: the deciles and the 99th percentile
SHIFT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99)
#: bootstrap resamples of each side per interval (seeded)
SHIFT_REPLICATES = 200
#: at most this many samples of a side enter the bootstrap (evenly thinned beyond it): the interval of a decile
#: from 2,000 samples is already far narrower than the changes a gate judges
MAX_SHIFT_SAMPLES = 2000
#: a quantile's move smaller than this is not named in the verdict, even where its interval excludes 0 (ten
#: intervals at 95 % each: one of them misses by chance in most quiet comparisons)
MIN_WORTH_NAMING = 0.02
#: the bulk's quantiles (p10..p50) and the tail's (p90, p99)
BULK, TAIL = (0.1, 0.2, 0.3, 0.4, 0.5), (0.9, 0.99)


@dataclass(frozen=True)
class QuantileShift:
    quantile: float
    baseline_ms: float
    candidate_ms: float
    #: candidate / baseline - 1, and its 95 % percentile bootstrap interval
    relative: float
    ci_low: float
    ci_high: float

    @property
    def moved(self) -> bool:
        """The interval excludes no change."""
        return self.ci_low > 0 or self.ci_high < 0

    @property
    def name(self) -> str:
        return f"p{round(self.quantile * 100):d}"


@dataclass(frozen=True)
class ShiftFunction:
    shifts: Tuple[QuantileShift, ...]

    def at(self, quantile: float) -> QuantileShift:
        return next(s for s in self.shifts if abs(s.quantile - quantile) < 1e-9)

    @property
    def verdict(self) -> str:
        """In words: which part of the distribution moved."""
        moved = [s for s in self.shifts if s.moved and abs(s.relative) >= MIN_WORTH_NAMING]
        if not moved:
            return f"no quantile moved by {MIN_WORTH_NAMING:.0%} or more beyond its interval"
        bulk = [self.at(q) for q in BULK]
        tail = [self.at(q) for q in TAIL]
        median, tail_top = self.at(0.5).relative, max(s.relative for s in tail)
        deciles = [s.relative for s in self.shifts if s.quantile <= 0.9]
        spread = max(deciles) - min(deciles)
        if all(s in moved for s in self.shifts if s.quantile <= 0.9) and spread <= max(0.5 * abs(median), 0.02):
            return "the whole distribution moved"
        if any(s in moved and s.relative > 0 for s in tail) and tail_top > 2 * max(median, 0.0) + 0.02:
            return "the tail moved"
        if any(s in moved for s in bulk) and not any(s in moved for s in tail):
            return "the bulk moved, not the tail"
        return "the distribution changed shape"

    def describe(self) -> str:
        parts = [f"{s.name} {s.relative:+.0%} [{s.ci_low:+.0%}..{s.ci_high:+.0%}]" for s in self.shifts]
        return f"shift function (Harrell-Davis, 95% bootstrap CI): {', '.join(parts)}: {self.verdict}"

    def short(self) -> str:
        """The median, the p90 and the p99 only: 'p50 +1%, p90 +14%, p99 +30%: the tail moved'."""
        parts = [f"{self.at(q).name} {self.at(q).relative:+.0%}" for q in (0.5, 0.9, 0.99)]
        return f"{', '.join(parts)}: {self.verdict}"


def _thinned(samples: np.ndarray) -> np.ndarray:
    if len(samples) <= MAX_SHIFT_SAMPLES:
        return samples
    return np.sort(samples)[np.linspace(0, len(samples) - 1, MAX_SHIFT_SAMPLES).round().astype(int)]


def _hd_matrix(n: int, quantiles: Sequence[float]) -> np.ndarray:
    from harness.judge.regression import _harrell_davis_weights
    return np.stack([_harrell_davis_weights(n, float(q)) for q in quantiles], axis=1)


def shift_function(baseline: Any, candidate: Any, quantiles: Sequence[float] = SHIFT_QUANTILES,
                   replicates: int = SHIFT_REPLICATES, seed: int = 0) -> Optional[ShiftFunction]:
    """The shift function of candidate against baseline samples (ms; repeats pooled); None with under 10 samples
    on a side."""
    from harness.judge.regression import MIN_SAMPLES, flat_samples
    base, cand = _thinned(flat_samples(baseline)), _thinned(flat_samples(candidate))
    if len(base) < MIN_SAMPLES or len(cand) < MIN_SAMPLES:
        return None
    rng = np.random.default_rng(seed)
    wb, wc = _hd_matrix(len(base), quantiles), _hd_matrix(len(cand), quantiles)
    qb, qc = np.sort(base) @ wb, np.sort(cand) @ wc
    boot_b = np.sort(base[rng.integers(0, len(base), (replicates, len(base)))], axis=1) @ wb
    boot_c = np.sort(cand[rng.integers(0, len(cand), (replicates, len(cand)))], axis=1) @ wc
    ratio = boot_c / boot_b - 1.0
    low, high = np.quantile(ratio, 0.025, axis=0), np.quantile(ratio, 0.975, axis=0)
    return ShiftFunction(tuple(QuantileShift(float(q), float(b), float(c), float(c / b - 1.0), float(lo), float(hi))
                               for q, b, c, lo, hi in zip(quantiles, qb, qc, low, high)))


def distribution_p(baseline: Any, candidate: Any) -> Optional[float]:
    """Is the candidate slower anywhere in its distribution? The smaller one-sided p of Mann-Whitney and
    Kolmogorov-Smirnov on the raw samples, times two (Bonferroni over the two tests); None without samples."""
    from scipy.stats import ks_2samp, mannwhitneyu
    from harness.judge.regression import flat_samples
    base, cand = flat_samples(baseline), flat_samples(candidate)
    if len(base) < 2 or len(cand) < 2:
        return None
    p_mw = float(mannwhitneyu(cand, base, alternative="greater").pvalue)
    # 'less': the candidate's CDF lies below the baseline's somewhere, i.e. it is slower there
    # the exact distribution is for small samples; beyond it scipy falls back with a warning: ask for asymp
    method = "exact" if len(base) * len(cand) <= 10_000 else "asymp"
    p_ks = float(ks_2samp(cand, base, alternative="less", method=method).pvalue)
    return min(1.0, 2.0 * min(p_mw, p_ks))

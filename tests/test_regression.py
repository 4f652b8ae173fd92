"""The latency regression test on synthetic per-iteration samples, and whole-run comparison."""
from __future__ import annotations

import numpy as np
import pytest

from harness.regression import MIN_SAMPLES, compare_latency, compare_runs, regressions
from harness.results import make_row

N_SEEDS = 100


def latencies(seed: int, n: int = 100, median_ms: float = 5.0, cv: float = 0.10, spikes: float = 0.02) -> np.ndarray:
    """Realistic timings: log-normal jitter plus rare 2-10x spikes (context switches, GC)."""
    rng = np.random.default_rng(seed)
    x = median_ms * rng.lognormal(0.0, cv, n)
    hit = rng.random(n) < spikes
    x[hit] *= rng.uniform(2.0, 10.0, hit.sum())
    return x


def test_identical_distributions_do_not_alarm_in_99_of_100_seeds():
    alarms = [seed for seed in range(N_SEEDS)
              if compare_latency(latencies(seed), latencies(10_000 + seed)).regressed]
    assert len(alarms) <= 1, f"false alarms on seeds {alarms}"


def test_ten_percent_slowdown_is_detected_in_every_seed():
    missed = [seed for seed in range(N_SEEDS)
              if not compare_latency(latencies(seed), latencies(10_000 + seed, median_ms=5.5)).regressed]
    assert missed == []


def test_shift_estimate_and_interval_cover_the_true_slowdown():
    result = compare_latency(latencies(1, n=400), latencies(2, n=400, median_ms=5.5))
    assert result.method == "mann-whitney" and result.regressed
    assert result.relative_change == pytest.approx(0.10, abs=0.02)
    assert result.ci_low < 0.10 < result.ci_high
    assert result.p_value < 1e-6
    assert "+10" in result.describe() or "+9" in result.describe() or "+11" in result.describe()


def test_speedup_is_not_a_regression():
    result = compare_latency(latencies(3), latencies(4, median_ms=4.5))
    assert not result.regressed and result.relative_change < 0


def test_significant_but_tiny_shift_is_below_the_minimum_effect():
    base, cand = latencies(5, n=3000, cv=0.05), latencies(6, n=3000, median_ms=5.1, cv=0.05)
    result = compare_latency(base, cand)
    assert result.p_value < 0.01          # the rank test alone would fail the build ...
    assert not result.regressed           # ... but 2 % is below the 5 % minimum effect
    assert compare_latency(base, cand, min_effect=0.01).regressed


def test_a_few_huge_outliers_do_not_alarm():
    base = latencies(7, spikes=0.0)
    cand = latencies(8, spikes=0.0)
    cand[:5] *= 100.0
    assert not compare_latency(base, cand).regressed


def test_microsecond_jitter_is_below_the_absolute_floor():
    base, cand = latencies(11, median_ms=0.023, cv=0.05), latencies(12, median_ms=0.028, cv=0.05)
    result = compare_latency(base, cand)            # +22 % but only 5 us: scheduling jitter on a tiny model
    assert result.p_value < 1e-6 and result.relative_change > 0.15
    assert not result.regressed
    assert compare_latency(base, cand, min_shift_ms=0.0).regressed
    assert compare_latency(base, latencies(13, median_ms=0.07, cv=0.05)).regressed   # 3x slower is real


def test_too_few_samples_are_not_judged():
    result = compare_latency(latencies(9, n=MIN_SAMPLES - 1), latencies(10, median_ms=50.0))
    assert result.method == "insufficient-samples" and not result.regressed
    assert "not judged" in result.describe()
    assert compare_latency(None, latencies(10)).method == "insufficient-samples"


def _row(variant="reference", status="ok", accuracy=0.95, peak=100e6, run="r"):
    return make_row(run_id=run, cell_id=f"m__{variant}__onnx__pi", model="m", variant=variant, format="onnx",
                    target="pi", status=status, accuracy=accuracy if status == "ok" else None,
                    peak_rss_bytes=peak if status == "ok" else None,
                    error_message=None if status == "ok" else "runtime crashed")


def test_compare_runs_lists_each_kind_of_regression():
    baseline = [_row("reference"), _row("int8"), _row("pruned"), _row("gone")]
    current = [_row("reference", accuracy=0.95), _row("int8", accuracy=0.90, peak=150e6),
               _row("pruned", status="failed"), _row("new")]
    samples_base = {r["cell_id"]: latencies(i) for i, r in enumerate(baseline)}
    samples_now = {"m__reference__onnx__pi": latencies(20, median_ms=6.0),
                   "m__int8__onnx__pi": latencies(21)}
    changes = compare_runs(current, baseline, samples_now, samples_base)
    found = {(c.variant, c.metric) for c in regressions(changes)}
    assert found == {("reference", "latency"), ("int8", "accuracy"), ("int8", "memory"), ("pruned", "status")}
    status = next(c for c in changes if c.metric == "status")
    assert "was ok, now failed: runtime crashed" == status.detail
    assert not any(c.variant in ("new", "gone") for c in changes)

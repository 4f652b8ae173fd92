"""The shift function (Harrell-Davis deciles and p99, bootstrap intervals) and the whole-distribution test."""
from __future__ import annotations

import subprocess
import sys

import numpy as np

from harness.judge.shift import distribution_p, shift_function


def repeats(seed: int, scale: float = 1.0, stall_share: float = 0.0, stall: float = 1.6):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(3):
        x = 4.0 * scale * rng.lognormal(0, 0.08, 300)
        x[rng.random(300) < stall_share] *= stall
        out.append(x)
    return out


def test_a_slower_build_moves_every_decile_alike():
    f = shift_function(repeats(1), repeats(2, scale=1.5))
    assert f.verdict == "the whole distribution moved"
    assert all(0.45 < s.relative < 0.55 and s.ci_low < 0.5 < s.ci_high + 0.02 for s in f.shifts), f.describe()
    assert f.short().startswith("p50 +5") and "p90 +5" in f.short()


def test_a_cpu_quota_moves_the_tail_not_the_median():
    f = shift_function(repeats(1), repeats(3, stall_share=0.15))
    assert f.verdict == "the tail moved", f.describe()
    assert abs(f.at(0.5).relative) < 0.04 and f.at(0.9).relative > 0.2 and f.at(0.99).relative > 0.3
    assert f.at(0.9).ci_low > 0.1
    assert distribution_p(repeats(1), repeats(3, stall_share=0.15)) < 1e-6


def test_no_change_moves_no_quantile_and_the_same_data_give_the_same_intervals():
    f = shift_function(repeats(1), repeats(4))
    assert f.verdict.startswith("no quantile moved"), f.describe()
    assert f == shift_function(repeats(1), repeats(4))
    assert distribution_p(repeats(1), repeats(4)) > 0.01
    assert shift_function([1.0] * 5, repeats(4)) is None


def test_the_report_and_trend_page_imports_stay_free_of_scipy_stats():
    code = ("import sys, harness.judge.shift, harness.report.trends_page, harness.judge.gate; "
            "print('scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

"""The judge that sees the whole latency distribution: median, mean and p90, each with its own test and interval."""
from __future__ import annotations

import numpy as np
import pytest

from harness.core.errors import ConfigError
from harness.judge.gate import Policy, TargetPolicy, GateInputs, evaluate, load_policy
from harness.judge.regression import compare_latency, compare_runs, harrell_davis, regressions
from harness.schema.results import make_row


def judge(policy, frame, budgets=None, **inputs):
    """The gate's verdict on a table, with GateInputs given as keywords."""
    return evaluate(policy, frame, GateInputs(budgets=budgets or {}, **inputs))

N_SEEDS = 60


def night(seed: int, k: int = 3, n: int = 300, median_ms: float = 4.5, stall_share: float = 0.0,
          stall_factor: float = 2.0, run_cv: float = 0.01) -> list:
    """One run of k repeats of n timings; with stall_share, that share of inferences is paused (a CPU quota, a
    thermal throttle) and takes stall_factor times as long: the mean and the tail move, the median hardly."""
    rng = np.random.default_rng(seed)
    level = median_ms * float(np.exp(rng.normal(0.0, run_cv)))
    out = []
    for _ in range(k):
        x = level * float(np.exp(rng.normal(0.0, 0.005))) * rng.lognormal(0.0, 0.05, n)
        hit = rng.random(n) < stall_share
        x[hit] *= stall_factor
        out.append(x)
    return out


def test_harrell_davis_estimates_the_quantile_of_a_known_distribution():
    rng = np.random.default_rng(0)
    x = rng.exponential(1.0, 4000)
    assert harrell_davis(x, 0.9) == pytest.approx(np.log(10.0), rel=0.05)  # exponential: q90 = ln 10
    assert harrell_davis(np.array([3.0]), 0.9) == 3.0
    # smoother than one order statistic: nudging the largest sample hardly moves it
    y = np.sort(rng.lognormal(0, 0.1, 200))
    z = y.copy()
    z[-1] *= 3
    assert abs(harrell_davis(z, 0.9) / harrell_davis(y, 0.9) - 1) < 0.01


def test_a_stall_type_slowdown_moves_mean_and_p90_and_is_caught_where_the_median_is_not():
    """15 % of inferences paused to twice their time, as under a 90 % CPU quota: the median moves about 2 %."""
    caught = {"median": 0, "mean": 0, "p90": 0}
    for seed in range(20):
        base, stalled = night(seed), night(1000 + seed, stall_share=0.15)
        for figure in caught:
            result = compare_latency(base, stalled, figure=figure)
            caught[figure] += result.regressed
            assert result.figure == figure and result.describe().startswith(figure)
    assert caught["median"] == 0
    assert caught["mean"] == 20 and caught["p90"] == 20


def test_each_figure_has_its_own_interval_and_rarely_alarms_on_noise():
    alarms = {"median": 0, "mean": 0, "p90": 0}
    for seed in range(N_SEEDS):
        base, same = night(seed), night(5000 + seed)
        for figure in alarms:
            result = compare_latency(base, same, figure=figure)
            assert result.judged and result.ci_low < result.relative_change < result.ci_high
            alarms[figure] += result.regressed
    assert sum(alarms.values()) <= 2, alarms
    stalled = compare_latency(night(1), night(2, stall_share=0.15), figure="mean")
    assert stalled.ci_low > 0.05 and "95% CI" in stalled.describe()


def test_an_unknown_figure_is_refused():
    with pytest.raises(ValueError, match="unknown latency figure 'p95'"):
        compare_latency(night(1), night(2), figure="p95")


def test_the_paired_judge_catches_a_stall_type_slowdown_too():
    """Paired rounds (baseline and candidate back to back) judged on the per-round differences of each figure."""
    rng = np.random.default_rng(3)
    base, cand = [], []
    for i in range(10):
        level = 4.5 * float(np.exp(rng.normal(0.0, 0.05)))  # drift of a round, shared by both sides
        base.append(level * rng.lognormal(0.0, 0.05, 70))
        x = level * rng.lognormal(0.0, 0.05, 70)
        x[rng.random(70) < 0.15] *= 2.0
        cand.append(x)
    by_figure = {f: compare_latency(base, cand, paired=True, figure=f) for f in ("median", "mean", "p90")}
    assert by_figure["mean"].regressed and by_figure["p90"].regressed and not by_figure["median"].regressed
    assert by_figure["mean"].noise_source == "paired rounds"


def _rows_and_samples(run: str, seed: int, stall_share: float = 0.0):
    row = make_row(run_id=run, cell_id="m__reference__tflite__local", model="m", variant="reference",
                   format="tflite", target="local", status="ok", latency_p99_ms=9.0, peak_rss_bytes=1e8)
    return [row], {row["cell_id"]: night(seed, stall_share=stall_share)}


def test_a_policy_names_the_figures_that_gate_and_by_default_all_three_do():
    base_rows, base_samples = _rows_and_samples("base", 1)
    rows, samples = _rows_and_samples("new", 2, stall_share=0.15)
    common = dict(samples=samples, baseline_rows=base_rows, baseline_samples=base_samples, baseline_id="base")
    every = judge(Policy(defaults=TargetPolicy(max_latency_regression=0.05)), rows, {}, **common)
    assert {v.rule for v in every.violations} == {"max_latency_regression.mean", "max_latency_regression.p90"}
    assert sum(c.rule.startswith("max_latency_regression") for c in every.checks) == 3
    median_only = judge(Policy(defaults=TargetPolicy(max_latency_regression=0.05, latency_figures=("median",))),
                           rows, {}, **common)
    assert median_only.passed and [c.rule for c in median_only.checks if "latency_regression" in c.rule] == \
        ["max_latency_regression"]


def test_a_policy_with_an_unknown_figure_is_one_line_naming_the_key(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("defaults:\n  max_latency_regression: 0.05\n  latency_figures: [median, p95]\n")
    with pytest.raises(ConfigError, match="latency_figures") as info:
        load_policy(path)
    assert "policy.yaml" in str(info.value) and "\n" not in str(info.value)
    path.write_text("defaults:\n  latency_figures: [mean, p90]\n")
    assert load_policy(path).defaults.latency_figures == ("mean", "p90")


def test_history_compare_lists_each_figure():
    base_rows, base_samples = _rows_and_samples("base", 1)
    rows, samples = _rows_and_samples("new", 2, stall_share=0.15)
    found = {c.metric for c in regressions(compare_runs(rows, base_rows, samples, base_samples))}
    assert found == {"latency_mean", "latency_p90"}


def test_harrell_davis_weights_match_the_beta_distribution_without_importing_scipy_stats():
    import numpy as np
    from scipy.stats import beta

    from harness.judge.regression import _harrell_davis_weights
    for n in (1, 2, 3, 10, 19, 200, 5000):
        for q in (0.1, 0.5, 0.9, 0.99):
            exact = np.diff(beta.cdf(np.arange(n + 1) / n, (n + 1) * q, (n + 1) * (1 - q)))
            assert np.max(np.abs(_harrell_davis_weights(n, q) - exact)) < 1e-6, (n, q)


def test_the_trend_figures_need_no_scipy_stats():
    import subprocess
    import sys
    code = ("import sys, numpy as np\n"
            "from harness.judge.regression import figure_value\n"
            "figure_value(np.random.default_rng(0).gamma(4.0, size=500), 'p90')\n"
            "print('scipy.stats' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"

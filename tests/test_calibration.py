"""The gate calibration's accounting (pure, on synthetic reruns) and its CPU-quota set-up."""
from __future__ import annotations

import numpy as np

from harness.bench.calibration import CellSeries, CpuQuota, analyse
from harness.bench.report import calibration_table


def reruns(n, seed, median=1.0, run_cv=0.01, k=3, samples=200, cv=0.05):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        level = median * np.exp(rng.normal(0, run_cv))
        out.append([list(level * rng.lognormal(0, cv, samples)) for _ in range(k)])
    return out


def test_quiet_reruns_give_no_false_alarm_and_catch_an_applied_slowdown():
    series = CellSeries("m", "onnx", runs=reruns(8, 1), quota_runs=reruns(2, 2, median=1.12))
    row = analyse(series)
    assert row["pairs"] == 28 and row["false_alarms"] == 0
    assert row["caught"] >= 27 and row["caught_without_history"] >= 20
    # one series' pairs share their history, so coverage is judged over several independent series
    coverage = [analyse(CellSeries("m", "onnx", runs=reruns(8, 100 + s)))["ci_covers_slowdown"] for s in range(8)]
    assert 0.85 <= float(np.mean(coverage)) <= 1.0
    assert row["quota"]["pairs"] == 16 and row["quota"]["caught"] >= 15
    assert abs(row["quota"]["median_change"] - 0.12) < 0.03
    assert 0.002 < row["between_run_cv"] < 0.03 and row["repeats"] == 3


def test_noisy_reruns_are_left_out_of_the_pairs_the_gate_judges():
    series = CellSeries("m", "tflite", runs=reruns(5, 3),
                        noise=["", "other processes kept 1.2 CPUs busy", "", "", ""])
    row = analyse(series)
    assert row["noisy_reruns"] == 1 and row["pairs"] == 10 and row["quiet_pairs"] == 6
    assert row["noise_reasons"] == ["other processes kept 1.2 CPUs busy"]


def test_table_says_what_was_measured_and_what_was_skipped():
    row = analyse(CellSeries("m", "onnx", runs=reruns(4, 5)))
    doc = {"rows": [row], "pairs": row["pairs"], "caught": row["caught"], "false_alarms": row["false_alarms"],
           "quota": "slowdown made real with a CPU quota: skipped, cgroups are not writable here"}
    text = "\n".join(calibration_table(doc))
    assert "| m | onnx |" in text and "| skipped | skipped |" in text and "cgroups are not writable" in text


def test_a_machine_without_cgroup_cpu_control_skips_the_quota_with_a_reason(tmp_path):
    quota = CpuQuota(root=tmp_path)
    assert quota.path is None and "no cgroup CPU controller" in quota.problem
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    (tmp_path / "cpu").chmod(0o500)
    try:
        quota = CpuQuota(root=tmp_path)
        # root may write anywhere; a user may not: either way it is a cgroup dir or a reason, never a crash
        assert (quota.path is not None) or "not writable" in quota.problem
    finally:
        (tmp_path / "cpu").chmod(0o700)
        quota.close()


def test_reruns_are_judged_again_with_other_guard_limits_from_the_stored_readings():
    from harness.bench.calibration import noisy_reruns
    from harness.schema.targets import QuietLimits

    def reading(other_cpus):
        return {"before": {"monotonic_s": 0, "clk_tck": 100, "cpu_jiffies": {"busy": 0, "own": 0}},
                "after": {"monotonic_s": 1, "clk_tck": 100, "cpu_jiffies": {"busy": 100 + 100 * other_cpus,
                                                                            "own": 100}}}
    runs = reruns(6, 7)
    series = CellSeries("m", "onnx", runs=runs,
                        conditions=[[reading(1.0)] * 3] * 5 + [[reading(1.0), reading(1.6), reading(1.0)]])
    assert noisy_reruns(series, QuietLimits()) == [True] * 6
    assert noisy_reruns(series, QuietLimits(max_other_busy_cpus=1.2)) == [False] * 5 + [True]
    row = analyse(series, limits=QuietLimits(max_other_busy_cpus=1.2))
    assert row["noisy_reruns"] == 1 and row["quiet"]["reruns"] == 5 and row["quiet"]["pairs"] == 10

"""Nightly series: change points (binary segmentation with a t test), `harness history --changes`, and the
nightly gate rule with the segment since the last change point as the baseline."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from harness.commands import gate as gate_command
from harness.commands import history as history_command
from harness.history.store import History
from harness.judge.trends import (POINT_NOT_JUDGED, POINT_NOISY, Trend, TrendPoint, build_trends, segment_series,
                                  find_change_points, last_segment, newest_regressions)
from test_gate import good_rows, write_run


def nightly_values(seed: int, n: int = 30, shift_at: int | None = None, shift: float = 0.10,
                   cv: float = 0.025) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 5.0 * np.exp(rng.normal(0.0, cv, n))
    if shift_at is not None:
        x[shift_at:] *= 1 + shift
    return x


def trend_of(values, figure="median", statuses=None) -> Trend:
    statuses = statuses or ["ok"] * len(values)
    return Trend(("m", "reference", "tflite", "local", "1", ""), figure,
                 tuple(TrendPoint(f"night{i:02d}", float(v), s) for i, (v, s) in enumerate(zip(values, statuses))))


def test_segmentation_finds_a_persistent_step_where_it_happened_and_nothing_in_noise():
    x = np.log(nightly_values(1, shift_at=18, shift=0.10))
    ((index, p),) = segment_series(x)
    assert index == 18 and p <= 0.01
    assert segment_series(x) == segment_series(x), "deterministic: the same series gives the same answer"
    false = sum(len(segment_series(np.log(nightly_values(100 + s)))) for s in range(30))
    assert false <= 1
    assert segment_series(np.full(12, 3.0)) == []  # a constant series has no change


def test_a_step_at_the_newest_runs_is_found_three_nights_after_it():
    """Where a nightly gate looks: 10 % at 2.5 % noise, three runs old, in 19 of 20 series or more. A
    permutation test of three new runs among 19 is at its floor here; one new run alone is never a change."""
    def found_at_the_step(n: int) -> int:
        found = [segment_series(np.log(nightly_values(s, n=n, shift_at=16, shift=0.10))) for s in range(20)]
        return sum(any(abs(i - 16) <= 1 for i, _ in f) for f in found)
    assert found_at_the_step(19) >= 19
    assert found_at_the_step(17) == 0


def test_two_steps_are_both_found():
    x = np.log(nightly_values(2, n=36))
    x[12:] += np.log(1.15)
    x[24:] += np.log(1.15)
    assert [i for i, _ in segment_series(x)] == [12, 24]


def test_a_change_point_carries_its_shift_with_an_interval_and_the_runs_around_it():
    trend = find_change_points(trend_of(nightly_values(3, n=24, shift_at=16, shift=0.12)))
    (change,) = trend.change_points
    assert change.run_id == "night16" and change.regression
    assert change.ci_low < 0.12 < change.ci_high and 0.08 < change.shift < 0.16
    assert len(change.before_runs) == 16 and len(change.after_runs) == 8
    assert change.before_runs[-1] == "night15" and change.after_runs[0] == "night16"
    text = change.describe()
    assert text.startswith("REGRESSION: median") and "95% CI" in text and "at run night16" in text
    assert newest_regressions(trend, 8) == [change] and newest_regressions(trend, 7) == []
    assert [p.run_id for p in last_segment(trend)][0] == "night16"


def test_speedups_are_changes_not_regressions_and_accuracy_falls_the_other_way():
    faster = find_change_points(trend_of(nightly_values(4, n=20, shift_at=12, shift=-0.15)))
    assert faster.change_points and not any(c.regression for c in faster.change_points)
    accuracy = [0.95] * 12 + [0.91] * 6
    worse = find_change_points(trend_of(accuracy, figure="primary"))
    (change,) = worse.change_points
    assert change.regression and change.shift == pytest.approx(-0.04)
    small = find_change_points(trend_of(nightly_values(5, n=24, shift_at=14, shift=0.03, cv=0.002)),
                               thresholds={"median": 0.05})
    assert small.change_points and not any(c.regression for c in small.change_points), \
        "a real 3 % shift is a change, but under the policy's 5 % it is no regression"


def test_noisy_and_unjudged_runs_stay_in_the_series_with_their_status_but_are_never_used():
    values = list(nightly_values(6, n=20))
    statuses = ["ok"] * 20
    values[5], statuses[5] = 50.0, POINT_NOISY
    values[6], statuses[6] = 60.0, POINT_NOT_JUDGED
    trend = find_change_points(trend_of(values, statuses=statuses))
    assert len(trend.points) == 20 and len(trend.used) == 18 and not trend.change_points


def test_series_are_built_per_runtime_configuration_and_figure():
    row = {"run_id": "a", "cell_id": "c1", "model": "m", "variant": "reference", "format": "onnx", "target": "local",
           "status": "ok", "threads": 1, "runtime_options": "", "peak_rss_bytes": 2 ** 20 * 100, "primary_value": 0.9}
    cells = [{"run_id": f"r{i}", "gate_status": None, "samples": np.full(20, 2.0 + i),
              "row": {**row, "threads": threads}} for i in range(3) for threads in (1, 4)]
    trends = build_trends(cells)
    assert {t.key[4] for t in trends} == {"1", "4"}
    assert {t.figure for t in trends} == {"median", "mean", "p90", "peak_memory", "primary"}
    assert all(len(t.points) == 3 for t in trends)


# ---------------------------------------------------------------- commands
def run_command(module, name, argv):
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers())
    args = parser.parse_args([name, *argv])
    return args.func(args)


def night_run(reports, name, seed, scale=1.0, noisy=False):
    rng = np.random.default_rng(seed)
    rows = good_rows()
    if noisy:
        rows = [dict(r, noisy=True, noise_reasons="load 2.5 per CPU > 1.0") for r in rows]
    # each night drifts by about 1.5 % as a whole, as real nightly runs do
    return write_run(reports, name, rows, scale=scale * float(np.exp(rng.normal(0, 0.015))), seed=seed)


POLICY = "alpha: 0.01\ndefaults:\n  max_latency_regression: 0.05\n  nightly_window_runs: 3\n"


def test_nightly_gate_fails_on_a_persistent_slowdown_then_accepts_the_new_level(tmp_path, capsys):
    reports, db = tmp_path / "reports", tmp_path / "h.sqlite"
    policy = tmp_path / "nightly.yaml"
    policy.write_text(POLICY)
    common = ["--policy", str(policy), "--reports-dir", str(reports), "--db", str(db),
              "--targets-dir", str(tmp_path)]
    codes = {}
    for night in range(1, 26):
        slow = night >= 15
        noisy = night == 6
        night_run(reports, f"night{night:02d}", seed=night, scale=1.12 if slow else 1.0, noisy=noisy)
        codes[night] = run_command(gate_command, "gate", ["--run", f"night{night:02d}", *common])
        out = capsys.readouterr().out
        if night == 16:
            assert "nightly baseline: each series' runs since its last change point (13-13 runs)" in out, out
        if night == 17:
            assert "VIOLATION [local] nightly_change_point" in out and "at run night15" in out, out
    # night 6 was measured on a busy device: not judged (2). Night 15 on: slower by 12 %, first caught by the
    # regression rule against the quiet segment, on the third slow night by the change point as well
    assert [codes[n] for n in range(1, 15)] == [0] * 5 + [2] + [0] * 8, codes
    assert [codes[n] for n in range(15, 18)] == [1, 1, 1], codes
    # from night 18 the change point (night 15) is older than the newest 3 runs, and the runs since it are
    # the baseline: the new level is accepted
    assert all(codes[n] == 0 for n in range(18, 26)), codes
    store = History(db)
    assert store.run("night06").gate_status == "not_judged" and store.run("night06").gate_passed is None
    (trend,) = [t for t in build_trends(store.trend_cells("digits_cnn", "local"), ("median",)) if t.key[2] == "tflite"]
    assert [p.status for p in trend.points][5] == "not_judged"

    assert run_command(history_command, "history", ["--changes", "--db", str(db), "--figure", "median"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 series in ") and "REGRESSION: median" in out and "at run night15" in out
    assert "1 noisy or not judged left out" in out and "before: 13 runs (night01..night14)" in out

"""The nightly calibration's analysis (harness.bench.nightly) on reruns with a known answer."""
from __future__ import annotations

import numpy as np

from harness.bench import nightly


def reruns(seed: int, n: int, stall_share: float = 0.0, run_cv: float = 0.01) -> list:
    """n reruns of one repeat of 300 timings; with stall_share, that share of inferences paused to twice its time."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = 2.0 * float(np.exp(rng.normal(0, run_cv))) * rng.lognormal(0, 0.05, 300)
        x[rng.random(300) < stall_share] *= 2.0
        out.append([x.tolist()])
    return out


def test_quota_runs_are_caught_by_mean_or_p90_and_noise_runs_are_not():
    result = nightly.quota_analysis(reruns(1, 10), reruns(2, 4, stall_share=0.15))
    assert result["quota_caught"] == 4 and result["quota_caught_by_median"] == 0
    assert result["false_alarms"] == 0 and result["noise_runs"] == 10
    assert result["quota_change"]["mean"] > 0.10 and abs(result["quota_change"]["median"]) < 0.05


def test_series_analysis_finds_a_10_percent_shift_soon_and_few_false_points(monkeypatch):
    monkeypatch.setattr(nightly, "SERIES_PER_CELL", 6)
    result = nightly.series_analysis(reruns(3, 10, run_cv=0.015), seed=0)
    assert result["series_nights"] == 6 * (nightly.NIGHTS - nightly.FIRST_NIGHT_JUDGED + 1)
    assert result["false_change_points"] <= 1
    assert max(result["delays"][0.10]) <= 4, result["delays"]
    report = nightly.markdown(nightly.analyse({"m/tflite": {"runs": reruns(4, 10), "quota_runs": reruns(5, 2, 0.15)}}))
    assert "| m/tflite | 10 (0) |" in report and "false change points per 100 series-nights" in report
    assert all(f"- {figure} series: 95 % find" in report for figure in ("median", "mean", "p90")), report


def test_a_shift_scales_each_runs_figure_as_it_scales_the_samples():
    """The analysis scales each rerun's figure instead of its samples: exact for median, mean and p90."""
    runs = reruns(6, 3, stall_share=0.1)
    for figure in ("median", "mean", "p90"):
        scaled = nightly._run_figures([[(np.asarray(r) * 1.1).tolist() for r in run] for run in runs], figure)
        assert np.allclose(scaled, nightly._run_figures(runs, figure) * 1.1, rtol=1e-9), figure


def test_the_share_of_series_that_can_see_a_10_percent_shift_is_reported_with_their_delay(monkeypatch):
    # a quiet cell (1 % between runs) can see 10 %; a cell whose runs wander by 15 % cannot, and is left out of
    # the judgeable series' delay rather than dragging it
    monkeypatch.setattr(nightly, "SERIES_PER_CELL", 4)
    result = nightly.analyse({"quiet/onnx": {"runs": reruns(7, 10, run_cv=0.01)},
                              "wandering/onnx": {"runs": reruns(8, 10, run_cv=0.15)}})
    by_cell = {r["cell"]: r["by_figure"]["median"] for r in result["rows"]}
    assert all(by_cell["quiet/onnx"]["judgeable"]) and not any(by_cell["wandering/onnx"]["judgeable"])
    pooled = result["by_figure"]["median"]
    assert pooled["judgeable_series"] == 4 and pooled["series"] == 8 and pooled["judgeable_share"] == 0.5
    assert pooled["judgeable_quiet_delay95"] <= 3
    assert "4 of 8 series (50%) have a detectability of at most 10%" in nightly.markdown(result)

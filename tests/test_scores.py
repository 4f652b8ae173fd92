"""Portability scores, parity and recommendations on hand-built tables with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from harness.schema.results import make_row, results_frame
from harness.judge.scores import (
    BYTES_PER_MB,
    disagreements,
    pairwise_parity,
    pareto_front,
    parity_pivot,
    parity_table,
    portability_scores,
    recommend,
    score_cell,
)
from harness.schema.targets import Budgets

BUDGETS = {"pi": Budgets(latency_p99_ms=20.0, peak_memory_mb=600.0),
           "jetson": Budgets(latency_p99_ms=10.0, peak_memory_mb=1000.0)}


def row(model="m", variant="reference", fmt="onnx", target="pi", status="ok", retention=1.0, p99=10.0,
        mem_mb=100.0, accuracy=None, top1=None, **extra):
    fields = dict(run_id="r", cell_id=f"{model}__{variant}__{fmt}__{target}", model=model, variant=variant,
                  format=fmt, target=target, status=status)
    if status == "ok":
        fields.update(accuracy_retention=retention, latency_p99_ms=p99,
                      peak_rss_bytes=None if mem_mb is None else mem_mb * BYTES_PER_MB,
                      accuracy=accuracy, top1_agreement=top1)
    else:
        fields.update(error_category="conversion", error_message="unsupported op")
    fields.update(extra)
    return make_row(**fields)


def by_key(scores):
    return {(s.model, s.variant): s for s in scores}


def test_cell_within_budget_at_full_accuracy_scores_one():
    cell = score_cell(row(), BUDGETS["pi"])
    assert (cell.parts.deploys, cell.parts.accuracy, cell.parts.latency, cell.parts.memory) == (1, 1, 1, 1)
    assert cell.score == 1.0 and cell.notes == ()


def test_cell_score_is_the_product_of_visible_parts():
    cell = score_cell(row(retention=0.9, p99=40.0, mem_mb=1200.0), BUDGETS["pi"])
    assert cell.parts.accuracy == pytest.approx(0.9)
    assert cell.parts.latency == pytest.approx(0.5)
    assert cell.parts.memory == pytest.approx(0.5)
    assert cell.score == pytest.approx(0.225)
    assert any("p99 40.00 ms > budget 20 ms" in n for n in cell.notes)
    assert any("peak 1200.0 MB > budget 600 MB" in n for n in cell.notes)


def test_failed_cell_scores_zero_and_keeps_its_reason():
    cell = score_cell(row(status="failed"), BUDGETS["pi"])
    assert cell.score == 0.0 and cell.parts.deploys == 0.0
    assert "failed (conversion)" in cell.notes[0]


def test_retention_above_one_is_clipped_and_agreement_stands_in_without_labels():
    assert score_cell(row(retention=1.02), BUDGETS["pi"]).parts.accuracy == 1.0
    no_labels = score_cell(row(retention=None, top1=0.96), BUDGETS["pi"])
    assert no_labels.parts.accuracy == pytest.approx(0.96)
    assert "top1_agreement 0.960" in no_labels.notes
    nothing = score_cell(row(retention=None, top1=None), BUDGETS["pi"])
    assert nothing.parts.accuracy == 0.0 and "no accuracy or agreement measured" in nothing.notes


def test_unmeasured_latency_counts_as_not_fitting():
    cell = score_cell(row(p99=float("nan")), BUDGETS["pi"])
    assert cell.parts.latency == 0.0 and "no p99 latency measured" in cell.notes


def test_variant_takes_its_best_format_per_target_and_mean_over_targets():
    frame = results_frame([
        row(fmt="onnx", target="pi", p99=40.0),        # 0.5
        row(fmt="tflite", target="pi", p99=20.0),      # 1.0  <- best on pi
        row(fmt="onnx", target="jetson", p99=20.0),    # 0.5  <- only one on jetson
    ])
    score = by_key(portability_scores(frame, BUDGETS))[("m", "reference")]
    assert score.score == pytest.approx(0.75)
    assert {c.target: c.format for c in score.per_target} == {"jetson": "onnx", "pi": "tflite"}
    assert score.latency == pytest.approx(0.75)
    assert score.deploys == 1.0 and score.weakest == "latency"


def test_target_where_nothing_deploys_counts_zero_but_parts_average_over_deployed():
    frame = results_frame([
        row(target="pi", retention=0.9),
        row(target="jetson", status="failed"),
        row(target="jetson", fmt="tflite", status="incompatible"),
    ])
    score = by_key(portability_scores(frame, BUDGETS))[("m", "reference")]
    assert score.score == pytest.approx(0.45)
    assert score.targets == ("jetson", "pi") and score.deployed_targets == ("pi",)
    assert score.deploys == pytest.approx(0.5)
    assert score.accuracy == pytest.approx(0.9)
    assert score.weakest == "deploys"
    assert "jetson:" in score.explain() and "unsupported op" not in score.explain()
    assert "failed (conversion)" in score.explain() and "incompatible" in score.explain()


def test_model_score_takes_best_variant_per_target():
    frame = results_frame([
        row(variant="reference", target="pi", p99=40.0),                 # 0.5
        row(variant="int8", target="pi", p99=10.0, retention=0.98),      # 0.98
        row(variant="reference", target="jetson", p99=5.0),              # 1.0
        row(variant="int8", target="jetson", status="failed"),           # 0
    ])
    scores = by_key(portability_scores(frame, BUDGETS))
    assert scores[("m", None)].score == pytest.approx((0.98 + 1.0) / 2)
    assert scores[("m", "reference")].score == pytest.approx(0.75)
    assert scores[("m", "int8")].score == pytest.approx(0.49)


def test_unknown_target_uses_default_budgets():
    frame = results_frame([row(target="unknown", p99=100.0)])
    (model_score, _) = portability_scores(frame, {})
    assert model_score.latency == pytest.approx(Budgets().latency_p99_ms / 100.0)


def test_recommendation_is_most_accurate_cell_that_fits():
    frame = results_frame([
        row(variant="reference", fmt="onnx", accuracy=0.95, p99=25.0),   # too slow for pi
        row(variant="int8", fmt="tflite", accuracy=0.93, p99=8.0),
        row(variant="pruned", fmt="onnx", accuracy=0.94, p99=12.0),
        row(variant="big", fmt="onnx", accuracy=0.99, p99=5.0, mem_mb=900.0),  # too big
    ])
    (rec,) = recommend(frame, BUDGETS)
    assert rec.fits and (rec.variant, rec.format) == ("pruned", "onnx")
    assert rec.accuracy == pytest.approx(0.94)
    assert "most accurate of 2" in rec.reason


def test_recommendation_none_fits_names_the_closest_miss():
    frame = results_frame([
        row(variant="reference", accuracy=0.95, p99=30.0),   # +50 %
        row(variant="int8", accuracy=0.93, p99=22.0),        # +10 %  <- closest
        row(variant="pruned", status="failed"),
    ])
    (rec,) = recommend(frame, BUDGETS)
    assert not rec.fits and rec.variant == "int8"
    assert rec.reason.startswith("none fits; closest miss:") and "p99 22.00 ms > 20 ms (+10%)" in rec.reason


def test_recommendation_when_nothing_ran():
    (rec,) = recommend(results_frame([row(status="failed"), row(fmt="tflite", status="lost")]), BUDGETS)
    assert not rec.fits and rec.cell_id is None
    assert rec.reason == "none fits; no cell ran (failed, lost)"


def test_pareto_front_keeps_only_undominated_points():
    points = [(10.0, 0.90), (5.0, 0.80), (20.0, 0.95), (12.0, 0.85), (5.0, 0.70), (25.0, 0.95)]
    assert pareto_front(points) == [1, 0, 2]
    assert pareto_front([]) == []


def test_parity_pivot_has_cells_by_target():
    frame = results_frame([
        row(fmt="onnx", target="pi", top1=1.0, max_abs_diff=1e-6, cosine_similarity=1.0),
        row(fmt="openvino", target="pi", top1=0.98, max_abs_diff=2e-3, cosine_similarity=0.9999),
        row(fmt="onnx", target="jetson", status="failed"),
    ])
    table = parity_table(frame)
    pivot = parity_pivot(table, "m", "top1_agreement")
    assert pivot.loc["reference/openvino", "pi"] == pytest.approx(0.98)
    assert math.isnan(pivot.loc["reference/onnx", "jetson"])
    assert parity_pivot(table, "m", "max_abs_diff").loc["reference/openvino", "pi"] == pytest.approx(2e-3)


def test_pairwise_parity_finds_cells_that_disagree():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(40, 10))
    flipped = reference.copy()
    flipped[0] = -flipped[0]                      # one prediction changes
    outputs = {"a": reference, "b": reference + 1e-7, "c": reference + 5e-3, "d": flipped, "other": flipped}
    pairs = {(p.cell_a, p.cell_b): p for p in pairwise_parity(outputs)}
    assert pairs[("a", "b")].top1_agreement == 1.0 and pairs[("a", "b")].max_abs_diff < 1e-6
    assert pairs[("a", "d")].top1_agreement == pytest.approx(39 / 40)
    groups = {"a": "m/ref", "b": "m/ref", "c": "m/ref", "d": "m/ref", "other": "m/int8"}
    found = {(d.cell_a, d.cell_b): d.reason for d in disagreements(list(pairs.values()), groups, atol=1e-4)}
    assert ("a", "b") not in found
    assert "max abs diff" in found[("a", "c")] and "top-1" not in found[("a", "c")]
    assert "top-1 agree on 97.5% of 40 samples" in found[("a", "d")]
    assert not any("other" in pair for pair in found)   # different variants are expected to differ

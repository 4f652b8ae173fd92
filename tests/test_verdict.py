"""The CI contract: exit codes of profile / farm run / gate, and how device errors become rows."""
from __future__ import annotations

import pytest

from harness.core.errors import ConnectError, DeviceBusy, HostKeyChanged, HostKeyUnknown
from harness.judge.verdict import (
    EXIT_CELLS_FAILED,
    EXIT_INFRASTRUCTURE,
    EXIT_PASS,
    GATE_FAIL,
    GATE_NOT_JUDGED,
    GATE_PASS,
    device_failure,
    gate_exit_code,
    run_exit_code,
    run_verdict,
)


def row(cell, status="ok", category=None):
    return {"cell_id": cell, "status": status, "error_category": category}


def test_measured_and_skipped_cells_exit_0():
    verdict = run_verdict([row("a"), row("b", "skipped", "unsupported_on_target")])
    assert verdict.exit_code == EXIT_PASS
    assert verdict.summary.startswith("OK: 1 of 2") and "1 skipped" in verdict.summary


@pytest.mark.parametrize("status,category", [("failed", "load_failed"), ("failed", "inference_failed"),
                                             ("failed", "crashed"), ("failed", "oom_killed"),
                                             ("failed", "timeout"), ("failed", "conversion_failed"),
                                             ("incompatible", "interface_mismatch")])
def test_model_failures_exit_1(status, category):
    verdict = run_verdict([row("a"), row("b", status, category)])
    assert verdict.exit_code == EXIT_CELLS_FAILED and verdict.model_failures == ("b",)


@pytest.mark.parametrize("status,category", [("lost", "device_unreachable"), ("lost", "device_lost"),
                                             ("failed", "device_busy"), ("failed", "host_key_changed"),
                                             ("failed", "upload_failed"), ("failed", "runtime_missing"),
                                             ("lost", "harness_error")])
def test_infrastructure_failures_exit_2(status, category):
    assert run_exit_code([row("a"), row("b", status, category)]) == EXIT_INFRASTRUCTURE


def test_infrastructure_outranks_model_failures_and_the_summary_says_both():
    verdict = run_verdict([row("a", "failed", "load_failed"), row("b", "lost", "device_lost")])
    assert verdict.exit_code == EXIT_INFRASTRUCTURE
    assert "1 of 2" in verdict.summary and "1 failed for model reasons" in verdict.summary


def test_a_planned_cell_with_no_row_is_not_a_pass():
    verdict = run_verdict([row("a")], missing=["b"])
    assert verdict.exit_code == EXIT_INFRASTRUCTURE and verdict.infrastructure_failures == ("b",)
    assert verdict.n_cells == 2
    # lost cells are listed in `missing` too (the pipeline's RunOutcome.missing): counted once
    assert run_verdict([row("a", "lost", "device_lost")], missing=["a"]).n_cells == 1


def test_an_empty_run_is_ok_only_when_nothing_was_planned():
    assert run_exit_code([]) == EXIT_PASS
    assert run_exit_code([], missing=["x"]) == EXIT_INFRASTRUCTURE


def test_exit_code_of_a_results_frame():
    from harness.schema.results import make_row, results_frame
    frame = results_frame([make_row(run_id="r", cell_id="a", model="m", variant="v", format="onnx", target="t",
                                    status="failed", error_category="crashed")])
    assert run_exit_code(frame) == EXIT_CELLS_FAILED


def test_changed_host_key_is_its_own_category_never_lost():
    assert device_failure(HostKeyChanged("[pi] host key CHANGED")) == ("failed", "host_key_changed")
    assert device_failure(HostKeyUnknown("[pi] host key unknown")) == ("lost", "device_unreachable")
    assert device_failure(ConnectError("refused")) == ("lost", "device_unreachable")
    assert device_failure(DeviceBusy("locked")) == ("failed", "device_busy")


def test_gate_exit_codes():
    assert gate_exit_code(True, 0, 5) == GATE_PASS
    assert gate_exit_code(False, 3, 5) == GATE_FAIL        # a violation is a verdict even beside noisy cells
    assert gate_exit_code(True, 1, 5) == GATE_NOT_JUDGED   # nothing failed but something needs a re-run
    assert gate_exit_code(True, 0, 0) == GATE_NOT_JUDGED   # nothing judged at all

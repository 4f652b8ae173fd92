"""The SQLite history store: recording runs, series, baselines, and the `history` command."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pytest

from harness.commands import history as history_command
from harness.core.errors import HarnessError
from harness.history.store import History, record_run
from harness.history.tables import DEFAULT_DB_PATH
from harness.schema.run_results import RunResults
from harness.schema.rundir import resolve_run
from harness.schema.results import make_row, results_frame
from harness.schema.rundir import RunDir


def write_run(reports: Path, run_id: str, p99: float = 5.0, failed: bool = False, seed: int = 0,
              tables: bool = True) -> RunDir:
    """A recorded run: an onnx cell with latency samples and a tflite cell (failed when asked)."""
    run = RunDir.create(run_id, reports)
    rng = np.random.default_rng(seed)
    for fmt, status in (("onnx", "ok"), ("tflite", "failed" if failed else "ok")):
        cell = f"m__reference__{fmt}__local"
        ok = status == "ok"
        row = make_row(run_id=run_id, cell_id=cell, model="m", variant="reference", format=fmt, target="local",
                       status=status, accuracy=0.95 if ok else None, latency_p99_ms=p99 if ok else None,
                       peak_rss_bytes=100e6 if ok else None, started_at=f"2026-11-2{seed % 10}T00:00:00Z",
                       error_category=None if ok else "runtime", error_message=None if ok else "crashed")
        run.write_cell({"row": row, "latencies_ms": (p99 * 0.8 * rng.lognormal(0, 0.05, 50)).tolist() if ok else []})
    if tables:
        run.write_tables(results_frame(run.rows()))
    return run


def test_record_run_stores_rows_samples_and_counts(tmp_path):
    run = write_run(tmp_path / "reports", "run-a", failed=True)
    info = record_run(RunResults.load(run), tmp_path / "h.sqlite")
    assert (info.run_id, info.n_cells, info.n_ok, info.n_failed, info.gate_passed) == ("run-a", 2, 1, 1, None)
    store = History(tmp_path / "h.sqlite")
    rows = {r["format"]: r for r in store.rows("run-a")}
    assert rows["onnx"]["latency_p99_ms"] == 5.0 and rows["tflite"]["status"] == "failed"
    samples = store.samples("run-a")
    assert list(samples) == ["m__reference__onnx__local"] and len(samples["m__reference__onnx__local"]) == 50
    assert info.started_at == "2026-11-20T00:00:00+00:00"  # kept as UTC, so that text order is time order


def test_series_follows_runs_in_order_with_gaps_for_failed_cells(tmp_path):
    db = tmp_path / "h.sqlite"
    for i, p99 in enumerate([5.0, 5.5, 6.0]):
        record_run(RunResults.load(write_run(tmp_path / "reports", f"run-{i}", p99=p99, failed=(i == 1), seed=i)), db)
    store = History(db)
    onnx = store.series("m", "local", "latency_p99_ms", fmt="onnx")
    assert [(p.run_id, p.value) for p in onnx] == [("run-0", 5.0), ("run-1", 5.5), ("run-2", 6.0)]
    tflite = store.series("m", "local", "latency_p99_ms", fmt="tflite")
    assert [p.value for p in tflite] == [5.0, None, 6.0] and tflite[1].status == "failed"
    assert store.series("m", "elsewhere", "accuracy") == []
    with pytest.raises(HarnessError, match="unknown metric 'p99'.*latency_p99_ms"):
        store.series("m", "local", "p99")


def test_recording_again_replaces_cells_but_keeps_order_and_verdict(tmp_path):
    db = tmp_path / "h.sqlite"
    first = record_run(RunResults.load(write_run(tmp_path / "reports", "run-a")), db, gate_passed=True)
    record_run(RunResults.load(write_run(tmp_path / "reports", "run-b", seed=1)), db)
    again = record_run(RunResults.load(write_run(tmp_path / "reports", "run-a", p99=7.0)), db)
    assert again.seq == first.seq and again.gate_passed is True
    store = History(db)
    assert [r.run_id for r in store.runs()] == ["run-a", "run-b"]
    assert [p.value for p in store.series("m", "local", "latency_p99_ms", fmt="onnx")] == [7.0, 5.0]


def test_baseline_is_the_last_run_that_passed_the_gate(tmp_path):
    db, reports = tmp_path / "h.sqlite", tmp_path / "reports"
    store = History(db)
    record_run(RunResults.load(write_run(reports, "r1")), db, gate_passed=True)
    record_run(RunResults.load(write_run(reports, "r2")), db, gate_passed=True)
    record_run(RunResults.load(write_run(reports, "r3")), db, gate_passed=False)
    record_run(RunResults.load(write_run(reports, "r4")), db)
    assert store.find_baseline("r4") == "r2"
    assert store.find_baseline("r2") == "r1"
    assert store.find_baseline("r1") is None
    assert store.find_baseline("not-recorded-yet") == "r2"
    assert store.find_baseline("r4", named="r3") == "r3"
    with pytest.raises(HarnessError, match="baseline run 'nope' is not in the history store.*r4"):
        store.find_baseline("r4", named="nope")


def test_without_any_gate_verdict_the_last_clean_run_is_the_baseline(tmp_path):
    db, reports = tmp_path / "h.sqlite", tmp_path / "reports"
    record_run(RunResults.load(write_run(reports, "r1")), db)
    record_run(RunResults.load(write_run(reports, "r2", failed=True)), db)
    record_run(RunResults.load(write_run(reports, "r3")), db)
    assert History(db).find_baseline("r3") == "r1"


def test_mark_gate_needs_a_recorded_run(tmp_path):
    store = History(tmp_path / "h.sqlite")
    with pytest.raises(HarnessError, match="record it first"):
        store.mark_gate("missing", True)


def test_resolve_run_latest_and_unknown_ids(tmp_path):
    reports = tmp_path / "reports"
    with pytest.raises(HarnessError, match="no run with a results.parquet"):
        resolve_run("latest", reports)
    write_run(reports, "older")
    newer = write_run(reports, "newer")
    os.utime(newer.root / "results.parquet", (time.time() + 10, time.time() + 10))
    write_run(reports, "unfinished", tables=False)
    assert resolve_run("latest", reports).run_id == "newer"
    assert resolve_run("older", reports).run_id == "older"
    with pytest.raises(HarnessError, match="typo: no such run directory; recent runs: newer, older, unfinished"):
        resolve_run("typo", reports)


def test_run_without_tables_is_read_from_its_cells(tmp_path):
    run = write_run(tmp_path / "reports", "partial", tables=False)
    assert sorted(RunResults.load(run).frame["format"]) == ["onnx", "tflite"]


def test_default_store_is_under_the_git_ignored_harness_dir():
    assert DEFAULT_DB_PATH == Path(".harness/history.sqlite")
    gitignore = (Path(__file__).resolve().parents[1] / ".gitignore").read_text()
    assert ".harness/" in gitignore.splitlines()


def run_cli(argv):
    parser = argparse.ArgumentParser()
    history_command.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_history_command_shows_series_and_regressions(tmp_path, capsys):
    db, reports = tmp_path / "h.sqlite", tmp_path / "reports"
    common = ["--db", str(db), "--reports-dir", str(reports)]
    write_run(reports, "r1", p99=5.0, seed=1)
    assert run_cli(["history", "--record", "r1", *common]) == 0
    write_run(reports, "r2", p99=6.0, seed=2)                # 20 % slower samples
    assert run_cli(["history", "--record", "r2", *common]) == 0
    assert run_cli(["history", "--model", "m", "--target", "local", "--format", "onnx", *common]) == 0
    out = capsys.readouterr().out
    assert "m / reference / onnx on local: latency_p99_ms" in out and "+20.0%" in out
    assert run_cli(["history", "--compare", "r2", *common]) == 1
    out = capsys.readouterr().out
    assert "r2 against baseline r1" in out and "REGRESSION latency" in out
    assert run_cli(["history", *common]) == 0
    assert "r1" in capsys.readouterr().out


def test_trend_figures_are_kept_when_a_run_is_recorded_and_filled_in_for_older_cells(tmp_path):
    """The trend page reads each cell's run-level latency figures, computed once from its samples: at recording,
    or at the first read for a cell recorded before they were kept."""
    from harness.judge.trends import latency_figures

    store = History(tmp_path / "h.sqlite")
    rng = np.random.default_rng(0)
    rows = [make_row(run_id="r1", cell_id=f"m__reference__{f}__local", model="m", variant="reference", format=f,
                     target="local", status="ok", threads=1) for f in ("onnx", "tflite")]
    samples = {r["cell_id"]: rng.lognormal(0, 0.1, 300) for r in rows}
    store.record("r1", rows, samples)
    with_samples = {c["row"]["cell_id"]: c for c in store.trend_cells()}
    for cell in store.trend_figure_cells():
        assert "samples" not in cell
        expected = latency_figures(cell["row"], with_samples[cell["row"]["cell_id"]]["samples"])
        assert cell["figures"] == pytest.approx(expected)
    with store.connect() as conn:  # as a store written before the figures were kept
        conn.execute("DELETE FROM trend_figures")
    for filled, read in zip(store.trend_figure_cells(), store.trend_cells()):
        assert filled["figures"] == pytest.approx(latency_figures(read["row"], read["samples"]))
    with store.connect() as conn:
        assert conn.execute("SELECT COUNT(*) AS n FROM trend_figures").fetchone()["n"] == 6  # stored again


def test_a_run_recorded_late_takes_its_place_by_start_time(tmp_path):
    """`harness history --record` of an older run (its history server was down that night) goes where it started."""
    db = tmp_path / "h.sqlite"
    store = History(db)
    for run_id, started in (("mon", "2026-12-01T02:00:00+00:00"), ("wed", "2026-12-03T02:00:00+00:00"),
                            ("tue", "2026-12-02T03:00:00+01:00")):  # Tuesday's night, recorded last
        store.record(run_id, [], {}, started_at=started)
    assert [r.run_id for r in store.runs()] == ["mon", "tue", "wed"]
    assert store.run("tue").seq == 2 and store.runs()[1].started_at == "2026-12-02T02:00:00+00:00"
    assert store.find_baseline("wed") is None or store.find_baseline("wed") == "tue"

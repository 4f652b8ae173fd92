"""What a nightly farm hits: series per runtime configuration, device_busy cells rerun by --resume, the resume hint
of a dask run names --scheduler."""
from __future__ import annotations

import argparse
import io
from types import SimpleNamespace

import numpy as np

from harness.commands import history as history_command
from harness.commands.profile import print_summary
from harness.history.store import History
from harness.run.collate import collate
from harness.schema.run_results import RunResults
from harness.run.plan import cells_to_run
from harness.schema.results import needs_rerun
from harness.schema.results import make_row
from harness.schema.rundir import RunDir


def _row(run_id, cell_id, status="ok", category=None, threads=1, options="", p99=5.0):
    ok = status == "ok"
    return make_row(run_id=run_id, cell_id=cell_id, model="m", variant="reference", format="onnx", target="local",
                    status=status, threads=threads, runtime_options=options, error_category=category,
                    error_message=None if ok else "it broke", latency_p99_ms=p99 if ok else None)


def test_resume_reruns_lost_and_device_busy_cells_but_not_model_failures(tmp_path):
    run = RunDir.create("busy", tmp_path)
    rows = {"a": _row("busy", "a"), "b": _row("busy", "b", "failed", "device_busy"),
            "c": _row("busy", "c", "lost", "device_lost"), "d": _row("busy", "d", "failed", "load_failed")}
    for row in rows.values():
        run.write_cell({"row": row, "latencies_ms": []})
    run.write_manifest({"planned_cells": sorted(rows)})
    planned = [SimpleNamespace(cell_id=c) for c in sorted(rows)]
    assert [c.cell_id for c in cells_to_run(run, planned, resume=True)] == ["b", "c"]
    assert needs_rerun(rows["b"]) and not needs_rerun(rows["d"])
    outcome = collate(run)
    assert sorted(outcome.missing) == ["b", "c"]
    out = io.StringIO()
    print_summary(outcome, out)
    assert "`harness run --resume busy`" in out.getvalue() and "device busy" in out.getvalue()


def test_the_resume_hint_names_the_scheduler_after_a_lost_worker(tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    run = RunDir.create("dask-run", tmp_path)
    for row in (_row("dask-run", "a"), _row("dask-run", "b", "lost", "worker_lost")):
        run.write_cell({"row": row, "latencies_ms": []})
    outcome = RunResults.load(run)
    given, unknown = io.StringIO(), io.StringIO()
    print_summary(outcome, given, scheduler="tcp://10.0.0.5:8786")
    print_summary(outcome, unknown)
    assert "`harness run --resume dask-run --scheduler tcp://10.0.0.5:8786`" in given.getvalue()
    assert "--scheduler tcp://SCHEDULER:PORT`" in unknown.getvalue()


def test_history_series_are_grouped_by_runtime_configuration(tmp_path, capsys):
    store = History(tmp_path / "h.sqlite")
    for night in range(3):
        rows = [_row(f"n{night}", "one", threads=1, p99=5.0 + night),
                _row(f"n{night}", "four", threads=4, p99=2.0 + night),
                _row(f"n{night}", "trt", options='{"providers":["TensorrtExecutionProvider"]}', p99=1.0)]
        store.record(f"n{night}", rows, {r["cell_id"]: np.full(20, 1.0) for r in rows})
    assert {p.runtime_config for p in store.series("m", "local", "latency_p99_ms")} == \
        {"threads 1", "threads 4", 'threads 1, {"providers":["TensorrtExecutionProvider"]}'}
    parser = argparse.ArgumentParser()
    history_command.register(parser.add_subparsers())
    args = parser.parse_args(["history", "--db", str(store.path), "--model", "m", "--target", "local"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.count("m / reference / onnx [threads 4] on local: latency_p99_ms") == 1
    assert out.count("m / reference / onnx [threads 1] on local") == 1
    assert "TensorrtExecutionProvider" in out

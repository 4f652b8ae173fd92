"""Per-cell baselines: each cell key is compared with its own newest passing measurement, wherever it was
recorded, so a farm that profiles and gates each model in its own job still judges every cell; a cell with
no baseline at all is named, never silently passed."""
from __future__ import annotations

import argparse

from harness.commands import gate as gate_command
from harness.history.store import History
from harness.judge.gate import NO_BASELINE_MESSAGE, GateInputs, Policy, TargetPolicy, evaluate
from harness.judge.regression import history_key
from harness.schema.results import make_row
from harness.schema.run_results import RunResults
from harness.schema.rundir import resolve_run
from test_gate import write_run

MB = 1024 * 1024
POLICY = "alpha: 0.01\ndefaults:\n  max_latency_regression: 0.05\n"


def model_rows(model: str, formats=("tflite", "onnx"), p99: float = 4.0, threads=None, noisy=False):
    return [make_row(run_id="r", cell_id=f"{model}__reference__{fmt}__local", model=model, variant="reference",
                     format=fmt, target="local", status="ok", accuracy=0.95, reference_accuracy=0.95,
                     accuracy_retention=1.0, top1_agreement=1.0, latency_p99_ms=p99, peak_rss_bytes=200 * MB,
                     threads=threads, noisy=noisy or None) for fmt in formats]


def run_gate(argv):
    parser = argparse.ArgumentParser()
    gate_command.register(parser.add_subparsers())
    args = parser.parse_args(["gate", *argv])
    return args.func(args)


def test_two_models_gated_in_alternating_runs_catch_a_slower_build_and_name_a_first_cell(tmp_path, capsys):
    reports, db = tmp_path / "reports", tmp_path / "h.sqlite"
    (tmp_path / "policy.yaml").write_text(POLICY)
    common = ["--policy", str(tmp_path / "policy.yaml"), "--reports-dir", str(reports), "--db", str(db),
              "--targets-dir", str(tmp_path)]
    codes, outs = {}, {}
    schedule = []
    for night in range(1, 6):
        schedule += [(f"alpha{night}", "alpha", 1.0), (f"beta{night}", "beta", 1.0)]
    # the new build of alpha is 50 % slower; beta is unchanged; then alpha gains a new format
    schedule += [("alpha6", "alpha", 1.5), ("beta6", "beta", 1.0)]
    for seed, (run_id, model, scale) in enumerate(schedule):
        formats = ("tflite", "onnx", "openvino") if run_id == "beta6" else ("tflite", "onnx")
        write_run(reports, run_id, model_rows(model, formats), scale=scale, seed=seed)
        codes[run_id] = run_gate(["--run", run_id, *common])
        outs[run_id] = capsys.readouterr().out
    # the first run of each model has no baseline: passed, but named, cell by cell
    for first in ("alpha1", "beta1"):
        assert codes[first] == 0 and "2 without a baseline" in outs[first], outs[first]
        assert outs[first].count("NO BASELINE [local] ") == 2 and NO_BASELINE_MESSAGE in outs[first]
    # every later run is judged against its own model's cells, recorded one run before (another model's run is
    # the newest passing one), never 'nothing to compare'
    assert all(codes[f"{m}{n}"] == 0 for m in ("alpha", "beta") for n in range(2, 6)), codes
    assert "baseline alpha4" in outs["alpha5"] and "NO BASELINE" not in outs["alpha5"]
    assert "max_latency_regression" in outs["beta5"] or "0 violation(s)" in outs["beta5"]
    # the 50 % slower build is caught, against alpha5, though beta5 passed after it
    assert codes["alpha6"] == 1, outs["alpha6"]
    assert "VIOLATION [local] max_latency_regression: alpha__reference__tflite__local" in outs["alpha6"]
    assert "baseline alpha5" in outs["alpha6"] and "baseline run alpha5" in outs["alpha6"]
    # beta's new openvino cell is named; its other cells are judged against beta5
    assert codes["beta6"] == 0, outs["beta6"]
    assert "NO BASELINE [local] beta__reference__openvino__local: no baseline yet: first run of this cell" \
        in outs["beta6"] and "1 without a baseline" in outs["beta6"]
    summary = (reports / "beta6" / "summary.md").read_text()
    assert "beta__reference__openvino__local" in summary and NO_BASELINE_MESSAGE in summary
    # five runs of beta's history measure its spread: the summary says how many series each figure can judge
    assert "### What the gate could judge" in summary and "median judges" in summary, summary
    # the failed alpha6 never becomes a baseline: the next alpha run is judged against alpha5 still
    store = History(db)
    rows = RunResults.load(resolve_run("alpha6", reports)).rows
    assert {b.run_id for b in store.cell_baselines("alpha7", rows).values()} == {"alpha5"}


def test_cell_baselines_skip_failed_runs_noisy_cells_and_other_runtime_configs(tmp_path):
    reports, store = tmp_path / "reports", History(tmp_path / "h.sqlite")
    plan = [("a1", model_rows("m"), True), ("a2", model_rows("m", threads=4), True),
            ("a3", model_rows("m", noisy=True), True), ("b1", model_rows("other"), True),
            ("a4", model_rows("m"), False)]
    for seed, (run_id, rows, passed) in enumerate(plan):
        run = write_run(reports, run_id, rows, seed=seed)
        results = RunResults.load(run)
        store.record(run_id, results.rows, results.latency_samples(), gate_passed=passed)
    candidate = model_rows("m") + model_rows("m", threads=4) + model_rows("new")
    found = store.cell_baselines("now", candidate)
    by_threads = {key[4]: b.run_id for key, b in found.items()}
    # threads unset: a1 (a4 failed its gate, a3's cells were noisy); 4 threads: a2; 'new' has none
    assert by_threads == {"": "a1", "4": "a2"}
    assert len(found) == 4 and all(b.samples is not None for b in found.values())
    assert not any(k[0] == "new" for k in found)


def test_no_baseline_cells_are_named_in_the_gate_text_when_regression_rules_apply():
    policy = Policy(defaults=TargetPolicy(max_latency_regression=0.05), source_path="p.yaml")
    rows = model_rows("m")
    result = evaluate(policy, rows, GateInputs(run_id="r", cell_baselines={}))
    assert result.passed and len(result.without_baseline) == 2
    text = "\n".join(result.lines())
    assert "2 without a baseline" in text and "NO BASELINE [local] m__reference__onnx__local" in text
    assert any("2 cell(s) without a baseline" in n for n in result.notes)
    # without regression rules there is nothing to name
    quiet = evaluate(Policy(defaults=TargetPolicy(min_accuracy_retention=0.9)), rows,
                     GateInputs(run_id="r", cell_baselines={}))
    assert not quiet.without_baseline
    assert history_key(rows[0])[:4] == ("m", "reference", "tflite", "local")

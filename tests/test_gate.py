"""The release gate: strict policy files, passing and failing recorded runs, JUnit XML, `harness gate`."""
from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from harness.commands import gate as gate_command
from harness.core.errors import ConfigError
from harness.judge.gate import Policy, TargetPolicy, GateInputs, evaluate, junit_xml, load_policy, write_junit
from harness.history.store import History
from harness.schema.run_results import RunResults
from harness.judge.regression import RunSpread, history_key
from harness.schema.results import make_row, results_frame
from harness.schema.rundir import RunDir
from harness.schema.targets import Budgets


def judge(policy, frame, budgets=None, **inputs):
    """The gate's verdict on a table, with GateInputs given as keywords."""
    return evaluate(policy, frame, GateInputs(budgets=budgets or {}, **inputs))


def load_run_table(run):
    return RunResults.load(run).frame


def load_latency_samples(run):
    return RunResults.load(run).latency_samples()

REPO = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
LOCAL = {"local": Budgets(latency_p99_ms=20.0, peak_memory_mb=600.0)}


def cell(fmt="onnx", variant="reference", target="local", status="ok", retention=1.0, p99=4.0, mem_mb=200.0,
         accuracy=0.95):
    ok = status == "ok"
    return make_row(run_id="r", cell_id=f"digits_cnn__{variant}__{fmt}__{target}", model="digits_cnn",
                    variant=variant, format=fmt, target=target, status=status,
                    accuracy=accuracy * retention if ok else None, reference_accuracy=accuracy if ok else None,
                    accuracy_retention=retention if ok else None, top1_agreement=1.0 if ok else None,
                    latency_p99_ms=p99 if ok else None, peak_rss_bytes=mem_mb * MB if ok else None,
                    error_category=None if ok else "conversion",
                    error_message=None if ok else "op not supported by the converter")


def write_run(reports: Path, run_id: str, rows, scale: float = 1.0, seed: int = 0, repeats: int = 3,
              manifest=None) -> RunDir:
    """A recorded run dir; ok cells get `repeats` x 100 samples around p99 / 1.3 times `scale`."""
    run = RunDir.create(run_id, reports)
    rng = np.random.default_rng(seed)
    for row in rows:
        row = dict(row, run_id=run_id)
        per_repeat = []
        if row["status"] == "ok":
            per_repeat = [(row["latency_p99_ms"] / 1.3 * scale * rng.lognormal(0, 0.08, 100)).tolist()
                          for _ in range(repeats)]
        record = {"row": row, "latencies_ms": [x for r in per_repeat for x in r]}
        if repeats > 1:
            record["repeat_latencies_ms"] = per_repeat
        run.write_cell(record)
    if manifest is not None:
        run.write_manifest(manifest)
    run.write_tables(results_frame(run.rows()))
    return run


def good_rows():
    return [cell("tflite", p99=3.0), cell("onnx"), cell("openvino", p99=5.0, mem_mb=350.0)]


def write_policy(tmp_path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- policy files
def test_default_policy_loads_and_merges_target_overrides():
    policy = load_policy(REPO / "policies" / "default.yaml")
    local = policy.for_target("local")
    assert local.required_formats == ("tflite", "onnx")
    assert local.min_accuracy_retention == policy.defaults.min_accuracy_retention
    assert policy.for_target("elsewhere").required_formats is None


@pytest.mark.parametrize("text, key, message", [
    ("targets:\n  local:\n    max_p99_ms: 20\n", "targets.local.max_p99_ms", "unknown field"),
    ("defaults:\n  min_accuracy_retention: high\n", "defaults.min_accuracy_retention", "expected a number"),
    ("defaults:\n  required_formats: onnx\n", "defaults.required_formats", "expected a list"),
    ("defaults:\n  required_formats: [onnx, coreml]\n", "defaults", "unknown format(s) ['coreml']"),
    ("targets:\n  local:\n    min_accuracy_retention: 97\n", "targets.local", "between 0 and 1"),
    ("basline: r1\n", "basline", "unknown field"),
])
def test_policy_mistakes_name_the_file_and_key(tmp_path, text, key, message):
    path = write_policy(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert info.value.path == str(path) and info.value.key == key
    assert message in str(info.value) and str(path) in str(info.value)


def test_policy_that_is_not_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"policy.yaml: is not valid YAML at line \d+"):
        load_policy(write_policy(tmp_path, "defaults:\n  x: [1,\n"))


# ---------------------------------------------------------------- evaluation
def test_default_policy_passes_a_healthy_default_run():
    policy = load_policy(REPO / "policies" / "default.yaml")
    result = judge(policy, results_frame(good_rows()), LOCAL, run_id="r")
    assert result.passed, result.lines()
    assert any("no baseline run found" in n for n in result.notes)


def test_each_rule_reports_its_violation():
    policy = Policy(defaults=TargetPolicy(min_accuracy_retention=0.98, max_latency_p99_ms=10.0,
                                          max_peak_memory_mb=300.0, required_formats=("tflite", "onnx")),
                    targets={"jetson": TargetPolicy()}, source_path="p.yaml")
    rows = [cell("onnx", retention=0.95), cell("openvino", p99=12.0, mem_mb=400.0), cell("tflite", status="failed")]
    result = judge(policy, results_frame(rows), LOCAL, run_id="r")
    got = {(v.rule, v.subject) for v in result.violations}
    assert got == {
        ("min_accuracy_retention", "digits_cnn__reference__onnx__local"),
        ("max_latency_p99_ms", "digits_cnn__reference__openvino__local"),
        ("max_peak_memory_mb", "digits_cnn__reference__openvino__local"),
        ("cell_status", "digits_cnn__reference__tflite__local"),
        ("required_formats", "digits_cnn/tflite"),
        ("target_present", "jetson"),
    }
    lines = "\n".join(result.lines())
    assert lines.startswith("gate FAIL") and "6 violation(s)" in lines
    assert "accuracy_retention 0.9500 (minimum 0.98)" in lines
    assert "no ok tflite cell (failed)" in lines and "op not supported by the converter" in lines


def test_incompatible_cells_and_unchecked_variants_do_not_fail():
    policy = Policy(defaults=TargetPolicy(min_accuracy_retention=0.99, variants=("reference",)))
    rows = [cell("onnx"), cell("tflite", status="incompatible"), cell("onnx", variant="int8", retention=0.5)]
    assert judge(policy, results_frame(rows), LOCAL).passed


def test_target_budgets_are_used_when_asked():
    policy = Policy(defaults=TargetPolicy(use_target_budgets=True))
    slow = results_frame([cell("onnx", p99=25.0)])
    (violation,) = judge(policy, slow, LOCAL).violations
    assert violation.rule == "max_latency_p99_ms" and "(maximum 20 ms)" in violation.message
    assert judge(Policy(defaults=TargetPolicy(use_target_budgets=True, max_latency_p99_ms=30.0)), slow,
                    LOCAL).passed


def test_empty_run_fails():
    result = judge(Policy(), results_frame([]), {})
    assert not result.passed and result.violations[0].rule == "cells_present"


def test_regression_rules_against_a_recorded_baseline(tmp_path):
    policy = Policy(defaults=TargetPolicy(max_latency_regression=0.05, max_accuracy_drop=0.01,
                                          max_memory_regression=0.2))
    base = write_run(tmp_path, "base", good_rows(), seed=1)
    same = write_run(tmp_path, "same", good_rows(), seed=2)
    worse_rows = [cell("tflite", p99=3.0, retention=0.97), cell("onnx", mem_mb=300.0), cell("openvino", p99=5.0,
                                                                                              mem_mb=350.0)]
    worse = write_run(tmp_path, "worse", worse_rows, scale=1.10, seed=3)
    kwargs = dict(baseline_rows=load_run_table(base).to_dict(orient="records"),
                  baseline_samples=load_latency_samples(base), baseline_id="base")
    ok = judge(policy, load_run_table(same), LOCAL, samples=load_latency_samples(same), **kwargs)
    assert ok.passed and ok.baseline_id == "base"
    assert sum(c.rule == "max_latency_regression" for c in ok.checks) == 3
    bad = judge(policy, load_run_table(worse), LOCAL, samples=load_latency_samples(worse), **kwargs)
    got = {(v.rule, v.subject.split("__")[2]) for v in bad.violations}
    # a uniform 10 % slowdown moves the median, the mean and the p90 alike: each figure's rule catches it
    latency = {(rule, fmt) for rule in ("max_latency_regression", "max_latency_regression.mean",
                                        "max_latency_regression.p90") for fmt in ("tflite", "onnx", "openvino")}
    assert got == latency | {("max_accuracy_drop", "tflite"), ("max_memory_regression", "onnx")}


def test_one_repeat_without_history_is_judged_against_an_assumed_spread_and_with_history_against_it(tmp_path):
    policy = Policy(defaults=TargetPolicy(max_latency_regression=0.05))
    base = write_run(tmp_path, "base", good_rows(), seed=1, repeats=1)
    worse = write_run(tmp_path, "worse", good_rows(), scale=1.10, seed=3, repeats=1)
    kwargs = dict(baseline_rows=load_run_table(base).to_dict(orient="records"),
                  baseline_samples=load_latency_samples(base), baseline_id="base",
                  samples=load_latency_samples(worse))
    unknown = judge(policy, load_run_table(worse), LOCAL, **kwargs)
    assert unknown.passed, "a 10 % change is within what an unmeasured 3 % run-to-run drift can do"
    assert all("assumed CV 3%" in c.message for c in unknown.checks if c.rule == "max_latency_regression")
    rows = load_run_table(worse).to_dict(orient="records")
    quiet_history = {history_key(r): RunSpread(cv=0.01, runs=12, df=11) for r in rows}
    known = judge(policy, load_run_table(worse), LOCAL, history=quiet_history, **kwargs)
    assert {v.rule for v in known.violations} == {"max_latency_regression"} and len(known.violations) == 3
    assert "between-run CV 1.0% over 12 runs" in known.violations[0].message


def test_noisy_cells_are_not_judged_and_the_gate_says_re_run(tmp_path):
    rows = good_rows()
    rows[1] = dict(rows[1], noisy=True, noise_reasons="load 3.2 per CPU > 0.5", latency_p99_ms=80.0)
    result = judge(Policy(defaults=TargetPolicy(max_latency_p99_ms=20.0)), rows, LOCAL, run_id="r")
    assert result.passed and result.exit_code == 2 and result.verdict == "NOT JUDGED"
    (skipped,) = result.not_judged
    assert skipped.rule == "quiet_device" and "load 3.2 per CPU" in skipped.message
    assert "re-run" in "\n".join(result.lines())
    # a violation elsewhere is still a verdict
    rows[0] = dict(rows[0], latency_p99_ms=50.0)
    assert judge(Policy(defaults=TargetPolicy(max_latency_p99_ms=20.0)), rows, LOCAL).exit_code == 1
    assert judge(Policy(defaults=TargetPolicy(max_latency_p99_ms=20.0)), good_rows(), LOCAL).exit_code == 0


def test_junit_xml_lists_every_check_and_each_failure(tmp_path):
    policy = Policy(defaults=TargetPolicy(max_latency_p99_ms=4.5), source_path="p.yaml")
    result = judge(policy, results_frame(good_rows()), LOCAL, run_id="r")
    path = write_junit(result, tmp_path / "out" / "gate.junit.xml")
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites" and root.get("failures") == "1"
    assert int(root.get("tests")) == len(result.checks)
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "gate.local"
    (failure,) = suite.iter("failure")
    assert failure.get("type") == "max_latency_p99_ms" and "5.00 ms (maximum 4.5 ms)" in failure.get("message")
    assert junit_xml(result) == path.read_text()


# ---------------------------------------------------------------- `harness gate`
def run_gate(argv):
    parser = argparse.ArgumentParser()
    gate_command.register(parser.add_subparsers())
    args = parser.parse_args(["gate", *argv])
    return args.func(args)


def test_gate_command_passes_then_catches_a_slowdown(tmp_path, capsys):
    reports, db = tmp_path / "reports", tmp_path / "h.sqlite"
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "local.yaml").write_text("name: local\nbudgets:\n  latency_p99_ms: 20\n  peak_memory_mb: 600\n")
    common = ["--policy", str(REPO / "policies" / "default.yaml"), "--reports-dir", str(reports), "--db", str(db),
              "--targets-dir", str(targets)]
    write_run(reports, "night1", good_rows(), seed=1)
    assert run_gate(["--run", "night1", *common]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gate PASS: run night1") and "baseline none" in out
    assert (reports / "night1" / "gate.junit.xml").exists()
    assert History(db).run("night1").gate_passed is True

    write_run(reports, "night2", good_rows(), scale=1.10, seed=2)
    assert run_gate(["--run", "night2", *common]) == 1
    out = capsys.readouterr().out
    assert "gate FAIL: run night2" in out and "baseline night1" in out
    assert out.count("VIOLATION [local] max_latency_regression: ") == 3
    assert out.count("VIOLATION [local] max_latency_regression.mean: ") == 3
    assert out.count("VIOLATION [local] max_latency_regression.p90: ") == 3
    assert History(db).run("night2").gate_passed is False

    write_run(reports, "night3", good_rows(), seed=3)   # compared with night1, the last passing run
    assert run_gate(["--run", "latest", "--junit", str(tmp_path / "j.xml"), *common]) == 0
    assert "baseline night1" in capsys.readouterr().out
    assert ET.parse(tmp_path / "j.xml").getroot().get("failures") == "0"


def test_gate_judges_budgets_recorded_in_the_run_not_todays_target_files(tmp_path, capsys):
    reports, db, targets = tmp_path / "reports", tmp_path / "h.sqlite", tmp_path / "targets"
    targets.mkdir()
    (targets / "local.yaml").write_text("name: local\nbudgets:\n  latency_p99_ms: 2\n  peak_memory_mb: 600\n")
    policy = write_policy(tmp_path, "defaults:\n  use_target_budgets: true\n")
    common = ["--policy", str(policy), "--reports-dir", str(reports), "--db", str(db), "--targets-dir", str(targets)]
    spec = {"name": "local", "budgets": {"latency_p99_ms": 20.0, "peak_memory_mb": 600.0}}
    write_run(reports, "recorded", good_rows(), manifest={"run_id": "recorded", "target_specs": [spec]})
    assert run_gate(["--run", "recorded", *common]) == 0     # today's 2 ms budget is not what the run promised
    assert "today's" not in capsys.readouterr().out
    write_run(reports, "old", good_rows())                    # made before manifests kept target_specs
    assert run_gate(["--run", "old", *common]) == 1
    out = capsys.readouterr().out
    assert "(maximum 2 ms)" in out and "did not record its budgets" in out


def test_gate_command_exits_2_when_cells_are_noisy(tmp_path, capsys):
    reports = tmp_path / "reports"
    rows = [dict(r, noisy=True, noise_reasons="throttled (vcgencmd 0x4)") if r["format"] == "onnx" else r
            for r in good_rows()]
    write_run(reports, "busy", rows)
    common = ["--policy", str(REPO / "policies" / "default.yaml"), "--reports-dir", str(reports),
              "--db", str(tmp_path / "h.sqlite"), "--targets-dir", str(tmp_path)]
    assert run_gate(["--run", "busy", *common]) == 2
    out = capsys.readouterr().out
    assert out.startswith("gate NOT JUDGED: run busy") and "throttled (vcgencmd 0x4)" in out
    assert History(tmp_path / "h.sqlite").run("busy").gate_passed is None, "an unjudged run is never a baseline"


def test_gate_command_with_a_broken_policy_raises_config_error(tmp_path):
    write_run(tmp_path / "reports", "r", good_rows())
    policy = write_policy(tmp_path, "defaults:\n  max_latency_p99: 5\n")
    with pytest.raises(ConfigError, match="policy.yaml: field 'defaults.max_latency_p99': unknown field"):
        run_gate(["--policy", str(policy), "--run", "r", "--reports-dir", str(tmp_path / "reports"),
                  "--db", str(tmp_path / "h.sqlite")])

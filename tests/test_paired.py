"""Paired runs (issue 13): the previous release's file measured in the same run as the new one, interleaved,
and the gate judging the new file against it. Real ONNX files, run by ONNX Runtime on this machine."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from harness.schema.pairing import baseline_name, interleave, split_rows
from helpers import ROOT

HARNESS = str(ROOT / ".venv" / "bin" / "harness")
QUIET_OFF = ("quiet:\n  max_other_busy_cpus: null\n  max_load_per_cpu: null\n  max_temperature_c: null\n"
             "  fail_on_throttling: false\n  max_reference_drift: null\n")
POLICY = "alpha: 0.01\ndefaults:\n  max_latency_regression: 0.05\n  max_accuracy_drop: 0.5\n"


def matmul_chain(path: Path, depth: int, width: int = 256) -> Path:
    """x [1, width] -> `depth` x (MatMul, Tanh) -> y: the same interface at any cost."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(depth)
    nodes, inits, last = [], [], "x"
    for k in range(depth):
        w = (rng.randn(width, width) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        nodes += [helper.make_node("MatMul", [last, f"w{k}"], [f"m{k}"]),
                  helper.make_node("Tanh", [f"m{k}"], [f"t{k}" if k < depth - 1 else "y"])]
        last = f"t{k}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([HARNESS, *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


def paired_gate(tmp_path: Path, candidate: Path, baseline: Path, run_id: str) -> subprocess.CompletedProcess:
    reports = tmp_path / "reports"
    # this machine, with the quiet-device guard off: the test is about pairing, and a busy CI host would
    # otherwise (rightly) make the gate answer "not judged"
    target = tmp_path / "local.yaml"
    target.write_text((ROOT / "targets" / "local.yaml").read_text() + QUIET_OFF)
    profiled = run("profile", "--model-file", str(candidate), "--baseline-model-file", str(baseline),
                   "-t", str(target), "--runtime-config", "onnx", "--repeats", "3", "--min-duration", "0.1",
                   "--no-profile", "--no-report", "-q", "--reports-dir", str(reports), "--run-id", run_id)
    assert profiled.returncode == 0, profiled.stdout[-3000:] + profiled.stderr[-3000:]
    manifest = json.loads((reports / run_id / "manifest.json").read_text())
    assert manifest["paired_baselines"] == {baseline_name(candidate.stem): candidate.stem}
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return run("gate", "--policy", str(policy), "--run", run_id, "--reports-dir", str(reports),
               "--db", str(tmp_path / "history.sqlite"), "--no-record", "--junit", str(tmp_path / "gate.xml"))


def test_a_slower_candidate_fails_the_gate_against_its_baseline_measured_in_the_same_run(tmp_path):
    fast, slow = matmul_chain(tmp_path / "fast.onnx", 1), matmul_chain(tmp_path / "slow.onnx", 40)
    before = {p: p.read_bytes() for p in (fast, slow)}
    gate = paired_gate(tmp_path, candidate=slow, baseline=fast, run_id="slower")
    assert gate.returncode == 1, gate.stdout
    violations = [ln for ln in gate.stdout.splitlines() if "VIOLATION" in ln]
    assert violations and all("max_latency_regression" in ln for ln in violations), gate.stdout
    assert "paired" in gate.stdout.splitlines()[0] and "noise: paired rounds" in violations[0], gate.stdout
    # the baseline twin is the reference the candidate is judged against, never a cell the gate judges itself
    assert "fast.baseline" not in "\n".join(violations)
    assert {p: p.read_bytes() for p in (fast, slow)} == before  # the user's files are untouched


def test_a_faster_candidate_passes(tmp_path):
    fast, slow = matmul_chain(tmp_path / "fast.onnx", 1), matmul_chain(tmp_path / "slow.onnx", 40)
    gate = paired_gate(tmp_path, candidate=fast, baseline=slow, run_id="faster")
    assert gate.returncode == 0, gate.stdout
    assert "max_latency_regression" not in "\n".join(ln for ln in gate.stdout.splitlines() if "VIOLATION" in ln)


def test_unequal_counts_of_model_and_baseline_files_are_one_clear_line(tmp_path):
    one = matmul_chain(tmp_path / "one.onnx", 1)
    result = run("profile", "--model-file", str(one), "--baseline-model-file", str(one),
                 "--baseline-model-file", str(one), "--reports-dir", str(tmp_path / "r"), "-q")
    assert result.returncode == 3, result.stdout + result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--baseline-model-file: 2 given for 1 --model-file" in lines[0], result.stderr


class _Artifact:
    def __init__(self, model: str, variant: str, fmt: str) -> None:
        self.model, self.variant, self.format = model, variant, fmt

    def __repr__(self) -> str:
        return f"{self.model}/{self.variant}/{self.format}"


def test_each_twin_follows_its_candidate_and_rows_split_into_run_and_baseline():
    built = [_Artifact("m", "reference", "onnx"), _Artifact("m", "reference", "openvino"),
             _Artifact("m.baseline", "reference", "onnx"), _Artifact("m.baseline", "reference", "openvino"),
             _Artifact("m.baseline", "reference", "tflite")]
    order = [repr(a) for a in interleave(built, {"m.baseline": "m"})]
    assert order == ["m/reference/onnx", "m.baseline/reference/onnx", "m/reference/openvino",
                     "m.baseline/reference/openvino", "m.baseline/reference/tflite"]
    run, base = split_rows([{"model": "m", "cell_id": "a"}, {"model": "m.baseline", "cell_id": "b"}],
                           {"m.baseline": "m"})
    assert run == [{"model": "m", "cell_id": "a"}] and base == [{"model": "m", "cell_id": "b"}]

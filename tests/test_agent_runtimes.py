"""The device agent against each format's real runtime on real converted model files.

The agent runs as a separate process, as it does on a device, and must not import the harness.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from harness.judge.evaluate import read_outputs
import pytest

from helpers import ROOT, artifact_for, digits_build

AGENT = ROOT / "harness" / "agent" / "agent.py"
OV_F32 = json.dumps({"name": "ov-f32", "options": {"precision": "f32"}})
pytestmark = pytest.mark.slow


def run_agent(tmp_path, artifact, *extra):
    prepared, _ = digits_build()
    result, outputs = tmp_path / "result.json", tmp_path / "outputs.npz"
    argv = [sys.executable, str(AGENT), "run", "--model", artifact.files[0], "--format", artifact.format,
            "--inputs", str(prepared.eval_inputs_path), "--result", str(result), "--outputs", str(outputs),
            "--warmup", "3", "--iterations", "25", "--min-duration", "0", "--threads", "1", *extra]
    if artifact.format == "openvino":
        argv += ["--weights", artifact.files[1]]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return proc, json.loads(result.read_text()), outputs


@pytest.mark.parametrize("fmt", ["tflite", "onnx", "openvino"])
def test_agent_measures_and_returns_outputs(tmp_path, fmt):
    prepared, _ = digits_build()
    proc, doc, outputs = run_agent(tmp_path, artifact_for(fmt), *(["--runtime-config", OV_F32] if fmt == "openvino" else []))
    assert proc.returncode == 0, proc.stderr
    assert doc["status"] == "ok"
    assert doc["runtime"] in {"tflite": {"tflite-runtime", "ai-edge-litert", "tensorflow"},
                              "onnx": {"onnxruntime"}, "openvino": {"openvino"}}[fmt]
    assert doc["runtime_version"]
    # --min-duration 0: the count alone decides; a ~20 us model may be timed in blocks of a few iterations
    assert doc["timed_iterations"] >= 25 and doc["warmup_iterations"] == 3
    assert len(doc["latencies_ms"]) * doc["block_size"] == doc["timed_iterations"]
    assert set(doc["conditions"]) == {"before", "after"} and doc["conditions"]["after"]["cpu_count"] >= 1
    lat = doc["latency"]
    assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert lat["p50_ms"] == pytest.approx(float(np.percentile(doc["latencies_ms"], 50)))
    assert doc["load_ms"] > 0 and doc["first_inference_ms"] > 0
    assert doc["peak_rss_bytes"] >= doc["baseline_rss_bytes"] > 10 * 2**20
    assert doc["rss_increase_bytes"] == doc["peak_rss_bytes"] - doc["baseline_rss_bytes"]
    got = read_outputs(outputs)["logits"]
    reference = read_outputs(prepared.reference_outputs_path)["logits"]
    assert got.shape == reference.shape == (len(reference), 1, 10)  # samples first, each the whole [1, 10] output
    got, reference = got[:, 0], reference[:, 0]
    # fp32 in every runtime (OpenVINO pinned to f32): outputs match the framework closely
    assert np.abs(got - reference).max() < 1e-3
    assert (got.argmax(1) == reference.argmax(1)).mean() == 1.0


def test_agent_reports_a_model_the_runtime_rejects(tmp_path):
    bogus = tmp_path / "not_a_model.onnx"
    bogus.write_bytes(b"this is not an ONNX file")
    prepared, _ = digits_build()
    result = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(AGENT), "run", "--model", str(bogus), "--format", "onnx",
                           "--inputs", str(prepared.eval_inputs_path), "--result", str(result)],
                          capture_output=True, text=True, timeout=60)
    doc = json.loads(result.read_text())
    assert proc.returncode == 2
    assert doc["status"] == "error" and doc["error_category"] == "load_failed"
    assert "not_a_model.onnx" in doc["error_message"]


def test_agent_does_not_import_harness():
    source = AGENT.read_text()
    assert "import harness" not in source and "from harness" not in source
    # and it compiles for old Pythons' syntax: no walrus, no match statements
    assert ":=" not in source and "\nmatch " not in source


def test_agent_probe_lists_runtimes(tmp_path):
    proc = subprocess.run([sys.executable, str(AGENT), "probe"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert list(tmp_path.iterdir()) == [], "a probe run by hand (no --workdir) writes nothing where it runs"
    info = json.loads(proc.stdout)
    assert info["python"].count(".") == 2 and info["numpy"]
    assert set(info["runtimes"]) == {"tflite", "onnx", "openvino", "torch"}
    assert all(r["available"] for r in info["runtimes"].values())
    assert info["mem_total_bytes"] > 0 and info["cpu_count"] >= 1


def _old_pythons():
    import glob
    return sorted(glob.glob("/root/.pyenv/versions/3.[678].*/bin/python3.[678]")) + \
        [p for p in ("/usr/bin/python3",) if Path(p).exists()]


@pytest.mark.parametrize("python", _old_pythons() or [pytest.param(None, marks=pytest.mark.skip(
    reason="no Python 3.6-3.8 on this machine to check the agent on"))])
def test_agent_runs_on_old_pythons_without_numpy_or_runtimes(python):
    """Real devices run old Pythons: the agent must at least start and probe there, and say what is missing."""
    proc = subprocess.run([python, str(AGENT), "probe"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["python"].startswith(Path(python).name.replace("python", "")[:3]) or python == "/usr/bin/python3"
    for runtime in info["runtimes"].values():
        assert runtime["available"] or "not importable" in runtime["error"] or "no TFLite runtime" in runtime["error"]

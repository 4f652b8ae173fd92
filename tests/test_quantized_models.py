"""Quantized models as they come (issue 31): a fully int8 TFLite classifier nobody here made, with data saved the
natural way, profiled through the CLI as a user runs it; and the pure pieces underneath (dequantized parity,
samples on the leading axis, float data quantized with the input's scale, the built-in `local` target)."""
from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import real_files
from helpers import ROOT, rows_by_variant_format, the_run_dir

from harness.agent import agent as device_agent
from harness.judge.evaluate import ScoringSpec, score_outputs
from harness.prepare.data import conform, samples_on_leading_axis
from harness.schema.interface import Interface, TensorSpec


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a process of its own, with a cache of its own (cold: everything is built by this run)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args, "--reports-dir", str(tmp_path / "reports"),
                           "--warmup", "1", "--iterations", "5"], capture_output=True, text=True, cwd=ROOT,
                          timeout=900, env=env)


@pytest.fixture(scope="module")
def float_data_run(tmp_path_factory):
    """--variants all on the int8 model, its images saved as float32 (n, 8, 8, 1) with n labels."""
    tmp_path = tmp_path_factory.mktemp("int8-float-data")
    model, images, labels = real_files.int8_digits()
    np.savez(tmp_path / "eval.npz", image=images, labels=labels)
    result = _cli(tmp_path, "profile", "--model-file", str(model), "--data", str(tmp_path / "eval.npz"),
                  "--variants", "all")
    assert result.returncode == 0, result.stderr[-4000:]
    return result, the_run_dir(tmp_path)


@pytest.mark.slow
def test_converted_int8_cells_are_compared_dequantized_and_agree_with_the_source(float_data_run):
    result, run = float_data_run
    rows = rows_by_variant_format(run)
    tflite, onnx, openvino = (rows[("reference", f)] for f in ("tflite", "onnx", "openvino"))
    assert tflite["outputs_dequantized"] is None  # LiteRT's agent dequantizes the source's own outputs
    for row in (onnx, openvino):
        assert row["status"] == "ok" and "logits (scale" in row["outputs_dequantized"]
        assert row["accuracy"] == tflite["accuracy"] and row["output_snr_db"] > 40, row
    assert onnx["max_abs_diff"] == 0.0  # tf2onnx keeps the int8 kernels: bit-exact once dequantized
    summary = (run / "summary.md").read_text()
    disagreeing = summary.split("### Cells that disagree with each other")[1] if "disagree" in summary else ""
    assert "reference__onnx" not in disagreeing and "reference__openvino" not in disagreeing, summary
    assert "int8 outputs compared dequantized" in result.stderr
    notes = " ".join(json.loads((run / "manifest.json").read_text())["data"]["int8_digits"])
    assert "parity compares every cell on the dequantized values" in notes


@pytest.mark.slow
def test_float_data_for_an_int8_input_is_quantized_with_its_scale_and_the_run_says_so(float_data_run):
    result, run = float_data_run
    said = [ln for ln in result.stderr.splitlines() if "quantized to the model's int8" in ln]
    assert len(said) == 1 and "scale 0.00392157 and zero point -128" in said[0], result.stderr[-3000:]
    assert "quantized to the model's int8" in html.unescape((run / "index.html").read_text())
    # 200 samples of (200, 8, 8, 1) with 200 labels: the leading axis is the samples, each a batch of 1
    assert any("the leading axis of image holds 200 samples" in ln for ln in result.stderr.splitlines())


@pytest.mark.slow
def test_the_calibration_split_is_said_with_its_counts_and_how_to_keep_the_full_set(float_data_run):
    result, run = float_data_run
    said = [ln for ln in result.stderr.splitlines() if "calibration split:" in ln]
    assert len(said) == 1 and "100 of the 200 samples" in said[0] and "--calibration FILE" in said[0], said
    assert rows_by_variant_format(run)[("reference", "tflite")]["n_eval_samples"] == 100
    summary = (run / "summary.md").read_text()
    assert "calibration split: 100 of the 200 samples" in summary and "--calibration FILE" in summary
    assert "calibration split: 100 of the 200" in (run / "index.html").read_text()


@pytest.mark.slow
def test_int8_variants_of_an_int8_source_are_named_a_requantization(float_data_run):
    result, run = float_data_run
    for variant in ("ort_int8", "ov_int8"):
        said = [ln for ln in result.stderr.splitlines() if f"int8_digits/{variant}: re-quantization" in ln]
        assert len(said) == 1, result.stderr[-3000:]
        assert f"re-quantization: {variant} quantizes an already-quantized source" in (run / "summary.md").read_text()


@pytest.mark.slow
def test_the_cache_line_counts_what_this_run_built_and_library_chatter_stays_off_the_terminal(float_data_run):
    result, run = float_data_run
    terminal = result.stderr + result.stdout
    built = [ln for ln in terminal.splitlines() if "cache:" in ln]
    # cold cache: tflite (copied), onnx and openvino of the reference, ort_int8 and ov_int8: all made by this run
    assert len(built) == 1 and "5 artifacts built" in built[0] and "0 reused" in built[0], built
    for chatter in ("Statistics collection", "Expected bias", "pre-processing before quantization",
                    "tf.lite.Interpreter is deprecated", "Created TensorFlow Lite XNNPACK"):
        assert chatter not in terminal, chatter
    assert "Expected bias" in (run / "harness.log").read_text()


@pytest.mark.slow
def test_int8_data_saved_the_natural_way_runs_as_its_samples(tmp_path):
    model, images, labels = real_files.int8_digits()
    codes = np.clip(np.round(images / 0.003921568859368563 - 128), -128, 127).astype(np.int8)
    np.savez(tmp_path / "eval.npz", image=codes, labels=labels)
    result = _cli(tmp_path, "profile", "--model-file", str(model), "--data", str(tmp_path / "eval.npz"),
                  "--formats", "tflite")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "quantized to the model's int8" not in result.stderr  # int8 data goes in as it is
    row = rows_by_variant_format(the_run_dir(tmp_path))[("reference", "tflite")]
    assert row["n_eval_samples"] == 200 and row["accuracy"] > 0.8


# ---------------------------------------------------------------- the pure pieces
def test_integer_outputs_are_scored_on_the_sources_real_scale():
    rng = np.random.default_rng(0)
    codes = rng.integers(-128, 128, (20, 1, 10)).astype(np.int8)
    scale, zero_point = 0.0770492, 58
    reference = {"logits": (codes.astype("float32") - zero_point) * scale}
    spec = ScoringSpec(output_quantization=(("logits", (scale, zero_point)),))
    labels = reference["logits"].reshape(20, 10).argmax(axis=1)
    raw, _ = score_outputs({"StatefulPartitionedCall:0": codes}, reference, labels, ScoringSpec(), None)
    assert raw["max_abs_diff"] > 100 and raw["output_snr_db"] < 0  # the bug: codes against reals
    row, per_output = score_outputs({"StatefulPartitionedCall:0": codes}, reference, labels, spec, None)
    assert row["max_abs_diff"] == 0.0 and row["accuracy"] == 1.0 and per_output["logits"]["dequantized"]
    assert "logits (scale 0.0770492, zero point 58)" in row["outputs_dequantized"]
    floats, _ = score_outputs(reference, reference, labels, spec, None)  # float outputs stay as they are
    assert "outputs_dequantized" not in floats and floats["max_abs_diff"] == 0.0


def _int8_interface(batch) -> Interface:
    return Interface((TensorSpec("image", (batch, 8, 8, 1), "int8", (0.5, -3)),),
                     (TensorSpec("logits", (batch, 10), "int8", (0.1, 0)),))


@pytest.mark.parametrize("batch", [1, None])
def test_the_leading_axis_is_the_samples_when_it_matches_the_labels(batch):
    images, labels = np.zeros((30, 8, 8, 1), np.float32), np.arange(30) % 10
    arrays, notes = samples_on_leading_axis(_int8_interface(batch), {"image": images}, labels, {})
    assert arrays["image"].shape == (30, 1, 8, 8, 1) and "holds 30 samples" in notes[0]
    # labels of another count, no labels, or a shape that fixes another batch: the data stays one batch
    for other_labels, shapes in ((np.arange(29), {}), (None, {}), (labels, {"image": (30, 8, 8, 1)})):
        same, said = samples_on_leading_axis(_int8_interface(batch), {"image": images}, other_labels, shapes)
        assert same["image"].shape == (30, 8, 8, 1) and not said


def test_float_data_for_an_int8_input_is_quantized_as_the_agent_does_and_int8_data_is_kept():
    interface = Interface((TensorSpec("image", (1, 4), "int8", (0.5, -3)),), ())
    floats = np.array([[[0.0, 1.0, 100.0, -100.0]]], np.float32)
    data = conform(interface, {"image": floats}, None, "eval.npz", "eval.npz")
    expected = device_agent._quantize(floats, np.dtype("int8"), 0.5, -3)
    assert data.arrays["image"].dtype == np.int8 and np.array_equal(data.arrays["image"], expected)
    assert data.arrays["image"].tolist() == [[[-3, -1, 127, -128]]]
    codes = np.array([[[5, 6, 7, 8]]], np.int8)
    assert np.array_equal(conform(interface, {"image": codes}, None, "e", "e").arrays["image"], codes)
    plain = Interface((TensorSpec("image", (1, 4), "int8"),), ())  # no scale: still refused
    with pytest.raises(Exception, match="save it as int8"):
        conform(plain, {"image": floats}, None, "eval.npz", "eval.npz")


def test_the_built_in_local_stays_when_targets_holds_other_files_and_matches_what_init_writes(tmp_path):
    from harness.schema.targets import LOCAL_TEMPLATE, list_target_names, load_target
    from harness.schema.loader import read_yaml_mapping

    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "local-f32.yaml").write_text(LOCAL_TEMPLATE.read_text().replace("name: local", "name: local-f32"))
    builtin = load_target("local", targets)
    written = read_yaml_mapping(LOCAL_TEMPLATE)["budgets"]
    assert (builtin.budgets.latency_p99_ms, builtin.budgets.peak_memory_mb) == (written["latency_p99_ms"],
                                                                                 written["peak_memory_mb"])
    assert builtin.name == "local" and builtin.transport == "local" and list_target_names(targets) == ["local-f32"]
    assert load_target("local", tmp_path / "no-such-dir").budgets == builtin.budgets
    (targets / "local.yaml").write_text(LOCAL_TEMPLATE.read_text().replace("latency_p99_ms: 20.0",
                                                                           "latency_p99_ms: 7.0"))
    assert load_target("local", targets).budgets.latency_p99_ms == 7.0  # a file that redefines it wins


# ---------------------------------------------------------------- why is my int8 model slower?
def _profile(layers, timed=True):
    return {"timed": timed, "layers": layers, "placement": {"CPUExecutionProvider": len(layers)}}


def _slow_run(int8_ms: float, flags, noisy: bool = False):
    from harness.report.int8 import int8_slowdowns

    rows = [{"cell_id": "m__reference__onnx__pi", "model": "m", "variant": "reference", "format": "onnx",
             "runtime_config": "onnx", "target": "pi", "status": "ok", "latency_p50_ms": 2.0},
            {"cell_id": "m__ort_int8__onnx__pi", "model": "m", "variant": "ort_int8", "format": "onnx",
             "runtime_config": "onnx", "target": "pi", "status": "ok", "latency_p50_ms": int8_ms, "noisy": noisy}]
    # the layer documents as the agent writes them for ONNX Runtime (reports/<run>/profiles/<cell>.json)
    profiles = {"m__reference__onnx__pi": _profile([{"name": "conv", "type": "Conv", "time_ms": 1.5},
                                                    {"name": "fc", "type": "Gemm", "time_ms": 0.5}]),
                "m__ort_int8__onnx__pi": _profile([{"name": "q0", "type": "QuantizeLinear", "time_ms": 0.9},
                                                   {"name": "conv", "type": "QLinearConv", "time_ms": 0.8},
                                                   {"name": "dq0", "type": "DequantizeLinear", "time_ms": 0.7},
                                                   {"name": "fc", "type": "Gemm", "time_ms": 0.6}])}
    manifest = {"artifacts": [{"model": "m", "variant": "ort_int8", "metrics": {"quantization": "ort_qdq_int8"}},
                              {"model": "m", "variant": "reference", "metrics": {}}]}
    devices = {"pi": {"cpu_int8_flags": flags}}
    return int8_slowdowns(rows, profiles, devices, manifest)


def test_an_int8_cell_slower_than_its_reference_is_a_finding_with_its_profile_and_the_cpu():
    (finding,) = _slow_run(3.0, ["asimddp"])
    line = finding.text
    assert finding.short() == "m/ort_int8/onnx on pi 1.50x" and finding.verdict == "slower"
    assert "m/ort_int8/onnx on pi" in line and "1.50x" in line and "(3.000 vs 2.000 ms)" in line
    assert "1 ran integer kernels (QLinearConv, 27% of the time)" in line
    assert "1 ran float kernels (Gemm, 20% of the time)" in line
    assert "2 quantize/dequantize ops (QuantizeLinear, DequantizeLinear, 53% of the time)" in line
    assert "int8 instructions: asimddp" in line and "Next: most of its time converts between int8 and float" in line
    assert _slow_run(1.0, ["asimddp"]) == []  # faster: nothing to say
    assert "(timed on a busy device" not in line
    (busy,) = _slow_run(3.0, ["asimddp"], noisy=True)
    assert "is not faster than the reference it was quantized from (slower) (timed on a busy device: re-run on " \
           "a quiet one to confirm): 1.50x" in busy.text


def test_the_findings_reach_the_summary_and_needs_attention():
    from harness.report.findings import findings

    (finding,) = _slow_run(3.0, [])
    # the first screen has one line for every such cell; each finding in full is in the report's int8 section
    (line,) = findings([], [], int8_slow=[finding] * 5)
    assert line.link == "int8" and line.text == (
        "5 cells quantized but not faster than the reference (m/ort_int8/onnx on pi 1.50x, m/ort_int8/onnx on pi "
        "1.50x, m/ort_int8/onnx on pi 1.50x and 2 more): why, and what to run next")
    from harness.report.int8 import section_html
    assert finding.text.replace("'", "&#x27;") in section_html([finding]) and "Every quantized" in section_html([])


def test_the_probe_reports_the_cpus_int8_instructions():
    import json as _json

    probe = subprocess.run([sys.executable, str(ROOT / "harness" / "agent" / "agent.py"), "probe"],
                           capture_output=True, text=True, timeout=120)
    doc = _json.loads(probe.stdout)
    flags = set(open("/proc/cpuinfo").read().split())
    assert doc["cpu_int8_flags"] == sorted(flags & set(device_agent.CPU_INT8_FLAGS))


@pytest.mark.slow
def test_in_a_real_run_every_int8_cell_not_faster_than_its_reference_is_explained(float_data_run):
    _, run = float_data_run
    rows = rows_by_variant_format(run)
    summary = (run / "summary.md").read_text()
    probe = json.loads((run / "devices" / "local.json").read_text())
    assert isinstance(probe["cpu_int8_flags"], list)
    from harness.judge.regression import compare_latency

    def samples(row):
        return json.loads((run / "cells" / f"{row['cell_id']}.json").read_text())["latencies_ms"]

    for variant, fmt in (("ort_int8", "onnx"), ("ov_int8", "openvino")):
        # not faster: not below the reference beyond the measured noise (the regression judge's interval)
        judged = compare_latency(samples(rows[("reference", fmt)]), samples(rows[(variant, fmt)]))
        said = [ln for ln in summary.splitlines() if f"int8_digits/{variant}/{fmt} on local is not faster" in ln]
        assert len(said) == int(judged.ci_high >= 0), (variant, judged.describe(), summary)
        if said:  # both cells were profiled (ONNX Runtime's profiler, OpenVINO's counters): the groups are named
            assert "quantize/dequantize ops" in said[0] and "the reference's:" in said[0] and "Next:" in said[0]

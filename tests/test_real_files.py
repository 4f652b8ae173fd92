"""Real files as they come (issue 21): a dynamic batch axis, declared shapes that lie, converter diagnostics,
shapes that reach the converters, models that keep state, and real misuse. Each model is built in the test
and profiled end to end through the CLI on `local`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

import real_files
from helpers import ROOT, one_clear_line

pytestmark = pytest.mark.slow


def harness(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, in a process of its own (PYTHONPATH, if set, is inherited)."""
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def profile(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return harness("profile", *args, "--reports-dir", str(tmp_path / "reports"), "--warmup", "1",
                   "--iterations", "5")


def run_dir(tmp_path: Path) -> Path:
    (found,) = [p for p in (tmp_path / "reports").iterdir() if (p / "manifest.json").exists()]
    return found


def rows(tmp_path: Path) -> Dict[str, Dict]:
    """Result rows of the run by format (one model, one variant, one target)."""
    records = json.loads((run_dir(tmp_path) / "results.json").read_text())
    return {r["format"]: r for r in (records["rows"] if isinstance(records, dict) else records)}


# ---------------------------------------------------------------- 1. a dynamic batch axis
def test_a_keras_tflite_with_a_dynamic_batch_profiles_with_no_flags_at_batch_one(tmp_path):
    model = real_files.keras_batch_tflite()
    result = profile(tmp_path, "--model-file", str(model), "--formats", "tflite")
    assert result.returncode == 0, result.stderr[-3000:]
    said = [ln for ln in result.stderr.splitlines() + result.stdout.splitlines() if "dynamic batch axis" in ln]
    assert len(said) == 1 and "input_1" in said[0] and "--input-shape input_1=Nx8x8x3" in said[0], said
    manifest = json.loads((run_dir(tmp_path) / "manifest.json").read_text())
    assert any("input_1 has a dynamic batch axis, run at batch 1" in n for n in manifest["data"]["kbatch"])
    assert "dynamic batch axis" in (run_dir(tmp_path) / "index.html").read_text()
    row = rows(tmp_path)["tflite"]
    assert row["status"] == "ok" and row["max_abs_diff"] == 0.0


def test_the_datas_own_batch_wins_over_the_default(tmp_path):
    model = real_files.keras_batch_tflite()
    data = tmp_path / "eval.npz"
    np.savez(data, input_1=np.random.default_rng(0).random((3, 2, 8, 8, 3), dtype=np.float32))
    result = profile(tmp_path, "--model-file", str(model), "--data", str(data), "--formats", "tflite")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dynamic batch axis" not in result.stderr + result.stdout
    manifest = json.loads((run_dir(tmp_path) / "manifest.json").read_text())
    assert manifest["interfaces"]["kbatch"]["inputs"][0]["shape"] == [2, 8, 8, 3]
    assert rows(tmp_path)["tflite"]["status"] == "ok"


def test_other_dynamic_axes_still_need_the_flag():
    from harness.schema.interface import Interface, TensorSpec, batch_defaults, fix_interface
    from harness.core.errors import ConfigError
    described = Interface((TensorSpec("images", (None, 3, "h", "w")), TensorSpec("audio", (None,)),
                           TensorSpec("x", (None, 4))), ())
    assert batch_defaults(described, {}) == {"x": (1, 4)}  # a 1-D input's axis is a length, not a batch
    with pytest.raises(ConfigError, match=r"images axes 0 \(None\), 2 \(h\), 3 \(w\)"):
        fix_interface(described, {"audio": (100,), **batch_defaults(described, {})}, "m.onnx")


# ---------------------------------------------------------------- 2. what the source produces is the truth
def test_a_wrong_declared_output_shape_is_a_note_and_the_openvino_ir_is_compatible(tmp_path):
    model = real_files.misdeclared_onnx(tmp_path / "misdeclared.onnx")
    result = profile(tmp_path, "--model-file", str(model), "--formats", "onnx,openvino")
    assert result.returncode == 0, result.stderr[-3000:]
    found = rows(tmp_path)
    for fmt in ("onnx", "openvino"):
        assert found[fmt]["status"] == "ok", found[fmt]["error_message"]
        assert found[fmt]["max_abs_diff"] < 1e-2
    manifest = json.loads((run_dir(tmp_path) / "manifest.json").read_text())
    # ONNX Runtime reads the clashing declaration as shape []; whatever it reads, the note says what it produces
    notes = " ".join(manifest["data"]["misdeclared"])
    assert "output logits: declared [" in notes and "produces [1, 4] float32" in notes, notes


def test_an_artifact_is_checked_against_what_the_source_produces():
    from harness.schema.interface import Interface, TensorSpec, check_interface, produced_specs
    source = Interface((TensorSpec("x", (1, 6)),), (TensorSpec("y", (1, "seqlen")),))
    produced = produced_specs([("y", np.zeros((3, 32, 1, 80), np.float32))])
    assert produced == (TensorSpec("y", (32, 1, 80), "float32"),)
    dynamic_ir = Interface(source.inputs, (TensorSpec("y", (None, 1, None)),))
    assert check_interface(source, dynamic_ir, produced=produced) == []
    assert check_interface(source, source, produced=produced) == []  # the source's own (wrong) declaration
    wrong = Interface(source.inputs, (TensorSpec("y", (32, 2, 80)),))
    assert check_interface(source, wrong, produced=produced) == [
        "output y: shape [32, 2, 80] != [32, 1, 80] (what the source produces)"]
    varying = produced_specs([("boxes", [np.zeros((2, 3), np.int64), np.zeros((2, 5), np.int64)])])
    assert varying == (TensorSpec("boxes", (2, None), "int64"),)


# ---------------------------------------------------------------- 3. whole diagnostics
def test_a_failed_conversion_names_the_failed_operation_and_keeps_the_whole_diagnostic(tmp_path):
    model = real_files.branchy_onnx(tmp_path / "branchy.onnx", condition_from_data=True)
    data = tmp_path / "eval.npz"
    np.savez(data, x=np.random.default_rng(0).random((3, 1, 2, 10), dtype=np.float32), go=np.array(True))
    result = profile(tmp_path, "--model-file", str(model), "--data", str(data), "--formats", "onnx,openvino")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]  # a failed cell
    row = rows(tmp_path)["openvino"]
    assert row["status"] == "failed" and row["error_category"] == "conversion_failed"
    assert "conversion failed for Conv-" in row["error_message"], row["error_message"]
    assert "rank has to be known" in row["error_message"] and "unconverted_ops_report" not in row["error_message"]
    cell = json.loads((run_dir(tmp_path) / "cells" / f"{row['cell_id']}.json").read_text())
    assert "Failed operations detailed log" in cell["diagnostic"] and "Summary:" in cell["diagnostic"]
    assert "Failed operations detailed log" in (run_dir(tmp_path) / "index.html").read_text()


def test_a_model_with_resource_variables_gets_the_reason_in_plain_words(tmp_path):
    model = real_files.counter_tflite()
    result = profile(tmp_path, "--model-file", str(model), "--formats", "onnx,openvino")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]  # failed cells
    found = rows(tmp_path)
    assert "Unexpected type: RESOURCE" in found["openvino"]["error_message"]
    assert "list index out of range" in found["onnx"]["error_message"]  # tf2onnx's own words stay
    for fmt in ("onnx", "openvino"):
        assert "keeps state in resource variables" in found[fmt]["error_message"], found[fmt]["error_message"]


def test_the_headline_is_the_most_specific_line():
    from harness.prepare.converters import diagnose
    last = diagnose(RuntimeError("Exception from src/core/x.cpp:1:\nsomething general\nthe real cause"))
    assert last.headline == "RuntimeError: the real cause" and last.reason == ""
    typed = diagnose(RuntimeError("Check 'it' failed at src/utils.cpp:95:\nFrontEnd API failed with X:\n"
                                  "Unexpected type: RESOURCE\n"))
    assert typed.headline == "RuntimeError: Unexpected type: RESOURCE" and "resource variables" in typed.reason


# ---------------------------------------------------------------- 4. shapes reach the converters
def test_a_model_that_converts_only_at_static_shapes_converts_with_the_runs_shapes(tmp_path):
    model = real_files.branchy_onnx(tmp_path / "branchy.onnx")
    result = profile(tmp_path, "--model-file", str(model), "--input-shape", "x=1x2x10", "--formats",
                     "onnx,openvino")
    assert result.returncode == 0, result.stderr[-3000:]
    found = rows(tmp_path)
    for fmt in ("onnx", "openvino"):
        assert found[fmt]["status"] == "ok", found[fmt]["error_message"]
    assert found["openvino"]["max_abs_diff"] < 5e-2  # bf16 on CPUs that have it


# ---------------------------------------------------------------- 6. real misuse
def test_an_input_shape_too_large_for_the_host_is_refused_in_one_line_before_allocating(tmp_path):
    model = real_files.branchy_onnx(tmp_path / "branchy.onnx")
    result = profile(tmp_path, "--model-file", str(model), "--input-shape", "x=1x2x40000000000")
    one_clear_line(result, "16 random samples of x 1x2x40000000000 float32 need 4.7 TiB",
                   "lower --samples or the shape")


def test_random_samples_are_made_in_the_inputs_own_dtype():
    import tracemalloc
    from harness.prepare.data import random_samples
    from harness.schema.interface import Interface, TensorSpec
    interface = Interface((TensorSpec("x", (1, 3, 256, 256), "float32"),), ())
    tracemalloc.start()
    data = random_samples(interface, 8, seed=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1.2 * data.arrays["x"].nbytes  # no float64 array first (that peaked at 3x)


def test_a_metric_that_raises_is_said_where_a_person_looks_and_no_figure_stands_in(tmp_path):
    model = real_files.misdeclared_onnx(tmp_path / "model.onnx")
    data = tmp_path / "eval.npz"
    rng = np.random.default_rng(0)
    np.savez(data, features=rng.random((6, 1, 6), dtype=np.float32), labels=rng.integers(0, 4, 6))
    (tmp_path / "team_metric.py").write_text("def broken(outputs, labels):\n    raise ValueError('no boxes')\n")
    result = harness("profile", "--model-file", str(model), "--data", str(data), "--metric", "team_metric:broken",
                     "--formats", "onnx", "--reports-dir", str(tmp_path / "reports"), "--warmup", "1",
                     "--iterations", "5", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    said = [ln for ln in result.stderr.splitlines() if "raised ValueError: no boxes" in ln]
    assert any("model/reference/onnx" in ln and "primary figure unavailable" in ln for ln in said), said
    row = rows(tmp_path)["onnx"]
    assert row["primary_metric"] == "unavailable" and row["primary_retention"] is None
    assert row["accuracy"] is not None  # the other figures stand, but none replaces the metric
    assert "The metric failed" in (run_dir(tmp_path) / "summary.md").read_text()
    assert "The metric failed" in (run_dir(tmp_path) / "index.html").read_text()


def test_float64_data_is_cast_to_float32_and_the_cast_is_noted(tmp_path):
    model = real_files.misdeclared_onnx(tmp_path / "model.onnx")
    data = tmp_path / "eval.npz"
    np.savez(data, features=np.random.default_rng(0).random((4, 1, 6)))  # float64, as numpy makes it
    result = profile(tmp_path, "--model-file", str(model), "--data", str(data), "--formats", "onnx")
    assert result.returncode == 0, result.stderr[-3000:]
    notes = json.loads((run_dir(tmp_path) / "manifest.json").read_text())["data"]["model"]
    assert any("input features: the data is float64, cast to the model's float32 (largest change" in n
               for n in notes), notes


# ---------------------------------------------------------------- 5. state reset before evaluation
def test_a_tflite_model_with_a_resource_variable_is_evaluated_from_its_initial_state(tmp_path):
    model = real_files.counter_tflite()
    data = tmp_path / "eval.npz"
    np.savez(data, x=np.random.default_rng(0).random((5, 1, 4), dtype=np.float32))
    result = profile(tmp_path, "--model-file", str(model), "--data", str(data), "--formats", "tflite")
    assert result.returncode == 0, result.stderr[-3000:]
    row = rows(tmp_path)["tflite"]
    assert row["status"] == "ok" and row["max_abs_diff"] == 0.0  # exactly the reference, sample by sample
    cell = json.loads((run_dir(tmp_path) / "cells" / f"{row['cell_id']}.json").read_text())
    assert cell["state_reset"] == "reloaded"  # reset_all_variables() does not reset resource variables
    manifest = json.loads((run_dir(tmp_path) / "manifest.json").read_text())
    assert manifest["interfaces"]["counter"]["stateful"] is True
    assert any("timed figures are per step of a stream" in n for n in manifest["data"]["counter"])
    assert "timed figures are per step of a stream" in (run_dir(tmp_path) / "index.html").read_text()


def test_a_stateful_torch_module_is_found_by_running_it_and_loaded_afresh_before_its_outputs(tmp_path):
    model = real_files.accumulator_torchscript(tmp_path / "accumulator.pt")
    data = tmp_path / "eval.npz"
    np.savez(data, x=np.random.default_rng(1).random((4, 1, 4), dtype=np.float32))
    result = profile(tmp_path, "--model-file", str(model), "--data", str(data), "--formats", "torch")
    assert result.returncode == 0, result.stderr[-3000:]
    row = rows(tmp_path)["torch"]
    assert row["status"] == "ok" and row["max_abs_diff"] == 0.0, row
    cell = json.loads((run_dir(tmp_path) / "cells" / f"{row['cell_id']}.json").read_text())
    assert cell["state_reset"] == "reloaded"
    assert json.loads((run_dir(tmp_path) / "manifest.json").read_text())["interfaces"]["accumulator"]["stateful"]


def test_a_stateless_model_is_not_marked_stateful(tmp_path):
    model = real_files.misdeclared_onnx(tmp_path / "model.onnx")
    result = profile(tmp_path, "--model-file", str(model), "--formats", "onnx")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stateful" not in json.loads((run_dir(tmp_path) / "manifest.json").read_text())["interfaces"]["model"]
    row = rows(tmp_path)["onnx"]
    assert "state_reset" not in json.loads((run_dir(tmp_path) / "cells" / f"{row['cell_id']}.json").read_text())

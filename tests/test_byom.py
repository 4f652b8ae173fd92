"""Bring your own model and data (issue 11): a team's own files, with the shapes real edge models have,
profiled end to end from the command line and the Python API, on this machine and over SSH."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import byom
from harness.prepare.cache import ContentCache
from harness.run.pipeline import run_profile
from harness.run.plan import RunSettings
from harness.prepare.recipes import recipe_for_file
from harness.schema.recipes import load_recipe
from harness.schema.targets import load_target
from helpers import ROOT, one_clear_line, session_cache_dir

HARNESS = str(ROOT / ".venv" / "bin" / "harness")
QUICK = RunSettings(warmup=1, iterations=5, min_duration_s=0.0)
LOCAL = load_target("local", ROOT / "targets")


def harness(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([HARNESS, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def profile(recipe, tmp_path, targets=(LOCAL,), variants=(), settings=QUICK):
    """One run through the same pipeline as `harness profile`; rows by (variant, format)."""
    outcome = run_profile([recipe], list(targets), {recipe.name: list(variants)}, settings, run_id="byom",
                          reports_dir=tmp_path / "reports", cache=ContentCache(session_cache_dir()))
    rows = {(r["variant"], r["format"], r["target"]): r for r in outcome.frame.to_dict(orient="records")}
    return outcome, rows


def cell_document(outcome, row):
    return json.loads(outcome.run_dir.cell_path(row["cell_id"]).read_text())


@pytest.fixture(scope="module")
def streaming(tmp_path_factory):
    files = byom.streaming_files()
    data = byom.streaming_data(tmp_path_factory.mktemp("streaming-data") / "eval.npz")
    return files, data


# ---------------------------------------------------------------- the interface from the file
def test_dynamic_dimensions_are_named_with_the_flag_that_fixes_them(streaming, tmp_path):
    files, _ = streaming
    result = harness("profile", "--model-file", str(files["onnx"]), "--reports-dir", str(tmp_path), "-q")
    one_clear_line(result, str(files["onnx"]), "image axes 2 (height), 3 (width)",
                   "--input-shape image=1x3xNxN")


def test_random_inputs_without_data_keep_parity_and_leave_accuracy_empty(streaming, tmp_path):
    files, _ = streaming
    recipe = recipe_for_file(files["onnx"], shapes={"image": (1, 3, 12, 12)}, random_samples=4)
    outcome, rows = profile(recipe, tmp_path)
    onnx = rows[("reference", "onnx", "local")]
    assert onnx["status"] == "ok" and onnx["n_eval_samples"] == 4
    assert np.isnan(onnx["accuracy"]) and np.isnan(onnx["top1_agreement"])  # not a classifier: no class figures
    assert onnx["primary_metric"] == "output_snr_db" and onnx["output_snr_db"] > 100
    per_output = cell_document(outcome, onnx)["outputs"]
    assert set(per_output) == set(byom.STREAMING_OUTPUTS)
    assert per_output["heatmap"]["max_abs_diff"] < 1e-4
    manifest = json.loads(outcome.run_dir.manifest_path.read_text())
    assert manifest["interfaces"]["streaming"]["inputs"][0]["shape"] == [1, 3, 12, 12]
    assert "random (seed 0, 4 samples)" in " ".join(manifest["data"]["streaming"])


@pytest.mark.slow
def test_several_inputs_scalar_state_and_a_map_scored_by_the_users_metric(streaming, tmp_path):
    files, data = streaming
    recipe = recipe_for_file(files["onnx"], data=str(data), metric="byom:heatmap_metric")
    outcome, rows = profile(recipe, tmp_path)
    onnx, ov, tflite = (rows[("reference", f, "local")] for f in ("onnx", "openvino", "tflite"))
    assert onnx["status"] == ov["status"] == "ok"
    assert onnx["primary_metric"] == "metric_active_fraction" and onnx["primary_retention"] == pytest.approx(1.0)
    assert onnx["metric_mean_activation"] > 0 and ov["metric_mean_activation_retention"] == pytest.approx(1, abs=0.01)
    assert ov["output_snr_db"] > 30  # OpenVINO's default precision may be bf16: close, not exact
    assert tflite["status"] == "skipped" and tflite["error_category"] == "no_converter"
    assert "no converter from onnx to tflite" in tflite["error_message"]
    assert onnx["n_eval_samples"] == 6


@pytest.mark.slow
@pytest.mark.parametrize("source", ["torchscript", "torch_export"])
def test_torch_files_profile_in_every_format_they_convert_to(streaming, tmp_path, source):
    files, data = streaming
    outcome, rows = profile(recipe_for_file(files[source], data=str(data)), tmp_path)
    for fmt in ("onnx", "openvino"):
        assert rows[("reference", fmt, "local")]["status"] == "ok", rows[("reference", fmt, "local")]["error_message"]
    assert rows[("reference", "onnx", "local")]["max_abs_diff"] < 1e-4
    tflite = rows[("reference", "tflite", "local")]
    if source == "torch_export":  # litert-torch converts exported programs
        assert tflite["status"] == "ok" and tflite["max_abs_diff"] < 1e-4
    else:
        assert tflite["status"] == "skipped" and "torch.export.save" in tflite["error_message"]


@pytest.fixture(scope="module")
def two_tower(tmp_path_factory):
    return byom.two_tower_files(), byom.two_tower_data(tmp_path_factory.mktemp("tt") / "eval.npz")


@pytest.mark.slow
@pytest.mark.parametrize("source", ["keras", "keras3", "savedmodel", "tflite"])
def test_keras_family_files_with_labels_get_classification_figures(two_tower, tmp_path, source):
    files, data = two_tower
    recipe = recipe_for_file(files[source], data=str(data), class_output="score")
    outcome, rows = profile(recipe, tmp_path)
    for fmt in ("tflite", "onnx", "openvino"):
        row = rows[("reference", fmt, "local")]
        assert row["status"] == "ok", row["error_message"]
        assert row["primary_metric"] == "accuracy" and 0 <= row["top5_accuracy"] <= 1
        assert row["top1_agreement"] == 1.0 and row["accuracy_retention"] == pytest.approx(1.0)
    assert rows[("reference", "onnx", "local")]["max_abs_diff"] < 1e-4


@pytest.mark.slow
def test_int8_variants_calibrate_on_a_split_of_the_users_data_disjoint_from_evaluation(two_tower, tmp_path):
    files, data = two_tower
    recipe = recipe_for_file(files["savedmodel"], data=str(data), class_output="score")
    outcome, rows = profile(recipe, tmp_path, variants=[v.name for v in recipe.variants if not v.alternative_of])
    for variant, fmt in (("tflite_int8", "tflite"), ("ort_int8", "onnx"), ("ov_int8", "openvino")):
        row = rows[(variant, fmt, "local")]
        assert row["status"] == "ok", row["error_message"]
        assert row["output_snr_db"] > 10 and row["n_eval_samples"] == 20
    notes = " ".join(json.loads(outcome.run_dir.manifest_path.read_text())["data"][recipe.name])
    assert "calibration split: 20 of the 40 samples of eval.npz were moved to calibration" in notes
    assert "scored on the other 20; pass --calibration FILE" in notes


def test_the_users_files_are_never_written_and_replacing_one_in_place_rebuilds(streaming, tmp_path):
    files, _ = streaming
    model = tmp_path / "model.onnx"
    shutil.copyfile(files["onnx"], model)
    before = (hashlib.sha256(model.read_bytes()).hexdigest(), model.stat().st_mtime_ns)
    recipe = recipe_for_file(model, shapes={"image": (1, 3, 8, 8)}, random_samples=2)
    first, _ = profile(recipe, tmp_path / "a")
    assert (hashlib.sha256(model.read_bytes()).hexdigest(), model.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["model.onnx"]
    # Same name, other weights: a rebuilt reference and new artifacts, not the cached ones.
    import torch
    module = byom.streaming_module()
    with torch.no_grad():
        module.head.bias.add_(1.0)
    torch.onnx.export(module, byom.streaming_example(), str(model), input_names=byom.STREAMING_INPUTS,
                      output_names=byom.STREAMING_OUTPUTS, opset_version=17, dynamo=False,
                      dynamic_axes={"image": {2: "h", 3: "w"}, "heatmap": {2: "h", 3: "w"}})
    second, _ = profile(recipe, tmp_path / "b")
    sha = lambda outcome: {r["format"]: r["artifact_sha256"] for r in outcome.frame.to_dict(orient="records")}
    assert sha(first)["onnx"] != sha(second)["onnx"]


def test_a_recipe_file_names_its_model_data_and_metric_relative_to_itself(streaming, tmp_path):
    files, data = streaming
    (tmp_path / "models").mkdir()
    shutil.copyfile(files["pt2" if False else "onnx"], tmp_path / "streaming.onnx")
    shutil.copyfile(data, tmp_path / "models" / "eval.npz")
    shutil.copyfile(ROOT / "tests" / "byom.py", tmp_path / "models" / "team_metrics.py")
    path = tmp_path / "models" / "detector.yaml"
    path.write_text("name: detector\nsource: {path: ../streaming.onnx}\ndata: {npz: eval.npz}\n"
                    "metric: team_metrics:heatmap_metric\nformats: [onnx]\n")
    outcome, rows = profile(load_recipe(str(path)), tmp_path)
    row = rows[("reference", "onnx", "local")]
    assert row["status"] == "ok" and row["primary_metric"] == "metric_active_fraction"


def test_a_loader_entry_point_supplies_the_data(streaming, tmp_path):
    files, _ = streaming
    path = tmp_path / "m.yaml"
    path.write_text(f"name: m\nsource: {{path: {files['onnx']}}}\ndata: {{loader: 'byom:streaming_loader'}}\n"
                    "formats: [onnx]\n")
    outcome, rows = profile(load_recipe(str(path)), tmp_path)
    row = rows[("reference", "onnx", "local")]
    assert row["status"] == "ok" and row["n_eval_samples"] == 4


def test_a_directory_of_labelled_images_is_preprocessed_for_the_one_image_input(tmp_path):
    from PIL import Image
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    (tmp_path / "labels.csv").write_text("".join(f"img{i}.png,{i % 4}\n" for i in range(6)))
    byom.tiny_image_onnx(tmp_path / "tiny.onnx")
    (tmp_path / "m.yaml").write_text(
        "name: tiny\nsource: {path: tiny.onnx}\nformats: [onnx, openvino]\ndata: {images: images, labels: labels.csv,"
        " preprocessing: {resize: [8, 8], mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5], layout: NCHW}}\n")
    outcome, rows = profile(load_recipe(str(tmp_path / "m.yaml")), tmp_path)
    row = rows[("reference", "onnx", "local")]
    assert row["status"] == "ok" and row["n_eval_samples"] == 6 and 0 <= row["accuracy"] <= 1
    assert row["primary_metric"] == "accuracy"


def test_a_metric_that_raises_is_recorded_on_its_cells_and_the_run_goes_on(streaming, tmp_path):
    files, data = streaming
    recipe = recipe_for_file(files["onnx"], data=str(data), metric="byom:failing_metric")
    outcome, rows = profile(recipe, tmp_path)
    row = rows[("reference", "onnx", "local")]
    assert row["status"] == "ok" and "this metric breaks on purpose" in row["evaluation_error"]
    assert row["output_snr_db"] > 100  # the other figures stand


@pytest.mark.ssh
@pytest.mark.slow
def test_a_model_file_profiles_on_a_simulated_ssh_device(streaming, tmp_path, sim_target):
    files, data = streaming
    recipe = recipe_for_file(files["torch_export"], data=str(data), metric="byom:heatmap_metric")
    outcome, rows = profile(recipe, tmp_path, targets=[sim_target("sim-x86")])
    for fmt in ("tflite", "onnx"):
        row = rows[("reference", fmt, "sim-x86")]
        assert row["status"] == "ok", row["error_message"]
        assert row["max_abs_diff"] < 1e-4 and row["metric_active_fraction_retention"] == pytest.approx(1.0)


# ---------------------------------------------------------------- bad input: one clear line each
def _bad(tmp_path, *args):
    return harness("profile", *args, "--reports-dir", str(tmp_path / "reports"), "-q")


def test_a_file_that_is_not_a_model_says_so(tmp_path):
    bogus = tmp_path / "detector.onnx"
    bogus.write_bytes(b"not a model")
    one_clear_line(_bad(tmp_path, "--model-file", str(bogus)), str(bogus), "cannot be read as a onnx model")
    assert bogus.read_bytes() == b"not a model"


def test_an_unknown_extension_lists_the_known_ones(tmp_path):
    weights = tmp_path / "detector.bin"
    weights.write_bytes(b"\0" * 16)
    one_clear_line(_bad(tmp_path, "--model-file", str(weights)), "unknown model file extension '.bin'", ".onnx",
                   ".tflite", "--source-format")


def test_npz_keys_that_do_not_match_the_inputs_list_both(streaming, tmp_path):
    files, _ = streaming
    np.savez(tmp_path / "d.npz", img=np.zeros((2, 1, 3, 8, 8), np.float32))
    one_clear_line(_bad(tmp_path, "--model-file", str(files["onnx"]), "--data", str(tmp_path / "d.npz")),
                   "['img']", "['image', 'rate', 'state']", "missing: ['image', 'rate', 'state']")


def test_a_shape_mismatch_names_the_input_expected_and_found(streaming, tmp_path):
    files, _ = streaming
    np.savez(tmp_path / "d.npz", image=np.zeros((2, 1, 3, 8, 8), np.float32), rate=np.array(1, np.int64),
             state=np.zeros((2, 8), np.float32))
    one_clear_line(_bad(tmp_path, "--model-file", str(files["onnx"]), "--data", str(tmp_path / "d.npz")),
                   "input state: expected samples of shape [2, 1, 8]", "found [2, 8]")


def test_a_dtype_mismatch_names_the_input_expected_and_found(streaming, tmp_path):
    files, _ = streaming
    np.savez(tmp_path / "d.npz", image=np.zeros((2, 1, 3, 8, 8), np.float32), rate=np.array(0.5, np.float32),
             state=np.zeros((2, 1, 8), np.float32))
    one_clear_line(_bad(tmp_path, "--model-file", str(files["onnx"]), "--data", str(tmp_path / "d.npz")),
                   "input rate: the data is float32, the model takes int64")


def test_labels_whose_length_differs_from_the_samples_say_both(two_tower, tmp_path):
    files, _ = two_tower
    np.savez(tmp_path / "d.npz", a=np.zeros((5, 1, 6), np.float32), b=np.zeros((5, 1, 4, 4, 1), np.float32),
             labels=np.zeros(3, np.int64))
    one_clear_line(_bad(tmp_path, "--model-file", str(files["tflite"]), "--data", str(tmp_path / "d.npz")),
                   "'labels' has 3 entries but there are 5 samples")


def test_a_metric_that_cannot_be_imported_names_the_entry_point(streaming, tmp_path):
    files, _ = streaming
    one_clear_line(_bad(tmp_path, "--model-file", str(files["onnx"]), "--input-shape", "image=1x3x8x8",
                        "--metric", "team.metrics:iou"), "field 'metric'", "cannot import 'team.metrics'")


def test_a_missing_data_file_names_it(streaming, tmp_path):
    files, _ = streaming
    one_clear_line(_bad(tmp_path, "--model-file", str(files["onnx"]), "--data", str(tmp_path / "nope.npz")),
                   "nope.npz", "no such data file")


# ---------------------------------------------------------------- dtypes and outputs of varying size
def test_random_inputs_cover_every_dtype_the_runtimes_take():
    from harness.prepare.data import SAMPLE, random_samples
    from harness.schema.interface import DTYPES, Interface, TensorSpec
    interface = Interface(tuple(TensorSpec(f"x_{d}", (1, 3), d) for d in DTYPES) + (TensorSpec("rate", (), "int64"),),
                          ())
    data = random_samples(interface, 5, seed=3)
    assert {n: a.dtype.name for n, a in data.arrays.items()} == {**{f"x_{d}": d for d in DTYPES}, "rate": "int64"}
    assert all(a.shape[0] == 5 and data.modes[n] == SAMPLE for n, a in data.arrays.items())
    assert data.arrays["rate"].shape == (5,)  # one scalar per sample
    again = random_samples(interface, 5, seed=3)
    assert all(np.array_equal(data.arrays[n], again.arrays[n]) for n in data.arrays)  # seeded


def test_data_is_cast_only_where_no_value_changes():
    from harness.prepare.data import conform
    from harness.core.errors import ConfigError
    from harness.schema.interface import Interface, TensorSpec
    interface = Interface((TensorSpec("ids", (1, 4), "int32"), TensorSpec("x", (1, 4), "float32")), ())
    ok = conform(interface, {"ids": np.arange(8, dtype=np.int64).reshape(2, 1, 4), "x": np.zeros((1, 4))},
                 None, "eval.npz", "eval.npz")
    assert ok.arrays["ids"].dtype == np.int32 and ok.arrays["x"].dtype == np.float32 and ok.modes["x"] == "constant"
    with pytest.raises(ConfigError, match="input ids: the data is int64, the model takes int32"):
        conform(interface, {"ids": np.full((2, 1, 4), 2 ** 40), "x": np.zeros((1, 4))}, None, "eval.npz", "eval.npz")


def test_an_output_whose_size_varies_per_sample_is_kept_and_compared_per_sample(tmp_path):
    model = byom.detections_onnx(tmp_path / "detections.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "eval.npz", scores=rng.random((5, 1, 12), dtype=np.float32),
             mask=rng.integers(0, 2, (5, 1, 12)).astype(np.uint8), enabled=np.array(True))
    outcome, rows = profile(recipe_for_file(model, data=str(tmp_path / "eval.npz")), tmp_path)
    for fmt in ("onnx", "openvino"):
        row = rows[("reference", fmt, "local")]
        assert row["status"] == "ok", row["error_message"]
        assert row["max_abs_diff"] == 0 and row["n_eval_samples"] == 5
    from harness.judge.evaluate import read_outputs
    boxes = read_outputs(outcome.run_dir.outputs_path(rows[("reference", "onnx", "local")]["cell_id"]))["boxes"]
    assert isinstance(boxes, list) and len({b.shape for b in boxes}) > 1  # ragged: one array per sample


def test_a_model_file_run_resumes_from_its_manifest_anywhere(streaming, tmp_path):
    """`harness run --resume` rebuilds a --model-file recipe from the manifest, and `local` outside the repo."""
    files, data = streaming
    args = ["--reports-dir", str(tmp_path / "reports"), "--run-id", "mine", "--iterations", "5", "-q"]
    first = harness("profile", "--model-file", str(files["onnx"]), "--data", str(data), *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    lost = tmp_path / "reports" / "mine" / "cells" / "streaming__reference__openvino__local.json"
    lost.unlink()
    resumed = harness("run", "--resume", "mine", "--reports-dir", str(tmp_path / "reports"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 to run" in resumed.stderr and lost.exists()

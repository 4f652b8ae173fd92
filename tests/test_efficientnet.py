"""EfficientNet-Lite0 with its shipped ImageNet weights: predictions, exports, a local profile."""
from __future__ import annotations


import numpy as np
import pytest

from harness.judge.evaluate import ScoringSpec, score_outputs
from harness.zoo import DATASETS
from harness.zoo.efficientnet import IMAGENET_CATS, PHOTOS, load_efficientnet_lite0, photo_batch, train_linear_head

from helpers import ROOT, session_cache_dir

torch = pytest.importorskip("torch")


def _predict(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_lite0_loads_real_weights_and_sees_a_cat_in_chelsea():
    model = load_efficientnet_lite0()
    # Lite variants use ReLU6; set_swish() would have replaced it (and broken every prediction)
    assert isinstance(model._swish, torch.nn.ReLU6)
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    logits = _predict(model, photo_batch(["chelsea", "coffee"]))
    assert int(logits[0].argmax()) in IMAGENET_CATS
    assert int(logits[1].argmax()) in (967, 968)  # espresso, cup


def test_photos_are_split_by_photo_and_carry_no_labels():
    data = DATASETS.get("skimage_photos")(eval_fraction=0.5, seed=0)
    views = 12
    assert data.x_eval.shape == (len(PHOTOS) // 2 * views, 3, 224, 224) == data.x_train.shape
    assert data.x_eval.dtype == np.float32 and data.y_eval is None and data.y_train is None
    # no crop of an evaluated photo is among the calibration crops
    train_rows = {row.tobytes() for row in data.x_train[:, :, 112, 112]}
    assert not any(row.tobytes() in train_rows for row in data.x_eval[::views, :, 112, 112])


def test_unlabelled_samples_give_agreement_but_no_accuracy():
    reference = {"logits": np.eye(4, dtype=np.float32)[:, None]}
    outputs = {"logits": reference["logits"][[0, 1, 2, 0]]}
    spec = ScoringSpec(task="classification", class_output="logits", classes=4)
    metrics, _ = score_outputs(outputs, reference, np.full(4, -1), spec, None)
    assert metrics["top1_agreement"] == 0.75 and "accuracy" not in metrics
    assert metrics["primary_metric"] == "top1_agreement" and metrics["primary_retention"] == 0.75
    labelled, _ = score_outputs(outputs, reference, np.array([0, 1, 2, 3]), spec, None, {"accuracy": 1.0})
    assert labelled["accuracy"] == 0.75 and labelled["accuracy_retention"] == 0.75


def test_linear_head_separates_separable_features_and_folds_the_scaling():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 16))
    labels = rng.integers(0, 3, 600)
    features = (centres[labels] + rng.normal(0, 1, (600, 16))).astype(np.float32)
    features[:, 5] = 2.0  # a constant feature, like dead ReLU6 channels: must not blow up the weights
    weight, bias = train_linear_head(features, labels, 3, seed=0, epochs=50, learning_rate=1.0)
    assert weight.shape == (3, 16) and bias.shape == (3,)
    assert float(((features @ weight.T + bias).argmax(axis=1) == labels).mean()) > 0.95
    assert np.abs(weight).max() < 10


def test_onnx_export_matches_torch_within_1e_4(tmp_path):
    import onnxruntime as ort

    from harness.prepare.converters import CONVERTERS, ConversionContext
    from harness.schema.interface import Interface, TensorSpec

    model = load_efficientnet_lite0()
    torch.save(model, tmp_path / "model.pt")
    interface = Interface((TensorSpec("image", (1, 3, 224, 224)),), (TensorSpec("logits", (1, 1000)),))
    path = CONVERTERS.get(("torch_module", "onnx"))(tmp_path / "model.pt", ConversionContext("lite0", interface),
                                                    tmp_path)
    x = photo_batch(["chelsea", "rocket"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {"image": x[i:i + 1]})[0] for i in range(len(x))])  # exported at batch 1
    assert np.abs(got - _predict(model, x)).max() < 1e-4


@pytest.mark.slow
def test_local_profile_of_the_reference_agrees_with_torch(tmp_path):
    """The recipe's reference on this machine in ONNX Runtime, OpenVINO (f32) and TFLite (litert-torch)."""
    from harness.run.pipeline import run_profile
    from harness.run.plan import RunSettings
    from harness.schema.recipes import load_recipe
    from harness.schema.targets import load_target
    from harness.prepare.cache import ContentCache

    recipe = load_recipe("efficientnet_lite0", ROOT / "models")
    from dataclasses import replace
    local = replace(load_target(str(ROOT / "targets" / "local.yaml")), runtime_configs=(), runtimes={
        "tflite": [{"name": "tflite"}], "onnx": [{"name": "onnx"}],
        "openvino": [{"name": "ov-f32", "precision": "f32"}]})
    outcome = run_profile([recipe], [local], settings=RunSettings(warmup=1, iterations=5, min_duration_s=0.0),
                          reports_dir=tmp_path, cache=ContentCache(session_cache_dir()))
    rows = outcome.frame.set_index("format")
    assert set(rows.index) == {"onnx", "openvino", "tflite"}
    assert (rows["status"] == "ok").all(), rows[["status", "error_message"]]
    assert (rows["top1_agreement"] == 1.0).all()
    assert rows["accuracy"].isna().all()  # unlabelled photos: agreement is the score, not accuracy
    assert (rows["n_eval_samples"] == 72).all()
    assert rows.loc["onnx", "max_abs_diff"] < 1e-4

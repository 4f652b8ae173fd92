"""Small real models with the shapes real edge models have, saved in every source format they can take
(imported by tests; pytest puts tests/ on sys.path). Nothing is downloaded: weights are seeded.

`streaming` (torch): three inputs and three outputs —
    image [1, 3, H, W] float32 with dynamic H and W,
    rate  []           int64 scalar (a sample rate),
    state [2, 1, 8]    float32 recurrent state whose batch axis is 1 —
  → heatmap [1, 4, H, W] (a map, not classes), logits [1, 5], new_state [2, 1, 8].
`two_tower` (Keras): inputs a [1, 6] and b [1, 4, 4, 1] → score [1, 3] and embedding [1, 8].
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Dict

import numpy as np

H, W = 16, 20


def streaming_module():
    import torch

    class Streaming(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.to_state = torch.nn.Linear(4, 8)
            self.recur = torch.nn.Linear(8, 8)
            self.head = torch.nn.Linear(12, 5)

        def forward(self, image, rate, state):
            heatmap = torch.relu(self.conv(image)) * (rate.to(torch.float32) / 16000.0)
            pooled = heatmap.mean(dim=(2, 3))                               # [1, 4]
            new_state = torch.tanh(self.recur(state) + self.to_state(pooled))  # [2, 1, 8]
            logits = self.head(torch.cat([pooled, new_state[-1]], dim=1))   # [1, 5]
            return heatmap, logits, new_state

    torch.manual_seed(0)
    return Streaming().eval()


def streaming_example(height: int = H, width: int = W):
    import torch
    return (torch.rand(1, 3, height, width), torch.tensor(16000, dtype=torch.int64), torch.rand(2, 1, 8))


STREAMING_INPUTS = ["image", "rate", "state"]
STREAMING_OUTPUTS = ["heatmap", "logits", "new_state"]


@functools.lru_cache(maxsize=None)
def streaming_files() -> Dict[str, Path]:
    """The streaming model as ONNX (dynamic H, W), TorchScript and torch.export (.pt2)."""
    import torch

    out = Path(tempfile.mkdtemp(prefix="byom-streaming-"))
    module = streaming_module()
    example = streaming_example()
    torch.onnx.export(module, example, str(out / "streaming.onnx"), input_names=STREAMING_INPUTS,
                      output_names=STREAMING_OUTPUTS, opset_version=17, dynamo=False,
                      dynamic_axes={"image": {2: "height", 3: "width"}, "heatmap": {2: "height", 3: "width"}})
    torch.jit.save(torch.jit.trace(module, example), str(out / "streaming.pt"))
    torch.export.save(torch.export.export(module, example), str(out / "streaming.pt2"))
    return {"onnx": out / "streaming.onnx", "torchscript": out / "streaming.pt", "torch_export": out / "streaming.pt2"}


def streaming_data(path: Path, n: int = 6, seed: int = 0) -> Path:
    """Per-sample images, the scalar rate and the state as constants, in the --data convention."""
    rng = np.random.default_rng(seed)
    np.savez(path, image=rng.random((n, 1, 3, H, W), dtype=np.float32), rate=np.array(16000, dtype=np.int64),
             state=rng.random((2, 1, 8), dtype=np.float32))
    return path


def heatmap_metric(outputs, labels):
    """A non-classification figure: how much of the heatmap is above 0.01, and its mean (higher is better).

    The map is found by name where the file keeps names, else by rank (torch.export names outputs after
    graph nodes): outputs arrive samples first, so a [1, 4, H, W] map is 5-D."""
    heatmap = outputs.get("heatmap")
    if heatmap is None:
        heatmap = next(v for v in outputs.values() if np.ndim(v) == 5)
    heatmap = np.asarray(heatmap, dtype=np.float64)
    return {"active_fraction": float((heatmap > 0.01).mean()), "mean_activation": float(heatmap.mean())}


def two_tower_keras():
    from harness.zoo.keras_util import import_tf
    _, keras = import_tf()
    keras.utils.set_random_seed(0)
    a = keras.layers.Input((6,), name="a")
    b = keras.layers.Input((4, 4, 1), name="b")
    conv = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, activation="relu")(b))
    joined = keras.layers.Concatenate()([keras.layers.Dense(8, activation="relu")(a), conv])
    score = keras.layers.Dense(3, name="score")(joined)
    embedding = keras.layers.Dense(8, name="embedding")(joined)
    return keras.Model([a, b], [score, embedding], name="two_tower")


@functools.lru_cache(maxsize=None)
def two_tower_files() -> Dict[str, Path]:
    """The two-tower Keras model as .h5, .keras, a SavedModel directory and .tflite."""
    from harness.zoo.keras_util import import_tf
    tf, _ = import_tf()
    out = Path(tempfile.mkdtemp(prefix="byom-two-tower-"))
    model = two_tower_keras()
    model.save(out / "two_tower.h5")
    model.save(out / "two_tower.keras")
    tf.saved_model.save(model, str(out / "two_tower_savedmodel"))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    (out / "two_tower.tflite").write_bytes(converter.convert())
    return {"keras": out / "two_tower.h5", "keras3": out / "two_tower.keras",
            "savedmodel": out / "two_tower_savedmodel", "tflite": out / "two_tower.tflite"}


def two_tower_data(path: Path, n: int = 40, seed: int = 0, labels: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {"a": rng.random((n, 1, 6), dtype=np.float32), "b": rng.random((n, 1, 4, 4, 1), dtype=np.float32)}
    if labels:
        arrays["labels"] = rng.integers(0, 3, n)
    np.savez(path, **arrays)
    return path


def streaming_loader():
    """A loader entry point: the same data as streaming_data, built in code."""
    rng = np.random.default_rng(1)
    return {"image": rng.random((4, 1, 3, H, W), dtype=np.float32), "rate": np.array(8000, dtype=np.int64),
            "state": np.zeros((2, 1, 8), dtype=np.float32)}


def failing_metric(outputs, labels):
    raise RuntimeError("this metric breaks on purpose")


def tiny_image_onnx(path: Path, classes: int = 4) -> Path:
    """A one-input image classifier (mean colour → linear): input image [1, 3, 8, 8] NCHW → logits [1, classes]."""
    import onnx
    from onnx import TensorProto, helper

    weights = np.random.default_rng(0).normal(size=(3, classes)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        [helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def detections_onnx(path: Path) -> Path:
    """An output whose size varies per sample, like a detector's box list: the indices of scores above 0.5
    (NonZero), beside a uint8 input mask and a bool switch."""
    import onnx
    from onnx import TensorProto, helper

    threshold = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    graph = helper.make_graph(
        [helper.make_node("Cast", ["mask"], ["mask_f"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["scores", "mask_f"], ["masked"]),
         helper.make_node("Greater", ["masked", "half"], ["hit"]),
         helper.make_node("And", ["hit", "enabled"], ["kept"]),
         helper.make_node("NonZero", ["kept"], ["boxes"])],
        "detections",
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 12]),
         helper.make_tensor_value_info("mask", TensorProto.UINT8, [1, 12]),
         helper.make_tensor_value_info("enabled", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("boxes", TensorProto.INT64, [2, "n"])], [threshold])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path

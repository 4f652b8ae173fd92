"""Small real models with the quirks of files nobody on the project wrote (issue 21), built in the tests
(imported by tests; pytest puts tests/ on sys.path). Nothing is downloaded: weights are seeded."""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np


def _keras():
    from harness.zoo.keras_util import import_tf
    return import_tf()


@functools.lru_cache(maxsize=None)
def keras_batch_tflite() -> Path:
    """A Keras CNN converted with TFLiteConverter.from_keras_model: shape_signature [-1, 8, 8, 3]."""
    tf, keras = _keras()
    keras.utils.set_random_seed(0)
    image = keras.layers.Input((8, 8, 3), name="input_1")
    hidden = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(image))
    model = keras.Model(image, keras.layers.Dense(5, name="logits")(hidden))
    path = Path(tempfile.mkdtemp(prefix="real-files-")) / "kbatch.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def branchy_onnx(path: Path, condition_from_data: bool = False) -> Path:
    """An ONNX model that OpenVINO converts only at static shapes (or, with `condition_from_data`, never);
    the bench's conversion matrix measures the same file."""
    from harness.bench.conversions import shape_dependent_onnx
    return shape_dependent_onnx(path, condition_from_data)


@functools.lru_cache(maxsize=None)
def counter_tflite() -> Path:
    """A TFLite model that keeps state in a resource variable: y = total += x (VAR_HANDLE, READ_VARIABLE,
    ASSIGN_VARIABLE), so every invocation's output depends on how many ran before it."""
    tf, _ = _keras()

    class Counter(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.total = tf.Variable(tf.zeros([1, 4]))

        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
        def __call__(self, x):
            self.total.assign_add(x)
            return {"y": self.total * 1.0}

    module = Counter()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    path = Path(tempfile.mkdtemp(prefix="real-files-")) / "counter.tflite"
    path.write_bytes(converter.convert())
    return path


def misdeclared_onnx(path: Path) -> Path:
    """A MatMul model that produces logits [1, 4] but whose graph output declares ['seqlen'] (edited, as an
    exporter that guessed wrong would leave it): ONNX Runtime warns and runs, OpenVINO infers the real shape."""
    import onnx
    from onnx import TensorProto, helper

    weights = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["features", "w"], ["logits"])], "misdeclared",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    declared = model.graph.output[0].type.tensor_type.shape
    del declared.dim[:]
    declared.dim.add().dim_param = "seqlen"
    onnx.save(model, path)
    return path


def accumulator_torchscript(path: Path) -> Path:
    """A TorchScript module that keeps a running sum in a buffer: y = total += x. Nothing in the file says it
    keeps state; running it does."""
    import torch

    class Accumulator(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("total", torch.zeros(1, 4))

        def forward(self, x):
            self.total.add_(x)
            return self.total.clone()

    torch.jit.save(torch.jit.script(Accumulator().eval()), str(path))
    return path


@functools.lru_cache(maxsize=None)
def int8_digits() -> tuple:
    """A fully int8 TFLite digits classifier as a user's build makes one (TFLiteConverter full int8 with a
    representative data set, int8 input and output with their scales and zero points, input [-1, 8, 8, 1]),
    and its held-out images (n, 8, 8, 1) float32 in [0, 1] with their labels: (path, images, labels)."""
    from sklearn.datasets import load_digits

    tf, keras = _keras()
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    keras.utils.set_random_seed(0)
    image = keras.layers.Input((8, 8, 1), name="image")
    hidden = keras.layers.Flatten()(keras.layers.Conv2D(8, 3, activation="relu")(image))
    model = keras.Model(image, keras.layers.Dense(10, name="logits")(hidden))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    model.fit(x[:1200], y[:1200], epochs=15, verbose=0)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(100))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path = Path(tempfile.mkdtemp(prefix="real-files-")) / "int8_digits.tflite"
    path.write_bytes(converter.convert())
    return path, x[1200:1400], y[1200:1400]


def yolo_like_onnx(path: Path, width: int = 16, size: int = 160) -> Path:
    """A small YOLO-like detector exported from torch to ONNX (seeded weights): conv-BN-SiLU stride-2 blocks,
    an upsample and concat of two scales, and a 1x1 head producing per-cell boxes, objectness and 4 classes
    (1, cells, 9). Big enough (about 0.1 GMAC at 160x160) that int8 and float kernels time apart."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    def block(cin: int, cout: int, stride: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

    class Detector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = width
            self.stem, self.down = block(3, w, 2), block(w, 2 * w, 2)
            self.p3, self.p4 = block(2 * w, 4 * w, 2), block(4 * w, 8 * w, 2)
            self.up, self.neck = nn.Upsample(scale_factor=2), block(12 * w, 4 * w, 1)
            self.head = nn.Conv2d(4 * w, 4 + 1 + 4, 1)

        def forward(self, images):
            p3 = self.p3(self.down(self.stem(images)))
            fused = self.neck(torch.cat([p3, self.up(self.p4(p3))], 1))
            cells = self.head(fused).flatten(2).transpose(1, 2)
            return torch.cat([cells[..., :4], torch.sigmoid(cells[..., 4:])], -1)

    model = Detector().eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so folding them matters
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    torch.onnx.export(model, torch.rand(1, 3, size, size), str(path), input_names=["images"],
                      output_names=["detections"], opset_version=17, dynamo=False)
    return path

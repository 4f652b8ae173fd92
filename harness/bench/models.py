"""The model files the benchmark times.

The digits CNN takes about 10 µs per inference: at that size the Python call
around `invoke()` is a large share of what any Python-driven tool measures, and
`litert-benchmark` prints milliseconds with two decimals (0.01 ms). So the
fidelity comparison also uses a moderately sized ConvNet (a few ms per
inference), built here with seeded random weights (latency does not depend on
the weight values) and converted with the harness's own converters, and
EfficientNet-Lite0 when its artifacts are in the harness cache.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from harness.bench.errors import BenchError

#: the bench's working directory: its models and per-step workspaces (git-ignored under .harness/)
BENCH_DIR = Path(".harness/bench")

#: the bench ConvNet: (filters, stride) per 3x3 conv layer, on a 64x64x3 input (about 120 M MACs)
CONVNET_LAYERS = ((32, 1), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1))
CONVNET_INPUT = (1, 64, 64, 3)
CONVNET_NAME = "bench_convnet"


@dataclass(frozen=True)
class BenchModel:
    """One model as the benchmark sees it: a name and a file per format."""

    name: str
    input_shape: tuple
    #: format ('tflite', 'openvino') -> primary file (the OpenVINO .bin sits beside the .xml)
    files: Dict[str, Path] = field(default_factory=dict)
    note: str = ""


BUILD_VERSION = "1"


def _key(shape: tuple, arch: str) -> str:
    material = json.dumps({"shape": list(shape), "arch": arch, "layers": CONVNET_LAYERS, "v": BUILD_VERSION})
    return hashlib.sha256(material.encode()).hexdigest()[:12]


def build_keras_model(cache_dir: Path, name: str, shape: tuple, arch: str, note: str = "",
                      log=print) -> BenchModel:
    """A seeded Keras model ('tiny': a digits-sized CNN; 'convnet': CONVNET_LAYERS) as .tflite, .onnx and
    OpenVINO IR, built once into cache_dir/<name>-<key>/ by a child process with the frameworks' own
    converters (TFLiteConverter, tf2onnx, openvino.convert_model), so the bench does not lean on the
    pipeline it measures."""
    import os
    import subprocess
    import sys
    out = Path(cache_dir) / f"{name}-{_key(shape, arch)}"
    files = {"tflite": out / f"{name}.tflite", "onnx": out / f"{name}.onnx", "openvino": out / f"{name}.xml"}
    if not (out / ".complete").exists():
        log(f"  building {name} ({note or arch})")
        out.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run([sys.executable, "-c", _BUILD_SCRIPT, str(out), name, json.dumps(list(shape)), arch],
                              capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            raise BenchError(f"building {name} failed: {proc.stderr.strip()[-500:]}")
        (out / ".complete").touch()
    return BenchModel(name, tuple(shape), files, note)


_BUILD_SCRIPT = r"""
import json, sys
out, name, shape, arch = sys.argv[1], sys.argv[2], tuple(json.loads(sys.argv[3])), sys.argv[4]
import tensorflow as tf, tf_keras as keras, tf2onnx, openvino as ov
from harness.bench.models import CONVNET_LAYERS
keras.utils.set_random_seed(0)
layers = [keras.layers.Input(shape[1:], name="image")]
if arch == "tiny":
    layers += [keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
               keras.layers.Conv2D(64, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(),
               keras.layers.Flatten(), keras.layers.Dense(64, activation="relu")]
else:
    layers += [keras.layers.Conv2D(f, 3, strides=s, padding="same", activation="relu") for f, s in CONVNET_LAYERS]
    layers += [keras.layers.GlobalAveragePooling2D()]
model = keras.Sequential(layers + [keras.layers.Dense(10, name="logits")], name=name)
open(f"{out}/{name}.tflite", "wb").write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
spec = (tf.TensorSpec(shape, tf.float32, name="image"),)
tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=f"{out}/{name}.onnx")
ov.save_model(ov.convert_model(f"{out}/{name}.onnx"), f"{out}/{name}.xml")
"""


def build_convnet(cache_dir: Path) -> BenchModel:
    """The bench ConvNet (6 conv layers on 64x64x3, about 120 M MACs) in every format."""
    return build_keras_model(cache_dir, CONVNET_NAME, CONVNET_INPUT, "convnet",
                             "6 conv layers at 64x64x3, seeded random weights, about 120 M MACs")


def build_small(cache_dir: Path) -> BenchModel:
    """A digits-sized CNN on 8x8x1 (about 20 us): the small-model rows of the fidelity table."""
    return build_keras_model(cache_dir, "bench_small_cnn", (1, 8, 8, 1), "tiny",
                             "2 conv layers at 8x8x1, seeded random weights, about 20 us")


def find_cached_artifacts(cache_dir: Path, model: str, variant: str = "reference") -> Dict[str, Path]:
    """format -> primary file of the newest complete artifact of `model` in a harness cache."""
    found: Dict[str, Path] = {}
    root = Path(cache_dir) / "artifacts"
    for fmt in ("tflite", "openvino", "onnx"):
        entries = sorted((p for p in root.glob(f"{model}-{variant}-{fmt}-*") if (p / ".complete").exists()),
                         key=lambda p: p.stat().st_mtime)
        for entry in reversed(entries):
            try:
                primary = entry / json.loads((entry / "artifact.json").read_text())["primary"]
            except (OSError, ValueError, KeyError):
                continue
            if primary.exists():
                found[fmt] = primary
                break
    return found


def input_shape_of(files: Dict[str, Path]) -> Optional[tuple]:
    """The input shape with batch 1, read from the OpenVINO IR or the TFLite file."""
    if "openvino" in files:
        import openvino as ov
        shape = ov.Core().read_model(str(files["openvino"])).inputs[0].get_partial_shape()
        return (1,) + tuple(d.get_length() for d in list(shape)[1:])
    if "tflite" in files:
        from ai_edge_litert.interpreter import Interpreter
        return tuple(int(d) for d in Interpreter(model_path=str(files["tflite"])).get_input_details()[0]["shape"])
    return None


def cached_model(cache_dir: Path, name: str, note: str = "") -> Optional[BenchModel]:
    files = {f: p for f, p in find_cached_artifacts(cache_dir, name).items() if f in ("tflite", "openvino")}
    if not files:
        return None
    shape = input_shape_of(files)
    return BenchModel(name, shape, files, note) if shape else None


def models_for_fidelity(harness_cache: Path, bench_cache: Path, default_cache: Path) -> List[BenchModel]:
    """digits_cnn (from the bench's own profile cache), the bench ConvNet, and EfficientNet-Lite0 if cached."""
    models = []
    digits = cached_model(harness_cache, "digits_cnn", "the default model; about 10 µs per inference, so "
                          "per-call Python overhead and the tools' 0.01 ms print resolution dominate")
    if digits:
        models.append(digits)
    models.append(build_small(bench_cache))
    models.append(build_convnet(bench_cache))
    for cache in (harness_cache, default_cache):
        effnet = cached_model(cache, "efficientnet_lite0", "EfficientNet-Lite0 from the harness cache")
        if effnet:
            models.append(effnet)
            break
    return models

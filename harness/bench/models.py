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


def _convnet_recipe():
    from ..recipes import DataSpec, InputSpec, ModelRecipe, OutputSpec
    return ModelRecipe(name=CONVNET_NAME, framework="keras", builder="none",
                       input=InputSpec("image", CONVNET_INPUT), output=OutputSpec("logits", 10),
                       data=DataSpec("none"), formats=("tflite", "openvino"),
                       description="benchmark ConvNet, seeded random weights")


def _convnet_key() -> str:
    from ..formats import CONVERTER_VERSION
    material = json.dumps({"layers": CONVNET_LAYERS, "input": CONVNET_INPUT, "converter": CONVERTER_VERSION})
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def build_convnet(cache_dir: Path) -> BenchModel:
    """The bench ConvNet as .tflite and OpenVINO IR, built once into cache_dir/<key>/."""
    out = Path(cache_dir) / f"{CONVNET_NAME}-{_convnet_key()}"
    files = {"tflite": out / f"{CONVNET_NAME}.tflite", "openvino": out / f"{CONVNET_NAME}.xml"}
    if not (out / ".complete").exists():
        from ..formats import CONVERTERS
        from ..zoo.keras_util import import_tf, set_seed
        _, keras = import_tf()
        recipe = _convnet_recipe()
        out.mkdir(parents=True, exist_ok=True)
        set_seed(0)
        layers = [keras.layers.Input(CONVNET_INPUT[1:], name=recipe.input.name)]
        for filters, stride in CONVNET_LAYERS:
            layers.append(keras.layers.Conv2D(filters, 3, strides=stride, padding="same", activation="relu"))
        layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, name=recipe.output.name)]
        model_path = out / "model.h5"
        keras.Sequential(layers, name=CONVNET_NAME).save(model_path)
        for fmt, path in files.items():
            produced = CONVERTERS.get(("keras", fmt))(model_path, recipe, out)
            assert produced == path, (produced, path)
        (out / ".complete").touch()
    return BenchModel(CONVNET_NAME, CONVNET_INPUT, files,
                      note="6 conv layers at 64x64x3, seeded random weights, about 120 M MACs")


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
    models.append(build_convnet(bench_cache))
    for cache in (harness_cache, default_cache):
        effnet = cached_model(cache, "efficientnet_lite0", "EfficientNet-Lite0 from the harness cache")
        if effnet:
            models.append(effnet)
            break
    return models

"""Helpers the compressors share: parameters, calibration data, reading weights back from artifacts.

Heavy imports stay inside the functions (`import harness` must not import TensorFlow).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from .weights import dequantize, matched_rel_frobenius


def take_params(ctx, compressor: str, params: Mapping[str, Any], defaults: Mapping[str, Any]) -> Dict[str, Any]:
    """The compressor's parameters with defaults filled in; an unknown one names the recipe field."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ConfigError(getattr(ctx.recipe, "source_path", ""), f"compressor {compressor!r} has no parameter(s) "
                          f"{unknown}; known: {', '.join(sorted(defaults)) or 'none'}", "variants[].params")
    return {**defaults, **params}


def calibration(ctx, compressor: str, n: Optional[int] = None) -> List[Dict[str, np.ndarray]]:
    """Calibration samples, each a dict of input name -> the whole input tensor, in the model's dtypes."""
    if ctx.calibration is None:
        raise ConfigError(getattr(ctx.recipe, "source_path", "") or "--calibration", f"compressor {compressor!r} "
                          "needs calibration samples: give --calibration calib.npz or --data (split for calibration)")
    count = min(int(n or ctx.recipe.data.calibration_samples), ctx.calibration.n_samples)
    return [ctx.calibration.sample(i) for i in range(count)]


def in_order(sample: Dict[str, np.ndarray], names: List[str]) -> List[np.ndarray]:
    """A sample's arrays in the order of a converted model's input names (matched like the agent matches)."""
    from ..interface import match_names
    keys = list(sample)
    order = match_names(names, keys)
    if order is None:
        raise ValueError(f"calibration inputs {keys} do not match the model's inputs {names}")
    return [sample[keys[k]] for k in order]


def require_source(ctx, compressor: str, *formats: str) -> None:
    if ctx.source_format not in formats:
        raise ConfigError(getattr(ctx.recipe, "source_path", ""), f"compressor {compressor!r} works on "
                          f"{' or '.join(formats)} models, not {ctx.source_format!r}; pick another compressor "
                          "for this variant", "variants[].compressor")


def training_data(ctx, compressor: str):
    """The zoo data set's training split; compressors that train need one (a model file has none)."""
    if ctx.train_data is None:
        raise ConfigError(getattr(ctx.recipe, "source_path", "") or "--model-file", f"compressor {compressor!r} "
                          "trains the model and needs a labelled training split, which only zoo data sets have; "
                          "use a post-training compressor (ort_int8, ov_int8, tflite_int8)")
    return ctx.train_data


def reference_weights(ctx) -> Tuple[List[np.ndarray], Optional[int]]:
    """(the reference's weights as arrays, its parameter count): from the framework model for keras and
    torch modules, else the float initializers of its ONNX conversion."""
    if ctx.source_format == "keras":
        model = load_keras(ctx.reference_model_path)
        return keras_weights(model), int(model.count_params())
    if ctx.source_format == "torch_module":
        from ..sources import SOURCES
        model = SOURCES.get("torch_module")().load(ctx.reference_model_path)
        return [p.detach().cpu().numpy() for p in model.parameters()], int(sum(p.numel() for p in model.parameters()))
    from .ort_quant import onnx_weight_tensors
    weights = onnx_weight_tensors(ctx.convert_reference("onnx"))
    return weights, int(sum(w.size for w in weights))


# ---------------------------------------------------------------- Keras
def load_keras(path: Path):
    from ..sources.tensorflow import load_keras_model
    return load_keras_model(path)


def keras_weights(model) -> List[np.ndarray]:
    """Trainable weights (kernels and biases) in layer order."""
    return [np.asarray(w.numpy()) for w in model.trainable_weights]


def save_keras(model, out_dir: Path, name: str = "model.h5") -> Path:
    path = Path(out_dir) / name
    model.save(path)
    return path


def compile_for_finetune(model, learning_rate: float, from_logits: bool) -> None:
    from ..zoo.keras_util import import_tf
    _, keras = import_tf()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits), metrics=["accuracy"])


# ---------------------------------------------------------------- TFLite
#: TFLite schema TensorType codes of tensors that can hold weights
_TFLITE_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 7: np.int16, 9: np.int8}


def tflite_weight_tensors(path: Path) -> List[np.ndarray]:
    """Every constant float or quantized tensor stored in a .tflite file, dequantized to float64.

    Read from the flatbuffer itself, so what is measured is what ships: the
    int8 values and their per-channel scales as the converter wrote them.
    Integer constants without quantization parameters (shapes, axes) are skipped.
    """
    from ..zoo.keras_util import import_tf
    import_tf()
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    out = []
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            buffer = model.buffers[tensor.buffer]
            dtype = _TFLITE_TYPES.get(tensor.type)
            if buffer.data is None or len(buffer.data) == 0 or dtype is None:
                continue
            raw = np.frombuffer(bytes(bytearray(buffer.data)), dtype=dtype)
            shape = tuple(int(d) for d in tensor.shape) if tensor.shape is not None else (raw.size,)
            values = raw.reshape(shape) if int(np.prod(shape)) == raw.size else raw
            q = tensor.quantization
            scale = None if q is None or q.scale is None or len(q.scale) == 0 else np.asarray(q.scale)
            if scale is not None and np.any(scale != 0):
                zero_point = np.asarray(q.zeroPoint) if q.zeroPoint is not None else np.zeros_like(scale)
                axis = int(q.quantizedDimension) if scale.size > 1 else None
                out.append(dequantize(values, scale, zero_point, axis))
            elif np.issubdtype(dtype, np.floating):
                out.append(values.astype(np.float64))
    return out


def weight_metrics(reference: List[np.ndarray], candidates: List[np.ndarray]) -> Dict[str, Any]:
    """weight_rel_frobenius over the reference weights found in the candidates, and how much was found."""
    distance, covered = matched_rel_frobenius(reference, candidates)
    return {"weight_rel_frobenius": distance, "weights_matched_fraction": round(covered, 6)}

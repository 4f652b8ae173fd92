"""Helpers the compressors share: parameters, calibration data, reading weights back from artifacts.

Heavy imports stay inside the functions (`import harness` must not import TensorFlow).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from harness.core.errors import ConfigError
from harness.prepare.compressors.weights import keras_weights, matched_rel_frobenius, onnx_weight_tensors


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
    from harness.schema.interface import match_names
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
        from harness.prepare.sources import SOURCES
        model = SOURCES.get("torch_module")().load(ctx.reference_model_path)
        return [p.detach().cpu().numpy() for p in model.parameters()], int(sum(p.numel() for p in model.parameters()))
    weights = onnx_weight_tensors(ctx.convert_reference("onnx"))
    return weights, int(sum(w.size for w in weights))


# ---------------------------------------------------------------- Keras
def load_keras(path: Path):
    from harness.prepare.sources.tensorflow import load_keras_model
    return load_keras_model(path)


def save_keras(model, out_dir: Path, name: str = "model.h5") -> Path:
    path = Path(out_dir) / name
    model.save(path)
    return path


def compile_for_finetune(model, learning_rate: float, from_logits: bool) -> None:
    from harness.zoo.keras_util import import_tf
    _, keras = import_tf()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits), metrics=["accuracy"])


def weight_metrics(reference: List[np.ndarray], candidates: List[np.ndarray]) -> Dict[str, Any]:
    """weight_rel_frobenius over the reference weights found in the candidates, and how much was found."""
    distance, covered = matched_rel_frobenius(reference, candidates)
    return {"weight_rel_frobenius": distance, "weights_matched_fraction": round(covered, 6)}

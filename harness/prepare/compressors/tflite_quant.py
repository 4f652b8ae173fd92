"""TFLite post-training quantization of a Keras reference: dynamic range, float16, full integer int8.

Each produces a ready-made .tflite artifact (the variant has no other format).
Full int8 quantizes weights and activations with ranges from a representative
data set (the recipe's calibration samples) and, by default, makes the
model's input and output int8 too: the device agent quantizes inputs and
dequantizes outputs with the tensors' own scale and zero point.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from harness.prepare.compress import VariantModel, register_compressor
from harness.prepare.compressors._common import (
    calibration,
    in_order,
    load_keras,
    reference_weights,
    require_source,
    take_params,
    weight_metrics,
)
from harness.prepare.compressors.weights import tflite_weight_tensors


def representative_dataset(samples, names):
    """TFLite's representative data: one sample at a time, keyed by the signature's input names (the
    calibrating interpreter's tensor order need not be the signature's)."""
    def gen():
        for sample in samples:
            yield dict(zip(names, in_order(sample, names)))
    return gen


def source_function(ctx, model=None):
    """(a concrete function with the interface's names, the object that owns its variables) of the reference:
    a Keras model object (given, e.g. a QAT model, or loaded), or a SavedModel's serving signature."""
    from harness.prepare.converters import ConversionContext
    from harness.prepare.converters.tensorflow import input_signature, keras_function
    from harness.zoo.keras_util import import_tf
    tf, _ = import_tf()
    conversion = ConversionContext(ctx.recipe.name, ctx.interface)
    if model is not None or ctx.source_format == "keras":
        model = model if model is not None else load_keras(ctx.reference_model_path)
        return keras_function(tf, model, conversion), model
    from harness.prepare.sources.tensorflow import serving_signature
    loaded, signature = serving_signature(ctx.reference_model_path)
    names = ctx.interface.input_names
    function = tf.function(lambda *xs: signature(**dict(zip(names, xs))), input_signature=input_signature(tf, conversion))
    return function.get_concrete_function(), loaded


def tflite_variant(ctx, mode: str, out_dir: Path, io: str = "int8", calibration_samples: int = 0,
                   keras_model=None) -> VariantModel:
    """Convert the reference (or a given Keras model) with one of the TFLite quantization modes; measure
    weights against the reference."""
    from harness.zoo.keras_util import import_tf
    tf, _ = import_tf()

    function, owner = source_function(ctx, keras_model)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], owner)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    io_dtypes: tuple = ()
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        converter.representative_dataset = representative_dataset(
            calibration(ctx, f"tflite_{mode}", calibration_samples), ctx.interface.input_names)
        # Integer-only kernels: a float fallback would hide an op the int8 path cannot run.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
            io_dtypes = ("int8",)
        elif io != "float32":
            raise ValueError(f"io must be 'int8' or 'float32', not {io!r}")
    elif mode != "dynamic":
        raise ValueError(f"unknown TFLite quantization mode {mode!r}")
    flatbuffer = converter.convert()
    path = Path(out_dir) / f"{ctx.recipe.name}.tflite"
    path.write_bytes(flatbuffer)
    weights, param_count = reference_weights(ctx)
    metrics: Dict[str, Any] = {"param_count": param_count, "quantization": f"tflite_{mode}",
                               **weight_metrics(weights, tflite_weight_tensors(path))}
    return VariantModel(artifacts={"tflite": path}, io_dtypes=io_dtypes, metrics=metrics)


def _register(name: str, mode: str, defaults: Dict[str, Any]):
    @register_compressor(name, defaults)
    def compress(ctx, params: Dict[str, Any], out_dir: Path) -> VariantModel:
        require_source(ctx, name, "keras", "savedmodel")
        p = take_params(ctx, name, params, defaults)
        return tflite_variant(ctx, mode, out_dir, **p)
    compress.__doc__ = f"TFLite {mode} post-training quantization → {{'tflite': path}}."
    return compress


tflite_dynamic = _register("tflite_dynamic", "dynamic", {})
tflite_float16 = _register("tflite_float16", "float16", {})
#: io: 'int8' (integer input and output) or 'float32'; calibration_samples: 0 = the recipe's
tflite_int8 = _register("tflite_int8", "int8", {"io": "int8", "calibration_samples": 0})

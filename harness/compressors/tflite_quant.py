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

from ..compress import COMPRESSORS, VariantModel
from ._common import calibration, load_keras, reference_weights, require_framework, take_params, \
    tflite_weight_tensors, weight_metrics


def representative_dataset(samples):
    """TFLite's representative data: one single-sample batch at a time, as the converter calibrates per batch."""
    def gen():
        for i in range(len(samples)):
            yield [samples[i:i + 1]]
    return gen


def tflite_variant(ctx, keras_model, mode: str, out_dir: Path, io: str = "int8",
                   calibration_samples: int = 0) -> VariantModel:
    """Convert a Keras model object with one of the TFLite quantization modes; measure weights against the reference."""
    from ..zoo.keras_util import import_tf
    tf, _ = import_tf()

    # From a function whose input and output carry the recipe's names: a QAT model's output
    # layer is renamed ('quant_logits'), and the interface check expects the recipe's names.
    recipe = ctx.recipe
    spec = tf.TensorSpec((None,) + tuple(recipe.input.shape[1:]), tf.as_dtype(recipe.input.dtype),
                         name=recipe.input.name)
    function = tf.function(lambda x: {recipe.output.name: keras_model(x, training=False)}, input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    io_dtypes: tuple = ()
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        converter.representative_dataset = representative_dataset(calibration(ctx, calibration_samples))
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
    @COMPRESSORS.register(name)
    def compress(ctx, params: Dict[str, Any], out_dir: Path) -> VariantModel:
        require_framework(ctx, name, "keras")
        p = take_params(ctx, name, params, defaults)
        return tflite_variant(ctx, load_keras(ctx.reference_model_path), mode, out_dir, **p)
    compress.__doc__ = f"TFLite {mode} post-training quantization → {{'tflite': path}}."
    return compress


tflite_dynamic = _register("tflite_dynamic", "dynamic", {})
tflite_float16 = _register("tflite_float16", "float16", {})
#: io: 'int8' (integer input and output) or 'float32'; calibration_samples: 0 = the recipe's
tflite_int8 = _register("tflite_int8", "int8", {"io": "int8", "calibration_samples": 0})

"""Quantization-aware training (tensorflow-model-optimization), then a full-int8 TFLite artifact.

quantize_model inserts fake-quantization on weights and activations; a short
fine-tune lets the weights adapt to int8 rounding; the TFLite converter then
uses the learnt ranges. The QAT Keras model needs TF-MOT's custom objects to
load, so the variant is the .tflite file only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from ..compress import COMPRESSORS, VariantModel
from ._common import compile_for_finetune, load_keras, require_framework, take_params
from .tflite_quant import tflite_variant

DEFAULTS = {
    "epochs": 2,
    "learning_rate": 0.0,        # 0: a tenth of the recipe's train.learning_rate (fine-tuning, not training)
    "io": "int8",                # 'int8' or 'float32' model input/output
    "calibration_samples": 0,    # 0: the recipe's
}


@COMPRESSORS.register("qat")
def qat(ctx, params: Dict[str, Any], out_dir: Path) -> VariantModel:
    require_framework(ctx, "qat", "keras")
    p = take_params(ctx, "qat", params, DEFAULTS)
    from ..zoo.keras_util import import_tf, set_seed
    import_tf()
    import tensorflow_model_optimization as tfmot

    set_seed(ctx.seed)
    model = tfmot.quantization.keras.quantize_model(load_keras(ctx.reference_model_path))
    compile_for_finetune(model, float(p["learning_rate"]) or ctx.recipe.train.learning_rate / 10,
                         from_logits=ctx.recipe.output.kind == "logits")
    model.fit(ctx.data.x_train, ctx.data.y_train, epochs=int(p["epochs"]), batch_size=ctx.recipe.train.batch_size,
              verbose=0, shuffle=True)
    variant = tflite_variant(ctx, model, "int8", out_dir, io=p["io"], calibration_samples=p["calibration_samples"])
    variant.metrics["quantization"] = "qat_int8"
    return variant

"""Quantization-aware training (tensorflow-model-optimization), then a full-int8 TFLite artifact.

quantize_model inserts fake-quantization on weights and activations; a short
fine-tune lets the weights adapt to int8 rounding; the TFLite converter then
uses the learnt ranges. The QAT Keras model needs TF-MOT's custom objects to
load, so the variant is the .tflite file only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from harness.prepare.compress import VariantModel, register_compressor
from harness.prepare.compressors._common import (
    compile_for_finetune,
    load_keras,
    require_source,
    take_params,
    training_data,
)
from harness.prepare.compressors.tflite_quant import tflite_variant

DEFAULTS = {
    "epochs": 2,
    "learning_rate": 0.0,        # 0: a tenth of the recipe's train.learning_rate (fine-tuning, not training)
    "io": "int8",                # 'int8' or 'float32' model input/output
    "calibration_samples": 0,    # 0: the recipe's
}


@register_compressor("qat", DEFAULTS)
def qat(ctx, params: Dict[str, Any], out_dir: Path) -> VariantModel:
    require_source(ctx, "qat", "keras")
    data = training_data(ctx, "qat")
    p = take_params(ctx, "qat", params, DEFAULTS)
    from harness.zoo.keras_util import import_tf, set_seed
    import_tf()
    import tensorflow_model_optimization as tfmot

    set_seed(ctx.seed)
    model = tfmot.quantization.keras.quantize_model(load_keras(ctx.reference_model_path))
    compile_for_finetune(model, float(p["learning_rate"]) or ctx.recipe.train.learning_rate / 10,
                         from_logits=ctx.recipe.output.kind == "logits")
    model.fit(data.x_train, data.y_train, epochs=int(p["epochs"]), batch_size=ctx.recipe.train.batch_size,
              verbose=0, shuffle=True)
    variant = tflite_variant(ctx, "int8", out_dir, io=p["io"], calibration_samples=p["calibration_samples"],
                             keras_model=model)
    variant.metrics["quantization"] = "qat_int8"
    return variant

"""Magnitude pruning of a Keras reference with tensorflow-model-optimization.

prune_low_magnitude wraps every prunable layer; a schedule raises the share
of zeroed (smallest-magnitude) kernel weights to the target while the model
fine-tunes on the training split, then strip_pruning leaves a plain Keras
model whose kernels hold exact zeros. Every converter takes it; the zeros
make the artifact no smaller raw, but much smaller gzipped.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict

from harness.prepare.compress import VariantModel, register_compressor
from harness.prepare.compressors._common import (
    compile_for_finetune,
    load_keras,
    require_source,
    save_keras,
    take_params,
    training_data,
)
from harness.prepare.compressors.weights import keras_weights, rel_frobenius, sparsity

DEFAULTS = {
    "sparsity": 0.5,        # target fraction of zero kernel weights
    "epochs": 4,            # fine-tuning epochs while pruning
    "schedule": "polynomial",  # 'polynomial' (0 → target over epochs - 1) or 'constant'
    "frequency": 10,        # steps between pruning updates
    "learning_rate": 0.0,   # 0: the recipe's train.learning_rate
}


@register_compressor("keras_prune", DEFAULTS)
def keras_prune(ctx, params: Dict[str, Any], out_dir: Path) -> VariantModel:
    require_source(ctx, "keras_prune", "keras")
    data = training_data(ctx, "keras_prune")
    p = take_params(ctx, "keras_prune", params, DEFAULTS)
    target = float(p["sparsity"])
    if not 0 <= target < 1:
        raise ValueError(f"sparsity must be in [0, 1), not {target}")
    from harness.zoo.keras_util import import_tf, set_seed
    import_tf()
    import tensorflow_model_optimization as tfmot

    set_seed(ctx.seed)
    reference = load_keras(ctx.reference_model_path)
    reference_weights = keras_weights(reference)
    epochs = max(1, int(p["epochs"]))
    batch = ctx.recipe.train.batch_size
    steps_per_epoch = math.ceil(len(data.x_train) / batch)
    frequency = max(1, int(p["frequency"]))
    if p["schedule"] == "polynomial":
        # Reach the target one epoch before the end, so the last epoch recovers at full sparsity.
        end_step = max(frequency, steps_per_epoch * max(1, epochs - 1))
        schedule = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=target, begin_step=0,
                                                        end_step=end_step, frequency=frequency)
    elif p["schedule"] == "constant":
        schedule = tfmot.sparsity.keras.ConstantSparsity(target, begin_step=0, frequency=frequency)
    else:
        raise ValueError(f"schedule must be 'polynomial' or 'constant', not {p['schedule']!r}")
    pruned = tfmot.sparsity.keras.prune_low_magnitude(reference, pruning_schedule=schedule)
    compile_for_finetune(pruned, float(p["learning_rate"]) or ctx.recipe.train.learning_rate,
                         from_logits=ctx.recipe.output.kind == "logits")
    pruned.fit(data.x_train, data.y_train, epochs=epochs, batch_size=batch, verbose=0, shuffle=True,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    path = save_keras(stripped, out_dir)
    weights = keras_weights(stripped)
    nonzero = int(sum((w != 0).sum() for w in weights))
    metrics = {"param_count": int(stripped.count_params()), "nonzero_param_count": nonzero,
               "target_sparsity": target, "sparsity": sparsity(weights),
               "weight_rel_frobenius": rel_frobenius(reference_weights, weights)}
    return VariantModel(model_path=path, source_format="keras", metrics=metrics)

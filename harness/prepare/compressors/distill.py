"""Knowledge distillation (Keras): train a narrower student with the reference as teacher.

    loss = alpha * CE(y, student) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T))

The student is the teacher's own architecture with every hidden layer's
`filters`/`units` scaled by `width` (the output layer keeps its classes),
initialised afresh from the recipe's seed. T^2 keeps the soft term's gradients
on the scale of the hard term's as T grows (Hinton et al., 2015).

Keras recipes only: a torch module has no config from which to derive a
narrower student; a torch recipe asking for it gets an error that says so.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict

import numpy as np

from harness.prepare.compress import VariantModel, register_compressor
from harness.prepare.compressors._common import load_keras, require_source, save_keras, take_params, training_data

DEFAULTS = {
    "alpha": 0.5,          # weight of the hard-label cross-entropy
    "temperature": 4.0,    # softmax temperature of the soft term
    "width": 0.5,          # student filters/units as a fraction of the teacher's
    "epochs": 0,           # 0: the recipe's train.epochs
    "learning_rate": 0.0,  # 0: the recipe's train.learning_rate
}


def distillation_loss(labels, student_logits, teacher_logits, alpha: float, temperature: float):
    """Batch mean of alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T)), as a TF scalar."""
    from harness.zoo.keras_util import import_tf
    tf, _ = import_tf()
    t = float(temperature)
    ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int64), logits=student_logits))
    log_p_teacher = tf.nn.log_softmax(teacher_logits / t, axis=-1)
    log_p_student = tf.nn.log_softmax(student_logits / t, axis=-1)
    kl = tf.reduce_mean(tf.reduce_sum(tf.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1))
    return alpha * ce + (1.0 - alpha) * t * t * kl


def student_config(teacher, width: float, output_layer: str) -> Dict[str, Any]:
    """The teacher's model config with hidden layers' filters/units scaled by width."""
    config = copy.deepcopy(teacher.get_config())
    layers = config["layers"]
    last = layers[-1]["config"].get("name")
    for layer in layers:
        cfg = layer["config"]
        if cfg.get("name") in (output_layer, last):
            continue
        for key in ("filters", "units"):
            if key in cfg:
                cfg[key] = max(1, int(round(cfg[key] * width)))
    config["name"] = f"{config.get('name', 'model')}_student"
    return config


def make_student(teacher, width: float, output_layer: str):
    from harness.zoo.keras_util import import_tf
    _, keras = import_tf()
    config = student_config(teacher, width, output_layer)
    cls = keras.Sequential if isinstance(teacher, keras.Sequential) else keras.Model
    return cls.from_config(config)


@register_compressor("distill", DEFAULTS)
def distill(ctx, params: Dict[str, Any], out_dir: Path) -> VariantModel:
    require_source(ctx, "distill", "keras")
    data = training_data(ctx, "distill")
    p = take_params(ctx, "distill", params, DEFAULTS)
    alpha, temperature, width = float(p["alpha"]), float(p["temperature"]), float(p["width"])
    if not 0 <= alpha <= 1 or temperature <= 0 or not 0 < width <= 1:
        raise ValueError(f"need 0 <= alpha <= 1, temperature > 0, 0 < width <= 1; got {alpha}, {temperature}, {width}")
    from harness.zoo.keras_util import import_tf, keras_macs, set_seed
    tf, keras = import_tf()

    set_seed(ctx.seed)
    teacher = load_keras(ctx.reference_model_path)
    probabilities = ctx.recipe.output.kind == "probabilities"

    def as_logits(y):  # log-probabilities are logits of the same distribution
        return tf.math.log(tf.clip_by_value(y, 1e-12, 1.0)) if probabilities else y

    x, y = data.x_train, data.y_train
    teacher_logits = np.asarray(as_logits(teacher.predict(x, batch_size=256, verbose=0)), np.float32)
    student = make_student(teacher, width, ctx.recipe.output.name)
    optimizer = keras.optimizers.Adam(float(p["learning_rate"]) or ctx.recipe.train.learning_rate)

    @tf.function
    def step(xb, yb, tb):
        with tf.GradientTape() as tape:
            loss = distillation_loss(yb, as_logits(student(xb, training=True)), tb, alpha, temperature)
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables))
        return loss

    batches = tf.data.Dataset.from_tensor_slices((x, y, teacher_logits)) \
        .shuffle(len(x), seed=ctx.seed, reshuffle_each_iteration=True).batch(ctx.recipe.train.batch_size)
    for _ in range(int(p["epochs"]) or ctx.recipe.train.epochs):
        for xb, yb, tb in batches:
            step(xb, yb, tb)
    path = save_keras(student, out_dir)
    metrics = {"param_count": int(student.count_params()), "teacher_param_count": int(teacher.count_params()),
               "param_ratio": student.count_params() / teacher.count_params(), "macs": keras_macs(student),
               "teacher_macs": keras_macs(teacher), "alpha": alpha, "temperature": temperature, "width": width}
    return VariantModel(model_path=path, source_format="keras", metrics=metrics)

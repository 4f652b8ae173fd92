"""TensorFlow/Keras set-up shared by Keras builders, converters and compressors.

TF-MOT supports only legacy Keras (tf-keras), so TF_USE_LEGACY_KERAS must be
set before TensorFlow is first imported; this module is the one place that does it.
"""
from __future__ import annotations

import os


def import_tf():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from harness.core.quiet import native_stderr_quieted

    with native_stderr_quieted():
        import tensorflow as tf
        import tf_keras as keras

    tf.get_logger().setLevel("ERROR")
    return tf, keras


def set_seed(seed: int) -> None:
    _, keras = import_tf()
    keras.utils.set_random_seed(seed)
    try:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
    except Exception:  # older TF: determinism is best effort
        pass


def compile_and_fit(model, recipe, x, y, epochs=None):
    """Train a classifier the way every Keras recipe does: Adam, cross-entropy on logits, the recipe's settings."""
    _, keras = import_tf()
    model.compile(optimizer=keras.optimizers.Adam(recipe.train.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=epochs or recipe.train.epochs, batch_size=recipe.train.batch_size, verbose=0,
              shuffle=True)
    return model


def train_and_save(model, recipe, data, out_dir):
    """A builder's whole job for a Keras recipe: seeded training on the train split, saved as model.h5."""
    from pathlib import Path

    compile_and_fit(model, recipe, data.x_train, data.y_train)
    path = Path(out_dir) / "model.h5"
    model.save(path)
    return path


def count_params(model) -> int:
    return int(model.count_params())


def keras_macs(model) -> int:
    """Multiply-accumulates of one inference, from layer shapes (Conv2D, Dense, DepthwiseConv2D)."""
    _, keras = import_tf()
    macs = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # pruning/QAT wrappers keep the real layer inside
        cfg_cls = type(inner).__name__
        try:
            out_shape = layer.output_shape
        except AttributeError:
            continue
        if cfg_cls == "Conv2D":
            kh, kw = inner.kernel_size
            cin = inner.input_shape[-1]
            macs += int(out_shape[1] * out_shape[2] * out_shape[3] * kh * kw * cin // inner.groups)
        elif cfg_cls == "DepthwiseConv2D":
            kh, kw = inner.kernel_size
            macs += int(out_shape[1] * out_shape[2] * out_shape[3] * kh * kw)
        elif cfg_cls == "Dense":
            macs += int(inner.input_shape[-1] * out_shape[-1])
    return macs

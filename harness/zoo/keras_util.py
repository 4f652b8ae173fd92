"""TensorFlow/Keras set-up shared by Keras builders, converters and compressors.

TF-MOT supports only legacy Keras (tf-keras), so TF_USE_LEGACY_KERAS must be
set before TensorFlow is first imported; this module is the one place that does it.
"""
from __future__ import annotations

import os


def import_tf():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ..quiet import native_stderr_quieted

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

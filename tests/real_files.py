"""Small real models with the quirks of files nobody on the project wrote (issue 21), built in the tests
(imported by tests; pytest puts tests/ on sys.path). Nothing is downloaded: weights are seeded."""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np


def _keras():
    from harness.zoo.keras_util import import_tf
    return import_tf()


@functools.lru_cache(maxsize=None)
def keras_batch_tflite() -> Path:
    """A Keras CNN converted with TFLiteConverter.from_keras_model: shape_signature [-1, 8, 8, 3]."""
    tf, keras = _keras()
    keras.utils.set_random_seed(0)
    image = keras.layers.Input((8, 8, 3), name="input_1")
    hidden = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(image))
    model = keras.Model(image, keras.layers.Dense(5, name="logits")(hidden))
    path = Path(tempfile.mkdtemp(prefix="real-files-")) / "kbatch.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path

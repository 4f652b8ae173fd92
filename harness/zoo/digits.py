"""The default model: a small CNN on scikit-learn's digits, trained in seconds."""
from __future__ import annotations

from pathlib import Path

from harness.zoo import BUILDERS
from harness.zoo.keras_util import import_tf, set_seed, train_and_save


def digits_cnn_architecture(recipe, width: int = 1):
    _, keras = import_tf()
    h, w, c = recipe.input.shape[1:]
    return keras.Sequential([
        keras.layers.Input((h, w, c), name=recipe.input.name),
        keras.layers.Conv2D(16 * width, 3, activation="relu", padding="same"),
        # 160k parameters: big enough that an int8 artifact's fixed overhead (graph, names,
        # quantization parameters) does not hide the 4x weight saving; trains in a few seconds.
        keras.layers.Conv2D(64 * width, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(256 * width, activation="relu"),
        keras.layers.Dense(recipe.output.classes, name=recipe.output.name),
    ], name=recipe.name)


@BUILDERS.register("digits_cnn")
def build_digits_cnn(recipe, data, out_dir: Path) -> Path:
    """Train the reference model; returns the saved Keras model file."""
    set_seed(recipe.seed)  # before the layers are made: their initial weights come from the seed
    return train_and_save(digits_cnn_architecture(recipe), recipe, data, out_dir)

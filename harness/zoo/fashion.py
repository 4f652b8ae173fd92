"""Fashion-MNIST from the Debian package, and a small Keras CNN trained from it.

The data are the idx .gz files that `dataset-fashion-mnist` installs under
/usr/share/datasets/fashion-mnist (60,000 training and 10,000 test images of
28x28 grey clothing, 10 classes); nothing is downloaded. The published
train/test split is kept, so a recipe's `data.eval_fraction` does not apply:
the evaluation split is the 10,000 test images (limit it with `eval_samples`).
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Tuple

import numpy as np

from harness.core.errors import HarnessError
from harness.zoo import BUILDERS, DATASETS
from harness.zoo.datasets import Dataset
from harness.zoo.keras_util import import_tf, set_seed, train_and_save

#: where the Debian package puts the files
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
#: training images kept by the 'fashion_mnist_small' data set (seeded, the same for every run)
SMALL_TRAIN_SAMPLES = 12000


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip'd): big-endian magic (0, 0, dtype code, ndim), then the dims, then the data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise HarnessError(f"{path}: not an unsigned-byte idx file (bad magic {raw[:4]!r}); "
                           "reinstall it: apt-get install --reinstall dataset-fashion-mnist")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise HarnessError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes) but holds {data.size}; "
                           "the file is truncated: apt-get install --reinstall dataset-fashion-mnist")
    return data.reshape(dims)


def load_split(split: str, root: Path = FASHION_DIR) -> Tuple[np.ndarray, np.ndarray]:
    """Raw uint8 images (n, 28, 28) and labels (n,) of 'train' or 'test'."""
    images_name, labels_name = FILES[split]
    missing = [name for name in (images_name, labels_name) if not (root / name).exists()]
    if missing:
        raise HarnessError(f"Fashion-MNIST not found: {root} lacks {', '.join(missing)}. Install the Debian "
                           "package with `make system-deps` (or `apt-get install -y dataset-fashion-mnist`)")
    images, labels = read_idx(root / images_name), read_idx(root / labels_name)
    if images.shape[0] != labels.shape[0]:
        raise HarnessError(f"{root}: {split} has {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


def _to_model_layout(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0)[..., None]  # NHWC, [0, 1]


def fashion_mnist_dataset(name: str, train_samples: int = 0, seed: int = 0, root: Path = FASHION_DIR) -> Dataset:
    x_train, y_train = load_split("train", root)
    x_test, y_test = load_split("test", root)
    if train_samples and train_samples < len(x_train):
        keep = np.sort(np.random.default_rng(seed).permutation(len(x_train))[:train_samples])
        x_train, y_train = x_train[keep], y_train[keep]
    # the test split is shuffled once (seeded) so that `eval_samples` takes a class-mixed prefix
    order = np.random.default_rng(seed).permutation(len(x_test))
    return Dataset(name, _to_model_layout(x_train), y_train.astype(np.int64),
                   _to_model_layout(x_test[order]), y_test[order].astype(np.int64))


@DATASETS.register("fashion_mnist")
def fashion_mnist(eval_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """All 60,000 training images; evaluation on the published test split (eval_fraction does not apply)."""
    return fashion_mnist_dataset("fashion_mnist", 0, seed)


@DATASETS.register("fashion_mnist_small")
def fashion_mnist_small(eval_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A seeded 12,000-image subset of the training split (faster training, distillation and QAT)."""
    return fashion_mnist_dataset("fashion_mnist_small", SMALL_TRAIN_SAMPLES, seed)


def fashion_cnn_architecture(recipe, width: int = 1):
    _, keras = import_tf()
    h, w, c = recipe.input.shape[1:]
    return keras.Sequential([
        keras.layers.Input((h, w, c), name=recipe.input.name),
        keras.layers.Conv2D(16 * width, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32 * width, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64 * width, activation="relu"),
        keras.layers.Dense(recipe.output.classes, name=recipe.output.name),
    ], name=recipe.name)


@BUILDERS.register("fashion_cnn")
def build_fashion_cnn(recipe, data: Dataset, out_dir: Path) -> Path:
    """Train the small CNN (options: width, default 1); returns the saved Keras model file."""
    set_seed(recipe.seed)  # before the layers are made: their initial weights come from the seed
    return train_and_save(fashion_cnn_architecture(recipe, int(recipe.options.get("width", 1))), recipe, data,
                          out_dir)

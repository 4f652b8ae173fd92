"""Data sets that ship with installed packages (no downloads)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.zoo import DATASETS


@dataclass(frozen=True)
class Dataset:
    """Preprocessed splits: x in the model's input layout (NHWC float32), y integer labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray

    def calibration(self, n: int) -> np.ndarray:
        return self.x_train[:n]


def split(name: str, x: np.ndarray, y: np.ndarray, eval_fraction: float, seed: int) -> Dataset:
    order = np.random.default_rng(seed).permutation(len(x))
    n_eval = int(round(len(x) * eval_fraction))
    ev, tr = order[:n_eval], order[n_eval:]
    return Dataset(name, x[tr], y[tr], x[ev], y[ev])


@DATASETS.register("sklearn_digits")
def sklearn_digits(eval_fraction: float = 0.2, seed: int = 0) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]  # NHWC, [0, 1]
    return split("sklearn_digits", x, digits.target.astype(np.int64), eval_fraction, seed)

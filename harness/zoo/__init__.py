"""Model builders and data sets, each a registered extension point.

A builder trains (or loads a shipped) reference model for a recipe; a data
set loader returns preprocessed train/eval splits. Nothing here downloads
anything at run time: data comes from installed packages.
"""
from __future__ import annotations

from harness.core.registry import Registry

DATASETS: Registry = Registry("dataset", {
    "sklearn_digits": "harness.zoo.datasets",
    "fashion_mnist": "harness.zoo.fashion", "fashion_mnist_small": "harness.zoo.fashion",
    "skimage_photos": "harness.zoo.efficientnet",
})
BUILDERS: Registry = Registry("model builder", {
    "digits_cnn": "harness.zoo.digits",
    "fashion_cnn": "harness.zoo.fashion",
    "efficientnet_lite0": "harness.zoo.efficientnet", "efficientnet_lite0_fashion": "harness.zoo.efficientnet",
})

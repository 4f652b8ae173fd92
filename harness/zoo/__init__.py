"""Model builders and data sets, each a registered extension point.

A builder trains (or loads a shipped) reference model for a recipe; a data
set loader returns preprocessed train/eval splits. Nothing here downloads
anything at run time: data comes from installed packages.
"""
from __future__ import annotations

from harness.core.registry import Registry

DATASETS: Registry = Registry("dataset", ["harness.zoo.datasets", "harness.zoo.fashion",
                                           "harness.zoo.efficientnet"])
BUILDERS: Registry = Registry("model builder", ["harness.zoo.digits", "harness.zoo.fashion",
                                                 "harness.zoo.efficientnet"])

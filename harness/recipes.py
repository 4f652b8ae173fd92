"""What a model is: `models/<name>.yaml` loaded into a frozen ModelRecipe.

A recipe declares its framework, its input spec (name, shape, dtype,
preprocessing), its data and evaluation split, how to train it, the formats
to convert to and the opt-in compressed variants.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Literal, Tuple

from .config import list_names, load_named, named_file
from .errors import ConfigError
from .targets import FORMATS

MODELS_DIR = Path("models")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class InputSpec:
    name: str
    #: shape of one sample including the batch dimension of 1, e.g. [1, 8, 8, 1]
    shape: Tuple[int, ...]
    dtype: str = "float32"
    #: human-readable description of what the data loader does to raw data
    preprocessing: str = ""


@dataclass(frozen=True)
class OutputSpec:
    name: str
    classes: int
    #: 'logits' or 'probabilities'
    kind: Literal["logits", "probabilities"] = "logits"


@dataclass(frozen=True)
class DataSpec:
    #: a registered dataset (harness.zoo.datasets): sklearn_digits, fashion_mnist, ...
    dataset: str
    eval_fraction: float = 0.2
    #: evaluate on at most this many held-out samples (0: all of them)
    eval_samples: int = 0
    #: samples of the training split used for calibration (int8) and representative data
    calibration_samples: int = 200
    seed: int = 0


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3


@dataclass(frozen=True)
class VariantSpec:
    """An opt-in compressed variant: a registered compressor and its parameters."""

    name: str
    compressor: str
    params: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRecipe:
    name: str
    framework: Literal["keras", "torch"]
    #: a registered builder (harness.zoo) that makes the reference model
    builder: str
    input: InputSpec
    output: OutputSpec
    data: DataSpec
    description: str = ""
    seed: int = 0
    train: TrainSpec = field(default_factory=TrainSpec)
    formats: Tuple[str, ...] = FORMATS
    variants: Tuple[VariantSpec, ...] = ()
    #: builder-specific options
    options: Dict[str, Any] = field(default_factory=dict)
    #: set by the loader: the file this came from (for messages)
    source_path: str = field(default="", metadata={"internal": True})

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(self.source_path, "must be letters, digits, '_', '-' or '.'", "name")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad:
            raise ConfigError(self.source_path, f"unknown format(s) {bad}; known: {', '.join(FORMATS)}", "formats")
        names = [v.name for v in self.variants]
        for i, name in enumerate(names):
            if not _NAME.match(name) or name == "reference":
                raise ConfigError(self.source_path, f"variant name {name!r} must be letters, digits, '_', '-' "
                                  "and not 'reference'", f"variants[{i}].name")
            if names.count(name) > 1:
                raise ConfigError(self.source_path, f"variant name {name!r} is used twice", f"variants[{i}].name")
        if not 0 < self.data.eval_fraction < 1:
            raise ConfigError(self.source_path, "must be between 0 and 1", "data.eval_fraction")
        if any(d < 1 for d in self.input.shape):
            raise ConfigError(self.source_path, "dimensions must be positive integers", "input.shape")

    def variant(self, name: str) -> VariantSpec:
        for v in self.variants:
            if v.name == name:
                return v
        known = ", ".join(v.name for v in self.variants) or "none declared"
        raise ConfigError(self.source_path, f"no variant {name!r} in this recipe; declared: {known}", "variants")

    def training_key(self) -> str:
        """Content key of everything that determines the trained reference model."""
        material = {k: v for k, v in asdict(self).items() if k not in ("variants", "formats", "description",
                                                                         "source_path")}
        return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def recipe_path(name_or_path: str, models_dir: Path = MODELS_DIR) -> Path:
    return named_file(name_or_path, models_dir)


def load_recipe(name_or_path: str, models_dir: Path = MODELS_DIR) -> ModelRecipe:
    return load_named(ModelRecipe, name_or_path, models_dir, "model recipe", "models")


def list_recipe_names(models_dir: Path = MODELS_DIR) -> list:
    return list_names(models_dir)

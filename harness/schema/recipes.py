"""What a model is: `models/<name>.yaml` loaded into a frozen ModelRecipe.

A recipe names its source (a model file in any source format, or a zoo
builder that makes one), optionally declares input shapes (fixing dynamic
axes), its data (a zoo data set, an .npz, a directory of images or a loader
entry point; seeded random inputs when none), its task and metric, the
formats to convert to and the opt-in compressed variants. `harness profile
--model-file` builds the same object from flags.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Tuple

from harness.schema.loader import list_names, load_named, named_file
from harness.core.errors import ConfigError
from harness.schema.interface import DTYPES
from harness.schema.targets import ALL_FORMATS, FORMATS
from harness.core.names import is_valid_name

MODELS_DIR = Path("models")


@dataclass(frozen=True)
class ImagePreprocessing:
    #: [H, W]; empty: the model input's own height and width
    resize: Tuple[int, ...] = ()
    mean: Tuple[float, ...] = (0.0,)
    std: Tuple[float, ...] = (1.0,)
    #: NCHW or NHWC; empty: from the input's shape (channels of 1 or 3 last means NHWC)
    layout: str = ""
    channels: str = "RGB"
    #: pixel values are divided by this first (1: 0-255, 255: 0-1)
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.layout not in ("", "NCHW", "NHWC"):
            raise ValueError(f"preprocessing.layout must be NCHW or NHWC, not {self.layout!r}")
        if self.channels not in ("RGB", "BGR", "GRAY"):
            raise ValueError(f"preprocessing.channels must be RGB, BGR or GRAY, not {self.channels!r}")
        if self.resize and len(self.resize) != 2:
            raise ValueError("preprocessing.resize must be [H, W]")


@dataclass(frozen=True)
class InputSpec:
    """A model input as the recipe sees it: its shape fixes dynamic axes; empty fields come from the file."""

    name: str
    #: shape of one sample including its batch axis, e.g. [1, 8, 8, 1]; empty: the file's own shape
    shape: Tuple[int, ...] = ()
    dtype: str = ""
    #: human-readable description of what the data loader does to raw data
    preprocessing: str = ""


@dataclass(frozen=True)
class OutputSpec:
    """The output that carries class scores (classification), and what a zoo builder makes."""

    name: str = ""
    classes: int = 0
    #: 'logits' or 'probabilities'
    kind: Literal["logits", "probabilities"] = "logits"


@dataclass(frozen=True)
class SourceSpec:
    """Where the reference model comes from: a model file (`path`), or a zoo builder that makes one."""

    #: a model file or SavedModel directory, relative to the recipe file
    path: str = ""
    #: onnx, tflite, openvino, keras, savedmodel, torchscript, torch_export, torch_module; empty: from the suffix
    format: str = ""
    #: a registered builder (harness.zoo) that trains or loads the model and saves it in `format`
    builder: str = ""


@dataclass(frozen=True)
class DataSpec:
    """Evaluation data: one of dataset (zoo), npz, images, loader; none of them: seeded random inputs."""

    #: a registered data set (harness.zoo.datasets): sklearn_digits, fashion_mnist, ...
    dataset: str = ""
    #: an .npz with one array per input name (samples first, or a constant) and optional 'labels'
    npz: str = ""
    #: a directory of images for the model's one image input, with `labels` and `preprocessing`
    images: str = ""
    labels: str = ""
    preprocessing: Optional[ImagePreprocessing] = None
    #: "package.module:function" returning {input name: array, ..., 'labels': array}
    loader: str = ""
    #: calibration samples for int8 variants (same convention); empty: a split of the evaluation data
    calibration: str = ""
    #: number of seeded random samples when no data is given
    random_samples: int = 16
    eval_fraction: float = 0.2
    #: evaluate on at most this many held-out samples (0: all of them)
    eval_samples: int = 0
    #: samples used for calibration (int8) and representative data
    calibration_samples: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        given = [k for k in ("dataset", "npz", "images", "loader") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"data: give one of dataset, npz, images, loader, not {' and '.join(given)}")
        if (self.labels or self.preprocessing) and not self.images:
            raise ValueError("data: labels and preprocessing go with images (an npz holds its own 'labels')")


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
    #: the first-attempt variant this one is an alternative to (another setting of the same compressor):
    #: `--variants all` leaves it out, `--variants int8_alternatives` or its own name runs it
    alternative_of: str = ""


@dataclass(frozen=True)
class ModelRecipe:
    name: str
    source: SourceSpec
    #: declared inputs: shapes that fix dynamic axes (and what zoo builders build); empty: all from the file
    inputs: Tuple[InputSpec, ...] = ()
    output: OutputSpec = field(default_factory=OutputSpec)
    data: DataSpec = field(default_factory=DataSpec)
    #: 'classification' (top-1/top-5, agreement), 'outputs' (parity only); empty: classification with labels
    task: Literal["", "classification", "outputs"] = ""
    #: "package.module:function": (outputs by name, labels) -> {figure: number}, higher is better
    metric: str = ""
    #: which metric figure judges the model (default: the first the metric returns)
    primary_metric: str = ""
    description: str = ""
    seed: int = 0
    train: TrainSpec = field(default_factory=TrainSpec)
    formats: Tuple[str, ...] = FORMATS
    variants: Tuple[VariantSpec, ...] = ()
    #: builder-specific options
    options: Dict[str, Any] = field(default_factory=dict)
    #: set by the loader: the file this came from (for messages, and the base of relative paths)
    source_path: str = field(default="", metadata={"internal": True})

    def __post_init__(self) -> None:
        if not is_valid_name(self.name):
            raise ConfigError(self.source_path, "must be letters, digits, '_', '-' or '.'", "name")
        if bool(self.source.path) == bool(self.source.builder):
            raise ConfigError(self.source_path, "give exactly one of source.path (a model file) and source.builder "
                              "(a zoo builder)", "source")
        if self.source.builder and self.source.format not in ("keras", "torch_module"):
            raise ConfigError(self.source_path, "a zoo builder makes 'keras' or 'torch_module' models; say which",
                              "source.format")
        bad = [f for f in self.formats if f not in ALL_FORMATS]
        if bad:
            raise ConfigError(self.source_path, f"unknown format(s) {bad}; known: {', '.join(ALL_FORMATS)}", "formats")
        names = [v.name for v in self.variants]
        for i, name in enumerate(names):
            if not is_valid_name(name) or name == "reference":
                raise ConfigError(self.source_path, f"variant name {name!r} must be letters, digits, '_', '-' "
                                  "and not 'reference'", f"variants[{i}].name")
            if names.count(name) > 1:
                raise ConfigError(self.source_path, f"variant name {name!r} is used twice", f"variants[{i}].name")
        firsts = [v.name for v in self.variants if not v.alternative_of]
        for i, spec in enumerate(self.variants):
            if spec.alternative_of and spec.alternative_of not in firsts:
                raise ConfigError(self.source_path, f"{spec.alternative_of!r} is not a first-attempt variant of this "
                                  f"recipe; known: {', '.join(firsts) or 'none'}", f"variants[{i}].alternative_of")
        if not 0 < self.data.eval_fraction < 1:
            raise ConfigError(self.source_path, "must be between 0 and 1", "data.eval_fraction")
        for i, spec in enumerate(self.inputs):
            if any(d < 0 for d in spec.shape):
                raise ConfigError(self.source_path, "dimensions must be 0 or more", f"inputs[{i}].shape")
            if spec.dtype and spec.dtype not in DTYPES:
                raise ConfigError(self.source_path, f"unknown dtype {spec.dtype!r}; known: {', '.join(DTYPES)}",
                                  f"inputs[{i}].dtype")
        if self.source.builder and len(self.inputs) != 1:
            raise ConfigError(self.source_path, "a zoo builder takes exactly one declared input", "inputs")

    @property
    def base_dir(self) -> Path:
        """Relative paths in a recipe are relative to the recipe file (the working directory without one)."""
        return Path(self.source_path).resolve().parent if self.source_path else Path.cwd()

    def resolve(self, path: str) -> Path:
        return (self.base_dir / Path(path).expanduser()).resolve() if path else Path()

    @property
    def input(self) -> InputSpec:
        """The one input of a single-input model (what the zoo's builders and trainers make)."""
        if len(self.inputs) != 1:
            raise ConfigError(self.source_path, f"this step needs a model with one declared input, not "
                              f"{len(self.inputs)}", "inputs")
        return self.inputs[0]

    @property
    def is_classification(self) -> bool:
        return self.task == "classification" or (not self.task and bool(self.output.classes))

    def variant(self, name: str) -> VariantSpec:
        for v in self.variants:
            if v.name == name:
                return v
        known = ", ".join(v.name for v in self.variants) or "none declared"
        raise ConfigError(self.source_path, f"no variant {name!r} in this recipe; declared: {known}", "variants")

    def training_key(self) -> str:
        """Content key of everything that determines the zoo-built reference model."""
        material = {k: v for k, v in asdict(self).items() if k in ("name", "source", "inputs", "output", "data",
                                                                     "seed", "train", "options")}
        return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def recipe_path(name_or_path: str, models_dir: Path = MODELS_DIR) -> Path:
    return named_file(name_or_path, models_dir)


def load_recipe(name_or_path: str, models_dir: Path = MODELS_DIR) -> ModelRecipe:
    return load_named(ModelRecipe, name_or_path, models_dir, "model recipe", "models")


def list_recipe_names(models_dir: Path = MODELS_DIR) -> list:
    return list_names(models_dir)

"""What the prepare stage hands on: a prepared model (its reference, data and interface) and its artifacts."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from harness.agent import agent as device_agent
from harness.prepare.inspection import Inspector
from harness.prepare.data import SampleSet
from harness.schema.interface import Interface, TensorSpec


REFERENCE = "reference"

@dataclass(frozen=True)
class PreparedModel:
    """A reference model with its fixed interface, evaluation data and reference outputs on disk."""

    recipe: Any
    source_format: str
    model_path: Path
    model_sha256: str
    interface: Interface
    eval_inputs_path: Path            # the agent's feeds .npz
    labels_path: Optional[Path]       # .npy, or None without labels
    reference_outputs_path: Path      # the agent's outputs .npz: the source run on the host
    calibration_path: Optional[Path]  # feeds .npz of calibration samples, or None
    #: content hash of the calibration samples ('' without any): part of every variant's cache key
    calibration_sha256: str
    #: the reference's own figures: accuracy, top5_accuracy, metric_<name>, ...
    reference_figures: Dict[str, Any]
    param_count: Optional[int]
    macs: Optional[int]
    #: where the evaluation and calibration data came from, for the report
    data_notes: Tuple[str, ...]
    cached: bool
    #: a zoo data set's training split (in-process only: compressors that train use it)
    train_data: Any = field(default=None, compare=False, repr=False)
    #: the outputs the source produced on the host at the fixed input shapes: the truth its artifacts are
    #: checked against, where the file's declared output shapes may be wrong or dynamic
    produced_outputs: Tuple[TensorSpec, ...] = ()
    #: where files are read when this host lacks their runtime (a device of the run), or None: the host only
    inspector: Optional[Inspector] = field(default=None, compare=False, repr=False)

    @property
    def reference_accuracy(self) -> Optional[float]:
        return self.reference_figures.get("accuracy")

    def labels(self) -> Optional[np.ndarray]:
        return None if self.labels_path is None else np.load(self.labels_path)

    def calibration(self) -> Optional[SampleSet]:
        return None if self.calibration_path is None else load_feeds(self.calibration_path)

@dataclass(frozen=True)
class Artifact:
    """One converted file set for (model, variant, format), inspected."""

    model: str
    variant: str
    format: str
    path: str
    files: Tuple[str, ...]
    file_sha256: Tuple[str, ...]
    sha256: str
    size_bytes: int
    gzip_bytes: int
    interface: Dict[str, Any]
    operators: Dict[str, int]
    problems: Tuple[str, ...]
    metrics: Dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    error: str = ""
    #: the converter's whole diagnostic where `error` is its most specific line
    diagnostic: str = ""
    #: where the artifact was inspected: "host", or "<target> (<runtime> <version>)"
    inspected_on: str = ""

    @property
    def compatible(self) -> bool:
        return not self.problems and not self.error


def load_feeds(path: Path) -> SampleSet:
    feeds = device_agent.Feeds.load(str(path))
    return SampleSet({f["name"]: feeds.arrays[f["key"]] for f in feeds.spec},
                     {f["name"]: f["mode"] for f in feeds.spec}, None, str(path))

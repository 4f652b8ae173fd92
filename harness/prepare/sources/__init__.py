"""Sources: the model file formats the harness takes in, as a registry keyed by source format.

A source reads a model's interface from its file and opens it on the host
to compute the reference outputs that every cell is compared with. The
formats: onnx, tflite, openvino (IR .xml + .bin), keras (.keras/.h5),
savedmodel (a TensorFlow SavedModel directory), torchscript (.pt from
torch.jit.save), torch_export (.pt2 from torch.export.save) and torch_module
(a pickled nn.Module, what the zoo's torch builders save). Heavy imports stay
inside each source.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, List, Optional, Protocol, Tuple

from harness.core.errors import ConfigError
from harness.schema.interface import Interface
from harness.core.registry import Registry
from harness.schema.targets import DEVICE_ONLY_FORMATS

SOURCES: Registry = Registry("source format", {
    "onnx": "harness.prepare.sources.runtimes", "tflite": "harness.prepare.sources.runtimes",
    "openvino": "harness.prepare.sources.runtimes",
    "keras": "harness.prepare.sources.tensorflow", "savedmodel": "harness.prepare.sources.tensorflow",
    "torchscript": "harness.prepare.sources.torch", "torch_module": "harness.prepare.sources.torch",
    "torch_export": "harness.prepare.sources.torch",
    # a device-only runtime's files are read on a device of the run, through the agent
    **{fmt: "harness.prepare.sources.runtimes" for fmt in DEVICE_ONLY_FORMATS},
})

#: file name suffix -> source format, for `--model-file` without `--source-format`
SUFFIXES = {".onnx": "onnx", ".tflite": "tflite", ".xml": "openvino", ".keras": "keras", ".h5": "keras",
            ".hdf5": "keras", ".pt": "torchscript", ".pth": "torchscript", ".ts": "torchscript",
            ".pt2": "torch_export", **{suffix: fmt for fmt, suffix in DEVICE_ONLY_FORMATS.items()}}


class HostModel(Protocol):
    """A model opened on the host, with the agent runtimes' shape: named inputs and outputs, prepare/infer/fetch."""

    input_names: List[str]
    output_names: List[str]

    def prepare(self, feeds: List[Any]) -> Any: ...
    def infer(self, prepared: Any) -> None: ...
    def fetch(self) -> List[Any]: ...


class Source(Protocol):
    def describe(self, path: Path) -> Interface:
        """The interface as the file records it (dynamic axes as None or their symbolic names)."""

    def open(self, path: Path, interface: Interface) -> HostModel:
        """The model, ready to run samples of the fixed interface on the host."""

    def param_count(self, path: Path) -> Optional[int]: ...


def register_source(fmt: str):
    return SOURCES.register(fmt)


def detect_format(path: Path) -> str:
    """The source format of a model file or directory, from its name (a SavedModel is a directory)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(path, "no such model file; check the path (relative paths in a recipe are relative "
                          "to the recipe file)")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "savedmodel"
        raise ConfigError(path, "is a directory without saved_model.pb: not a TensorFlow SavedModel; pass a model "
                          f"file ({', '.join(sorted(SUFFIXES))}) or a SavedModel directory")
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(path, f"unknown model file extension {path.suffix or '(none)'!r}; known: "
                          f"{', '.join(sorted(SUFFIXES))} or a SavedModel directory (or name the format with "
                          f"--source-format {'|'.join(sorted(set(SUFFIXES.values()) | {'savedmodel'}))})")
    return fmt


def source_files(path: Path, fmt: str) -> Tuple[Path, ...]:
    """Every file the model is made of: the IR's .bin beside its .xml, every file of a SavedModel."""
    path = Path(path)
    if path.is_dir():
        return tuple(sorted(p for p in path.rglob("*") if p.is_file()))
    if fmt == "openvino":
        return (path, path.with_suffix(".bin"))
    return (path,)


def content_sha256(path: Path, fmt: str) -> str:
    """One hash over the content (and relative names) of every file of a model."""
    path = Path(path)
    digest = hashlib.sha256()
    for file in source_files(path, fmt):
        if not file.exists():
            raise ConfigError(file, f"missing: a {fmt} model needs it beside {path.name}")
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def not_a_model(path: Path, fmt: str, exc: BaseException) -> ConfigError:
    text = str(exc).strip().splitlines()
    return ConfigError(path, f"cannot be read as a {fmt} model ({type(exc).__name__}: "
                       f"{text[0][:300] if text else ''}); check that the file is a {fmt} model, or name its "
                       "format with --source-format")

"""Converters from a source format to a deployable format, and artifact files.

CONVERTERS is keyed by (source format, target format), e.g. ('keras', 'tflite')
or ('onnx', 'openvino'). A converter is `convert(model_path, ctx, out_dir) -> Path`
of the primary file (for OpenVINO the .xml; its .bin sits beside it). A
converter reads its input and never writes, moves or deletes it: intermediate
files go to temporary directories. Pairs without a converter have a reason.
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Tuple

import numpy as np

from harness.schema.interface import Interface
from harness.core.registry import Registry

#: (source format, target format): the module that registers its converter
CONVERTERS: Registry = Registry("converter", {
    ("keras", "tflite"): "harness.build.converters.tensorflow",
    ("keras", "onnx"): "harness.build.converters.tensorflow",
    ("keras", "openvino"): "harness.build.converters.tensorflow",
    ("savedmodel", "tflite"): "harness.build.converters.tensorflow",
    ("savedmodel", "onnx"): "harness.build.converters.tensorflow",
    ("savedmodel", "openvino"): "harness.build.converters.tensorflow",
    ("torchscript", "onnx"): "harness.build.converters.torch",
    ("torchscript", "openvino"): "harness.build.converters.torch",
    ("torchscript", "torch"): "harness.build.converters.torch_runtime",
    ("torch_module", "onnx"): "harness.build.converters.torch",
    ("torch_module", "openvino"): "harness.build.converters.torch",
    ("torch_module", "torch"): "harness.build.converters.torch_runtime",
    ("torch_export", "onnx"): "harness.build.converters.torch",
    ("torch_export", "openvino"): "harness.build.converters.torch",
    ("torch_export", "torch"): "harness.build.converters.torch_runtime",
    ("torch_module", "tflite"): "harness.build.converters.litert",
    ("torch_export", "tflite"): "harness.build.converters.litert",
    ("onnx", "openvino"): "harness.build.converters.onnx",
    ("tflite", "openvino"): "harness.build.converters.onnx",
    ("tflite", "onnx"): "harness.build.converters.onnx",
})

#: bump when a converter's output changes, so cached artifacts are rebuilt
CONVERTER_VERSION = "2"

PRIMARY_SUFFIX = {"tflite": ".tflite", "onnx": ".onnx", "openvino": ".xml", "torch": ".pt"}

#: why a (source, target) pair has no converter with the pinned stack
NO_CONVERTER: Dict[Tuple[str, str], str] = {
    ("onnx", "tflite"): "onnx2tf, the ONNX→TFLite route, needs Python ≥ 3.12 or older numpy/onnx/tensorflow than "
                        "the pinned stack; convert with it separately and profile the .tflite with --model-file",
    ("openvino", "tflite"): "OpenVINO IR is a deployment format; nothing converts it back to TFLite",
    ("openvino", "onnx"): "OpenVINO IR is a deployment format; nothing converts it back to ONNX",
    ("torchscript", "tflite"): "litert-torch converts torch.export programs and nn.Modules; a TorchScript module "
                               "cannot be exported: save the model with torch.export.save (.pt2) instead",
}


@dataclass(frozen=True)
class ConversionContext:
    """What a converter needs besides the file: a name for its output and the model's fixed interface."""

    name: str
    interface: Interface
    #: one evaluation sample per input (tracing exporters run the model on it)
    example: Dict[str, np.ndarray] = field(default_factory=dict, compare=False)


def artifact_files(path: Path, fmt: str) -> Tuple[Path, ...]:
    """Every file that makes up an artifact (OpenVINO IR is .xml + .bin)."""
    path = Path(path)
    if fmt == "openvino":
        return (path, path.with_suffix(".bin"))
    return (path,)


def register_converter(source_format: str, fmt: str):
    return CONVERTERS.register((source_format, fmt))


def copy_as_artifact(model_path: Path, fmt: str, out_dir: Path, name: str) -> Path:
    """A source already in a deployable format: its files, copied (the user's files are never touched)."""
    primary = Path(out_dir) / f"{name}{PRIMARY_SUFFIX[fmt]}"
    for src, dst in zip(artifact_files(model_path, fmt), artifact_files(primary, fmt)):
        shutil.copyfile(src, dst)
    return primary


@contextmanager
def scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="harness-convert-") as tmp:
        yield Path(tmp)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:400]}" if text else type(exc).__name__

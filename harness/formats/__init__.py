"""Converters from a framework model to a deployable format, and artifact inspection.

CONVERTERS is keyed by (source framework, target format), e.g. ('keras', 'tflite').
A converter is `convert(model_path, recipe, out_dir) -> Path` of the primary
file (for OpenVINO the .xml; its .bin sits beside it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

from ..registry import Registry

CONVERTERS: Registry = Registry("converter", ["harness.formats.keras", "harness.formats.torch",
                                               "harness.formats.litert"])

#: bump when a converter's output changes, so cached artifacts are rebuilt
CONVERTER_VERSION = "1"

PRIMARY_SUFFIX = {"tflite": ".tflite", "onnx": ".onnx", "openvino": ".xml"}


def artifact_files(path: Path, fmt: str) -> Tuple[Path, ...]:
    """Every file that makes up an artifact (OpenVINO IR is .xml + .bin)."""
    path = Path(path)
    if fmt == "openvino":
        return (path, path.with_suffix(".bin"))
    return (path,)


def register_converter(framework: str, fmt: str):
    return CONVERTERS.register((framework, fmt))

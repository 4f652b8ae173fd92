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
from typing import Dict, Iterator, List, Tuple

import numpy as np

from harness.core.errors import ConversionError
from harness.schema.interface import Interface
from harness.core.registry import Registry
from harness.schema.targets import DEVICE_ONLY_FORMATS

#: (source format, target format): the module that registers its converter
CONVERTERS: Registry = Registry("converter", {
    ("keras", "tflite"): "harness.prepare.converters.tensorflow",
    ("keras", "onnx"): "harness.prepare.converters.tensorflow",
    ("keras", "openvino"): "harness.prepare.converters.tensorflow",
    ("savedmodel", "tflite"): "harness.prepare.converters.tensorflow",
    ("savedmodel", "onnx"): "harness.prepare.converters.tensorflow",
    ("savedmodel", "openvino"): "harness.prepare.converters.tensorflow",
    ("torchscript", "onnx"): "harness.prepare.converters.torch",
    ("torchscript", "openvino"): "harness.prepare.converters.torch",
    ("torchscript", "torch"): "harness.prepare.converters.torch_runtime",
    ("torch_module", "onnx"): "harness.prepare.converters.torch",
    ("torch_module", "openvino"): "harness.prepare.converters.torch",
    ("torch_module", "torch"): "harness.prepare.converters.torch_runtime",
    ("torch_export", "onnx"): "harness.prepare.converters.torch",
    ("torch_export", "openvino"): "harness.prepare.converters.torch",
    ("torch_export", "torch"): "harness.prepare.converters.torch_runtime",
    ("torch_module", "tflite"): "harness.prepare.converters.litert",
    ("torch_export", "tflite"): "harness.prepare.converters.litert",
    ("onnx", "openvino"): "harness.prepare.converters.onnx",
    ("tflite", "openvino"): "harness.prepare.converters.onnx",
    ("tflite", "onnx"): "harness.prepare.converters.onnx",
})

#: bump when a converter's output changes, so cached artifacts are rebuilt
CONVERTER_VERSION = "2"

PRIMARY_SUFFIX = {"tflite": ".tflite", "onnx": ".onnx", "openvino": ".xml", "torch": ".pt", **DEVICE_ONLY_FORMATS}

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


#: a known cause, as the converters word it, and the reason in plain words
KNOWN_CAUSES: Tuple[Tuple[Tuple[str, ...], str], ...] = (
    (("Unexpected type: RESOURCE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"),
     "the model keeps state in resource variables, which tf2onnx and OpenVINO's TFLite frontend do not convert"),
    (("rank has to be known", "rank().is_static()"),
     "an operation needs a tensor rank that the converter could not infer even at the run's fixed input shapes, "
     "e.g. one behind an If or computed at run time"),
    (("No conversion rule found", "is not supported", "Unsupported op", "unsupported op"),
     "the model uses an operation the converter does not support"),
)

#: lines of converter output that say where, not what (OpenVINO's "Check 'false' failed at src/...")
_WHERE_LINE_STARTS = ("Check '", "Exception from src/", "FrontEnd API failed with", "While validating",
                      "[ONNX Frontend] Conversion failed", "Model wasn't fully converted", "Summary:",
                      "Traceback", "File \"", "During handling of")


@dataclass(frozen=True)
class Diagnosis:
    """A converter's failure read for a person: its most specific line, a known cause, the whole text."""

    headline: str
    #: the cause in plain words where it is a known one, else ""
    reason: str
    text: str


def diagnose(exc: BaseException, context: str = "") -> Diagnosis:
    """The most specific line of a converter's exception: OpenVINO's failed-operations summary with the first
    reason it gives, a line naming an unexpected type, else the exception's last line (its first says only
    where it was raised). `context` (what the harness knows about the file, e.g. its stateful operators)
    is kept with the text and helps recognise a known cause."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    said = [ln for ln in lines if not ln.startswith(_WHERE_LINE_STARTS) and not ln.startswith("--")]
    failed_ops = [ln.split("Conversion is failed for:", 1)[1].strip() for ln in lines
                  if "Conversion is failed for:" in ln]
    typed = [ln for ln in lines if ln.startswith("Unexpected type:")]
    if failed_ops:
        why = [ln for ln in said if "Conversion is failed for" not in ln]
        headline = f"conversion failed for {failed_ops[-1]}" + (f": {why[0]}" if why else "")
    elif typed:
        headline = typed[-1]
    else:
        headline = said[-1] if said else (lines[-1] if lines else "")
    headline = f"{type(exc).__name__}: {headline[:400]}" if headline else type(exc).__name__
    whole = f"{type(exc).__name__}: {text}" + (f"\n\n{context}" if context else "")
    reason = next((plain for words, plain in KNOWN_CAUSES if any(w in whole for w in words)), "")
    return Diagnosis(headline, reason, whole)


def conversion_failed(name: str, what: str, exc: BaseException, context: str = "") -> ConversionError:
    """The ConversionError of a converter that raised: one line for the cell, the whole text kept beside it."""
    found = diagnose(exc, context)
    return ConversionError(f"{name}: {what} failed: {found.headline}" + (f" ({found.reason})" if found.reason else ""),
                           diagnostic=found.text)


def stateful_operators(operators: Dict[str, int]) -> List[str]:
    """The operators by which a model keeps state between invocations (TFLite resource variables, OpenVINO's
    ReadValue/Assign)."""
    return sorted(op for op in operators if op in STATEFUL_OPERATORS)


STATEFUL_OPERATORS = frozenset({"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "ReadValue", "Assign"})

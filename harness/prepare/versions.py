"""The versions of the libraries that decide what a build step makes: part of every cache key."""
from __future__ import annotations

from functools import lru_cache
from typing import Tuple

#: the distributions whose versions decide what a conversion or compression makes
CONVERTING_LIBRARIES = ("tensorflow-cpu", "tensorflow", "tf-keras", "tf2onnx", "onnx", "onnxruntime", "openvino",
                        "nncf", "torch", "litert-torch", "ai-edge-litert")


@lru_cache(maxsize=1)
def library_versions() -> Tuple[Tuple[str, str], ...]:
    from importlib.metadata import PackageNotFoundError, version
    found = []
    for name in CONVERTING_LIBRARIES:
        try:
            found.append((name, version(name)))
        except PackageNotFoundError:
            continue
    return tuple(found)

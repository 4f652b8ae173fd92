"""Framework adapters: load a saved reference model, predict, count parameters.

Registered per framework name ('keras', 'torch'); heavy imports stay inside.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from .registry import Registry

FRAMEWORKS: Registry = Registry("framework")


class Framework(Protocol):
    def load(self, path: Path): ...
    def predict(self, model, x: np.ndarray) -> np.ndarray: ...
    def param_count(self, model) -> int: ...
    def macs(self, model) -> int | None: ...


@FRAMEWORKS.register("keras")
class KerasFramework:
    def load(self, path: Path):
        from .zoo.keras_util import import_tf
        _, keras = import_tf()
        return keras.models.load_model(path, compile=False)

    def predict(self, model, x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(x, batch_size=256, verbose=0), dtype=np.float32)

    def param_count(self, model) -> int:
        return int(model.count_params())

    def macs(self, model) -> int | None:
        from .zoo.keras_util import keras_macs
        return keras_macs(model)


@FRAMEWORKS.register("torch")
class TorchFramework:
    def load(self, path: Path):
        import torch
        model = torch.load(path, weights_only=False, map_location="cpu")
        model.eval()
        return model

    def predict(self, model, x: np.ndarray) -> np.ndarray:
        import torch
        outs = []
        with torch.no_grad():
            for start in range(0, len(x), 64):
                outs.append(model(torch.from_numpy(np.ascontiguousarray(x[start:start + 64]))).numpy())
        return np.concatenate(outs).astype(np.float32)

    def param_count(self, model) -> int:
        return int(sum(p.numel() for p in model.parameters()))

    def macs(self, model) -> int | None:
        return getattr(model, "macs", None)


def get_framework(name: str) -> Framework:
    return FRAMEWORKS.get(name)()

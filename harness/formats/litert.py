"""torch → TFLite with Google's litert-torch (torch.export, then the LiteRT converter; no ONNX in between).

litert-torch 0.10 accepts torch >=2.4,<2.15, so it runs with the pinned
torch 2.13 CPU build. The TFLite signature takes its names from the call:
the input is passed as a keyword named after the recipe's input and the
output is a dict keyed by the recipe's output name, so the artifact's
interface matches the recipe like every other format. The batch dimension is
fixed at the recipe's (1). onnx2tf, the other route, is no option here: its
releases for Python 3.11 pin numpy 1.26, onnx 1.19 and tensorflow 2.19.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import ConversionError
from . import register_converter

INSTALL_HINT = "pip install litert-torch==0.10.0 (pinned in requirements.txt; `make venv`)"


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """litert-torch prints a progress tree per conversion; the harness has its own progress lines."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    before = os.environ.get(key)
    os.environ[key] = "n"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


@register_converter("torch", "tflite")
def torch_to_tflite(model_path: Path, recipe, out_dir: Path) -> Path:
    """Converts in a fresh (spawned) process: litert-torch imports JAX, which must not share a process
    that later forks (JAX warns of deadlocks), and the conversion's memory goes back when it ends."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    path = Path(out_dir) / f"{recipe.name}.tflite"
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            pool.submit(_convert, Path(model_path), recipe, path).result()
    except BrokenProcessPool as exc:  # killed (most likely for memory) or crashed
        raise ConversionError(f"{recipe.name}: the litert-torch conversion process died ({exc}); "
                              "check memory, or convert by hand: python -c 'import litert_torch'") from None
    return path


def _convert(model_path: Path, recipe, path: Path) -> None:
    try:
        import litert_torch
    except ImportError as exc:
        raise ConversionError(f"{recipe.name}: torch → TFLite needs litert-torch, which is not importable "
                              f"({exc}); {INSTALL_HINT}") from None
    import torch

    from ..frameworks import get_framework

    model = get_framework("torch").load(model_path)
    output_name = recipe.output.name

    class NamedOutput(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **inputs):
            return {output_name: self.inner(*inputs.values())}

    example = torch.zeros(tuple(recipe.input.shape), dtype=getattr(torch, recipe.input.dtype))
    try:
        with _quiet_progress():
            edge_model = litert_torch.convert(NamedOutput(model).eval(), sample_kwargs={recipe.input.name: example})
            edge_model.export(str(path))
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"{recipe.name}: TFLite conversion from torch (litert-torch) failed: {message}") from None

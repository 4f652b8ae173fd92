"""torch → TFLite with Google's litert-torch (torch.export, then the LiteRT converter; no ONNX in between).

litert-torch 0.10 accepts torch >=2.4,<2.15, so it runs with the pinned
torch 2.13 CPU build. The TFLite signature takes its names from the call:
inputs are passed as keywords named after the model's inputs and the outputs
are a dict keyed by its output names, so the artifact's interface matches
the source like every other format, at the fixed input shapes. onnx2tf, the other route, is no option here: its
releases for Python 3.11 pin numpy 1.26, onnx 1.19 and tensorflow 2.19.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from harness.core.errors import ConversionError
from harness.prepare.converters import ConversionContext, conversion_failed, register_converter

INSTALL_HINT = "pip install 'edge-harness[litert-torch]' (pinned in constraints.txt; `make venv`)"


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


def _convert_in_fresh_process(model_path: Path, source_format: str, ctx: ConversionContext, out_dir: Path) -> Path:
    """Converts in a fresh (spawned) process: litert-torch imports JAX, which must not share a process
    that later forks (JAX warns of deadlocks), and the conversion's memory goes back when it ends."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    path = Path(out_dir) / f"{ctx.name}.tflite"
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            pool.submit(_convert, Path(model_path), source_format, ctx, path).result()
    except BrokenProcessPool as exc:  # killed (most likely for memory) or crashed
        raise ConversionError(f"{ctx.name}: the litert-torch conversion process died ({exc}); "
                              "check memory, or convert by hand: python -c 'import litert_torch'") from None
    return path


@register_converter("torch_module", "tflite")
def torch_module_to_tflite(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    return _convert_in_fresh_process(model_path, "torch_module", ctx, out_dir)


@register_converter("torch_export", "tflite")
def torch_export_to_tflite(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    return _convert_in_fresh_process(model_path, "torch_export", ctx, out_dir)


def _convert(model_path: Path, source_format: str, ctx: ConversionContext, path: Path) -> None:
    try:
        import litert_torch
    except ImportError as exc:
        raise ConversionError(f"{ctx.name}: torch → TFLite needs litert-torch, which is not importable "
                              f"({exc}); {INSTALL_HINT}") from None
    import torch

    from harness.prepare.sources.torch import flatten
    from harness.prepare.converters.torch import example_inputs, load_module

    inner = load_module(model_path, source_format)
    input_names, output_names = ctx.interface.input_names, ctx.interface.output_names

    class Named(torch.nn.Module):
        """Keyword inputs and a dict of outputs: the TFLite signature takes the model's own names from them."""

        def __init__(self, wrapped):
            super().__init__()
            self.inner = wrapped

        def forward(self, **inputs):
            return dict(zip(output_names, flatten(self.inner(*[inputs[n] for n in input_names]))))

    sample = dict(zip(input_names, example_inputs(ctx)))
    try:
        with _quiet_progress():
            edge_model = litert_torch.convert(Named(inner).eval(), sample_kwargs=sample)
            edge_model.export(str(path))
    except Exception as exc:
        raise conversion_failed(ctx.name, "TFLite conversion from torch (litert-torch)", exc) \
            from None

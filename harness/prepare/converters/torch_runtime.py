"""torch sources → the `torch` format (what the agent's torch runtime runs on CPU or CUDA).

TorchScript (.pt) and torch.export programs (.pt2) are copied as they are; a pickled nn.Module is traced to
TorchScript (a device needs no model code to load that)."""
from __future__ import annotations

import shutil
from pathlib import Path

from harness.prepare.converters import ConversionContext, conversion_failed, register_converter


@register_converter("torchscript", "torch")
def torchscript_to_torch(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    out = Path(out_dir) / f"{ctx.name}.pt"
    shutil.copyfile(model_path, out)
    return out


@register_converter("torch_export", "torch")
def torch_export_to_torch(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    out = Path(out_dir) / f"{ctx.name}.pt2"
    shutil.copyfile(model_path, out)
    return out


@register_converter("torch_module", "torch")
def torch_module_to_torch(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    from harness.prepare.converters.torch import example_inputs, load_module
    out = Path(out_dir) / f"{ctx.name}.pt"
    try:
        import torch
        module = load_module(model_path, "torch_module").eval()
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(module, example_inputs(ctx)), str(out))
    except Exception as exc:
        raise conversion_failed(ctx.name, "tracing the module to TorchScript", exc) from None
    return out

"""torch → ONNX (TorchScript exporter) and OpenVINO IR."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConversionError
from . import register_converter


def _load(model_path: Path):
    from ..frameworks import get_framework
    return get_framework("torch").load(model_path)


@register_converter("torch", "onnx")
def torch_to_onnx(model_path: Path, recipe, out_dir: Path) -> Path:
    import torch

    model = _load(model_path)
    example = torch.zeros(tuple(recipe.input.shape), dtype=getattr(torch, recipe.input.dtype))
    path = Path(out_dir) / f"{recipe.name}.onnx"
    try:
        # dynamo=False: the dynamo exporter needs onnxscript, which is not a dependency.
        torch.onnx.export(model, (example,), str(path), input_names=[recipe.input.name],
                          output_names=[recipe.output.name], opset_version=17, dynamo=False,
                          dynamic_axes={recipe.input.name: {0: "batch"}, recipe.output.name: {0: "batch"}})
    except Exception as exc:
        raise ConversionError(f"{recipe.name}: ONNX export from torch failed: {exc}") from None
    return path


@register_converter("torch", "openvino")
def torch_to_openvino(model_path: Path, recipe, out_dir: Path) -> Path:
    from .openvino import onnx_to_openvino

    return onnx_to_openvino(torch_to_onnx(model_path, recipe, out_dir), recipe, out_dir)

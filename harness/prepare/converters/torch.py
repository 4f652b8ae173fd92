"""torch (pickled nn.Module, TorchScript, torch.export programs) → ONNX (TorchScript exporter) and OpenVINO IR."""
from __future__ import annotations

from pathlib import Path

from harness.prepare.converters import ConversionContext, conversion_failed, register_converter, scratch_dir
from harness.prepare.converters.onnx import onnx_to_openvino


def example_inputs(ctx: ConversionContext):
    """One evaluation sample per input as tensors (zeros where none is given), in the interface's order."""
    import torch

    from harness.agent.agent import contiguous
    return tuple(torch.from_numpy(contiguous(ctx.example[s.name])) if s.name in ctx.example
                 else torch.zeros(s.static_shape, dtype=getattr(torch, s.dtype)) for s in ctx.interface.inputs)


def load_module(model_path: Path, source_format: str):
    from harness.prepare.sources import SOURCES
    source = SOURCES.get(source_format)()
    if source_format != "torch_export":
        return source.load(model_path)
    module = source.load(model_path).module()
    # An exported program runs in the mode it was exported in and refuses train()/eval(), which the
    # TorchScript exporter and litert-torch call: make both the no-ops they are for it.
    module.train = lambda mode=True: module
    module.eval = lambda: module
    return module


def export_onnx(module, ctx: ConversionContext, path: Path) -> Path:
    try:
        # dynamo=False: the dynamo exporter needs onnxscript, which is not a dependency.
        import torch
        module.eval()
        torch.onnx.export(module, example_inputs(ctx), str(path), input_names=ctx.interface.input_names,
                          output_names=ctx.interface.output_names, opset_version=17, dynamo=False)
    except Exception as exc:
        raise conversion_failed(ctx.name, "ONNX export from torch", exc) from None
    return path


def _register(source_format: str) -> None:
    @register_converter(source_format, "onnx")
    def to_onnx(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
        return export_onnx(load_module(model_path, source_format), ctx, Path(out_dir) / f"{ctx.name}.onnx")

    @register_converter(source_format, "openvino")
    def to_openvino(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
        with scratch_dir() as tmp:
            return onnx_to_openvino(to_onnx(model_path, ctx, tmp), ctx, out_dir)


for _fmt in ("torch_module", "torchscript", "torch_export"):
    _register(_fmt)

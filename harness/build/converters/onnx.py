"""ONNX → OpenVINO IR; TFLite → ONNX (tf2onnx reads TFLite) and → OpenVINO IR (its frontend reads TFLite)."""
from __future__ import annotations

from pathlib import Path

from harness.core.errors import ConversionError
from harness.build.converters import ConversionContext, first_line, register_converter


def to_openvino(model_path: Path, ctx: ConversionContext, out_dir: Path, what: str) -> Path:
    """Any file OpenVINO's frontends read (ONNX, TFLite, SavedModel) to `<out_dir>/<name>.xml` (+ .bin), fp32."""
    import openvino as ov

    path = Path(out_dir) / f"{ctx.name}.xml"
    try:
        # fp32 weights: the IR must compute what the reference computes; precision is the device's choice.
        ov.save_model(ov.convert_model(str(model_path)), str(path), compress_to_fp16=False)
    except Exception as exc:
        raise ConversionError(f"{ctx.name}: OpenVINO conversion from {what} failed: {first_line(exc)}") from None
    return path


@register_converter("onnx", "openvino")
def onnx_to_openvino(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    return to_openvino(model_path, ctx, out_dir, "ONNX")


@register_converter("tflite", "openvino")
def tflite_to_openvino(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    return to_openvino(model_path, ctx, out_dir, "TFLite")


@register_converter("tflite", "onnx")
def tflite_to_onnx(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    from harness.zoo.keras_util import import_tf
    import_tf()
    import tf2onnx

    path = Path(out_dir) / f"{ctx.name}.onnx"
    try:
        tf2onnx.convert.from_tflite(str(model_path), opset=17, output_path=str(path))
    except Exception as exc:
        raise ConversionError(f"{ctx.name}: ONNX conversion from TFLite (tf2onnx) failed: {first_line(exc)}") \
            from None
    return path

"""ONNX → OpenVINO IR; TFLite → ONNX (tf2onnx reads TFLite) and → OpenVINO IR (its frontend reads TFLite)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional

from harness.prepare.converters import ConversionContext, conversion_failed, register_converter, stateful_operators


def openvino_input_shapes(model_path: Path, ctx: ConversionContext) -> Dict[str, List[int]]:
    """The run's fixed input shapes, keyed by the names OpenVINO's frontend gives the file's inputs (TFLite's
    tensor names differ from its signature's), read without converting; {} where the names do not pair up."""
    from openvino.frontend import FrontEndManager

    from harness.agent.agent import match_names

    try:
        frontend = FrontEndManager().load_by_model(str(model_path))
        names = [sorted(place.get_names())[0] for place in frontend.load(str(model_path)).get_inputs()]
    except Exception:  # the conversion itself will say what is wrong with the file
        return {}
    specs = ctx.interface.inputs
    order = match_names([s.name for s in specs], names)
    if order is None:
        return {}
    return {names[i]: list(spec.static_shape) for spec, i in zip(specs, order) if spec.shape is not None}


def to_openvino(model_path: Path, ctx: ConversionContext, out_dir: Path, what: str,
                context: Optional[Callable[[Path], str]] = None) -> Path:
    """Any file OpenVINO's frontends read (ONNX, TFLite, SavedModel) to `<out_dir>/<name>.xml` (+ .bin), fp32,
    at the run's fixed input shapes: a rank that is only known once the inputs are fixed (behind an If, or a
    Reshape computed from a shape) converts then and fails without them."""
    import openvino as ov

    path = Path(out_dir) / f"{ctx.name}.xml"
    shapes = openvino_input_shapes(model_path, ctx)
    try:
        model = ov.convert_model(str(model_path), input=shapes) if shapes else ov.convert_model(str(model_path))
        # fp32 weights: the IR must compute what the reference computes; precision is the device's choice.
        ov.save_model(model, str(path), compress_to_fp16=False)
    except Exception as exc:
        raise conversion_failed(ctx.name, f"OpenVINO conversion from {what}", exc,
                                context(model_path) if context else "") from None
    return path


def tflite_state_note(model_path: Path) -> str:
    """What a failed TFLite conversion's diagnostic should also say: the file's stateful operators, if any."""
    from harness.prepare.converters.inspect import list_operators
    try:
        found = stateful_operators(list_operators(Path(model_path), "tflite", {}))
    except Exception:  # a note, not a requirement
        return ""
    return f"the TFLite file uses {', '.join(found)}: it keeps state in resource variables" if found else ""


@register_converter("onnx", "openvino")
def onnx_to_openvino(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    return to_openvino(model_path, ctx, out_dir, "ONNX")


@register_converter("tflite", "openvino")
def tflite_to_openvino(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    return to_openvino(model_path, ctx, out_dir, "TFLite", tflite_state_note)


@register_converter("tflite", "onnx")
def tflite_to_onnx(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    """tf2onnx reads the file at its stored shapes: it takes no input shapes (its `from_tflite` has no
    signature argument), so a dynamic batch converts as the file stores it and the IR is reshaped on load."""
    from harness.zoo.keras_util import import_tf
    import_tf()
    import tf2onnx

    path = Path(out_dir) / f"{ctx.name}.onnx"
    from harness.core.quiet import native_stderr_quieted
    try:
        with native_stderr_quieted():  # the TFLite interpreter it opens announces XNNPACK on fd 2
            tf2onnx.convert.from_tflite(str(model_path), opset=17, output_path=str(path))
    except Exception as exc:
        raise conversion_failed(ctx.name, "ONNX conversion from TFLite (tf2onnx)", exc,
                                tflite_state_note(model_path)) from None
    return path

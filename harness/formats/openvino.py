"""OpenVINO IR from an intermediate ONNX file: the one path every framework's converter shares."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConversionError


def onnx_to_openvino(onnx_path: Path, recipe, out_dir: Path) -> Path:
    """Convert onnx_path to `<out_dir>/<recipe>.xml` (+ .bin) in fp32, then delete the intermediate ONNX."""
    import openvino as ov

    path = Path(out_dir) / f"{recipe.name}.xml"
    try:
        # fp32 weights: the IR must compute what the reference computes; precision is the device's choice.
        ov.save_model(ov.convert_model(str(onnx_path)), str(path), compress_to_fp16=False)
    except Exception as exc:
        raise ConversionError(f"{recipe.name}: OpenVINO conversion failed: {exc}") from None
    finally:
        Path(onnx_path).unlink(missing_ok=True)
    return path

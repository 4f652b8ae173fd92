"""Keras → TFLite, ONNX (tf2onnx) and OpenVINO IR."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConversionError
from . import register_converter


def _load(model_path: Path):
    from ..frameworks import get_framework
    return get_framework("keras").load(model_path)


def _signature(tf, recipe):
    shape = (None,) + tuple(recipe.input.shape[1:])
    return tf.TensorSpec(shape, tf.as_dtype(recipe.input.dtype), name=recipe.input.name)


@register_converter("keras", "tflite")
def keras_to_tflite(model_path: Path, recipe, out_dir: Path) -> Path:
    from ..zoo.keras_util import import_tf
    tf, _ = import_tf()
    model = _load(model_path)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    try:
        flatbuffer = converter.convert()
    except Exception as exc:
        raise ConversionError(f"{recipe.name}: TFLite conversion failed: {exc}") from None
    path = Path(out_dir) / f"{recipe.name}.tflite"
    path.write_bytes(flatbuffer)
    return path


@register_converter("keras", "onnx")
def keras_to_onnx(model_path: Path, recipe, out_dir: Path) -> Path:
    from ..zoo.keras_util import import_tf
    tf, _ = import_tf()
    import tf2onnx

    model = _load(model_path)
    path = Path(out_dir) / f"{recipe.name}.onnx"
    try:
        tf2onnx.convert.from_keras(model, input_signature=(_signature(tf, recipe),), opset=17,
                                   output_path=str(path))
    except Exception as exc:
        raise ConversionError(f"{recipe.name}: ONNX conversion (tf2onnx) failed: {exc}") from None
    return path


@register_converter("keras", "openvino")
def keras_to_openvino(model_path: Path, recipe, out_dir: Path) -> Path:
    """Through ONNX: OpenVINO's TensorFlow frontend would need a SavedModel on disk anyway."""
    from .openvino import onnx_to_openvino

    return onnx_to_openvino(keras_to_onnx(model_path, recipe, out_dir), recipe, out_dir)

"""Keras and SavedModel → TFLite, ONNX (tf2onnx) and OpenVINO IR, at the model's fixed input shapes."""
from __future__ import annotations

from pathlib import Path

from harness.prepare.converters import ConversionContext, conversion_failed, register_converter, scratch_dir
from harness.prepare.converters.onnx import onnx_to_openvino, to_openvino


def input_signature(tf, ctx: ConversionContext):
    """One TensorSpec per input, named after it, at the fixed sizes."""
    return [tf.TensorSpec(s.static_shape, tf.as_dtype(s.dtype), name=s.name) for s in ctx.interface.inputs]


def keras_function(tf, model, ctx: ConversionContext):
    """A concrete function of the model whose inputs and outputs carry the interface's names (TFLite signatures
    take them from here; a QAT model's renamed output layer keeps its recipe name)."""
    from harness.prepare.sources.tensorflow import flatten_outputs

    names = ctx.interface.output_names

    def call(*xs):
        y = model(list(xs) if len(xs) > 1 else xs[0], training=False)
        return dict(zip(names, flatten_outputs(y, names if isinstance(y, dict) else None)))
    return tf.function(call, input_signature=input_signature(tf, ctx)).get_concrete_function()


def tflite_from_function(tf, function, owner, ctx: ConversionContext, out_dir: Path) -> Path:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], owner)
    try:
        flatbuffer = converter.convert()
    except Exception as exc:
        raise conversion_failed(ctx.name, "TFLite conversion", exc) from None
    path = Path(out_dir) / f"{ctx.name}.tflite"
    path.write_bytes(flatbuffer)
    return path


@register_converter("keras", "tflite")
def keras_to_tflite(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    from harness.prepare.sources.tensorflow import load_keras_model
    from harness.zoo.keras_util import import_tf
    tf, _ = import_tf()
    model = load_keras_model(model_path)
    return tflite_from_function(tf, keras_function(tf, model, ctx), model, ctx, out_dir)


@register_converter("keras", "onnx")
def keras_to_onnx(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    from harness.prepare.sources.tensorflow import load_keras_model
    from harness.zoo.keras_util import import_tf
    tf, _ = import_tf()
    import tf2onnx

    model = load_keras_model(model_path)
    path = Path(out_dir) / f"{ctx.name}.onnx"
    try:
        tf2onnx.convert.from_keras(model, input_signature=tuple(input_signature(tf, ctx)), opset=17,
                                   output_path=str(path))
    except Exception as exc:
        raise conversion_failed(ctx.name, "ONNX conversion (tf2onnx)", exc) from None
    return path


@register_converter("keras", "openvino")
def keras_to_openvino(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    """Through ONNX: OpenVINO's TensorFlow frontend would need a SavedModel on disk anyway."""
    with scratch_dir() as tmp:
        return onnx_to_openvino(keras_to_onnx(model_path, ctx, tmp), ctx, out_dir)


@register_converter("savedmodel", "tflite")
def savedmodel_to_tflite(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    from harness.prepare.sources.tensorflow import serving_signature
    from harness.zoo.keras_util import import_tf
    tf, _ = import_tf()
    loaded, signature = serving_signature(model_path)
    names = ctx.interface.input_names

    def call(*xs):
        return signature(**dict(zip(names, xs)))
    function = tf.function(call, input_signature=input_signature(tf, ctx)).get_concrete_function()
    return tflite_from_function(tf, function, loaded, ctx, out_dir)


@register_converter("savedmodel", "onnx")
def savedmodel_to_onnx(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    from harness.prepare.sources.tensorflow import serving_signature
    from harness.zoo.keras_util import import_tf
    tf, _ = import_tf()
    import tf2onnx

    _, signature = serving_signature(model_path)
    names = ctx.interface.input_names
    outputs = ctx.interface.output_names

    def call(*xs):
        result = signature(**dict(zip(names, xs)))
        return [result[n] for n in outputs]
    path = Path(out_dir) / f"{ctx.name}.onnx"
    try:
        tf2onnx.convert.from_function(tf.function(call, input_signature=input_signature(tf, ctx)),
                                      input_signature=input_signature(tf, ctx), opset=17, output_path=str(path))
    except Exception as exc:
        raise conversion_failed(ctx.name, "ONNX conversion from SavedModel (tf2onnx)", exc) \
            from None
    return path


@register_converter("savedmodel", "openvino")
def savedmodel_to_openvino(model_path: Path, ctx: ConversionContext, out_dir: Path) -> Path:
    return to_openvino(model_path, ctx, out_dir, "SavedModel")

"""ONNX Runtime static int8 quantization (QDQ or QOperator) of any source's reference.

The fp32 ONNX is the reference's own ONNX artifact (the source file, or its
cached conversion), so the quantized file starts from exactly the graph the
reference ONNX cell runs. Activation ranges come from a CalibrationDataReader
over the calibration samples (every input of each sample, by name).

`keep_float`: quantize once, let ONNX Runtime's CPU provider fuse the result
as it would at load time (ORT_ENABLE_EXTENDED), and quantize again leaving out
the operator types that still ran float between a DequantizeLinear and a
QuantizeLinear (no integer kernel for them here): they stay float, with no
quantize/dequantize pair around them.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List

from harness.core.errors import ConfigError, ConversionError
from harness.prepare.compress import VariantModel, register_compressor
from harness.prepare.compressors._common import calibration, in_order, reference_weights, take_params, weight_metrics
from harness.prepare.compressors.weights import onnx_weight_tensors

DEFAULTS = {
    "per_channel": True,
    "activation_type": "int8",     # 'int8' or 'uint8'
    "weight_type": "int8",
    "calibrate_method": "minmax",  # 'minmax', 'entropy' or 'percentile'
    "calibration_samples": 0,      # 0: the recipe's
    "quant_format": "qdq",         # 'qdq' (QuantizeLinear/DequantizeLinear pairs) or 'qoperator' (QLinearConv, ...)
    "keep_float": False,           # leave out the operator types ONNX Runtime's CPU provider runs float anyway
}
#: values of the text parameters
CHOICES = {"activation_type": ("int8", "uint8"), "weight_type": ("int8", "uint8"),
           "calibrate_method": ("minmax", "entropy", "percentile"), "quant_format": ("qdq", "qoperator")}


def fallback_op_types(path: Path) -> List[str]:
    """Operator types of a QDQ file that ONNX Runtime's CPU provider still runs as float ops fed by a
    DequantizeLinear once it has fused what it can (the optimized graph it saves at load time)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(scratch) / "fused.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return sorted({node.op_type for node in graph.node if node.domain in ("", "ai.onnx")
                   and node.op_type not in ("QuantizeLinear", "DequantizeLinear")
                   and any(name in dequantized for name in node.input)})



def _rename_inside(graph, prefix: str) -> None:
    """Number every node and every tensor but the graph's inputs and outputs (the interface)."""
    keep = {v.name for v in list(graph.input) + list(graph.output)}
    names = {out for node in graph.node for out in node.output} | {i.name for i in graph.initializer}
    # numbered, not prefixed: the quantizer derives its tensors' names from these ('<name>_DequantizeLinear_Output')
    renamed = {name: f"{prefix}t{i}" for i, name in enumerate(sorted(names - keep)) if name}
    for i, node in enumerate(graph.node):
        node.name = f"{prefix}node{i}"  # not after a tensor: the quantizer names its own nodes so
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    for tensor in list(graph.initializer) + list(graph.value_info):
        tensor.name = renamed.get(tensor.name, tensor.name)


@register_compressor("ort_int8", DEFAULTS)
def ort_int8(ctx, params: Dict[str, Any], out_dir: Path) -> VariantModel:
    p = take_params(ctx, "ort_int8", params, DEFAULTS)
    for key, allowed in CHOICES.items():
        if p[key] not in allowed:
            raise ConfigError(f"variant of {ctx.recipe.name}", f"ort_int8 {key} must be one of {', '.join(allowed)}, "
                              f"got {p[key]!r}", f"params.{key}")
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
        quantize_static

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    samples = calibration(ctx, "ort_int8", p["calibration_samples"])
    fp32 = ctx.convert_reference("onnx")
    import onnx
    graph = onnx.load(str(fp32), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initializers]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._samples = iter(samples)

        def get_next(self):
            sample = next(self._samples, None)
            return None if sample is None else dict(zip(names, in_order(sample, names)))

    path = Path(out_dir) / f"{ctx.recipe.name}.onnx"
    qformat = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[p["quant_format"]]

    def quantize(source: Path, into: Path, op_types=None) -> None:
        quantize_static(str(source), str(into), Reader(), quant_format=qformat, op_types_to_quantize=op_types,
                        per_channel=bool(p["per_channel"]), activation_type=types[p["activation_type"]],
                        weight_type=types[p["weight_type"]], calibrate_method=methods[p["calibrate_method"]])

    kept_float: List[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        # The quantizer writes an augmented model beside its input: give it a copy, never the cache's file.
        source = Path(scratch) / "fp32.onnx"
        shutil.copyfile(fp32, source)
        requantizing = any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)
        if requantizing and qformat == QuantFormat.QOperator:
            raise ConversionError("quant_format qoperator cannot re-quantize a graph that already holds "
                                  "QuantizeLinear/DequantizeLinear (its biases are dequantized tensors, not the "
                                  "initializers a QLinear op takes): use the qdq format, or profile the source as it is")
        if requantizing:
            # An already-quantized graph (re-quantization): the quantizer names its new nodes after tensors
            # ('<tensor>_DequantizeLinear'), as the source's own quantizer did; other node names avoid two nodes
            # of one name, which no runtime loads.
            model = onnx.load(str(source))
            _rename_inside(model.graph, "source/")
            onnx.save(model, str(source))
        if qformat == QuantFormat.QOperator:
            # QOperator folds each bias into its QLinear op, so biases must be initializers: ONNX Runtime's
            # pre-processing folds the Identity/Constant nodes exporters put in front of them.
            from onnxruntime.quantization import quant_pre_process
            quant_pre_process(str(source), str(Path(scratch) / "pre.onnx"), skip_symbolic_shape=True)
            source = Path(scratch) / "pre.onnx"
        quantize(source, path)
        if p["keep_float"]:
            from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
            kept_float = fallback_op_types(path) if qformat == QuantFormat.QDQ else []
            present = {node.op_type for node in graph.node}
            keep = sorted(present & (set(QDQRegistry) | set(QLinearOpsRegistry)) - set(kept_float))
            if not keep:
                raise ConversionError(f"keep_float: every quantizable operator of {ctx.recipe.name} "
                                      f"({', '.join(kept_float)}) runs float here anyway; keep the model float")
            if kept_float:  # a second pass, with a fresh reader (quantize makes one per call)
                quantize(source, path, keep)
    reference, param_count = reference_weights(ctx)
    settings = {"format": p["quant_format"], "activations": p["activation_type"], "weights": p["weight_type"],
                "per_channel": bool(p["per_channel"]), "kept_float": kept_float if p["keep_float"] else None,
                "source_quantized": requantizing}
    metrics = {"param_count": param_count, "quantization": f"ort_{p['quant_format']}_int8",
               "quantization_settings": settings, **weight_metrics(reference, onnx_weight_tensors(path))}
    return VariantModel(artifacts={"onnx": path}, metrics=metrics)

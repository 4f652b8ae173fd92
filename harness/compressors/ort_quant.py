"""ONNX Runtime static int8 quantization (QDQ) of any source's reference.

The fp32 ONNX is the reference's own ONNX artifact (the source file, or its
cached conversion), so the quantized file starts from exactly the graph the
reference ONNX cell runs. Activation ranges come from a CalibrationDataReader
over the calibration samples (every input of each sample, by name).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from ..compress import VariantModel, register_compressor
from ._common import calibration, in_order, reference_weights, take_params, weight_metrics
from .weights import dequantize

DEFAULTS = {
    "per_channel": True,
    "activation_type": "int8",     # 'int8' or 'uint8'
    "weight_type": "int8",
    "calibrate_method": "minmax",  # 'minmax', 'entropy' or 'percentile'
    "calibration_samples": 0,      # 0: the recipe's
}


def onnx_weight_tensors(path: Path) -> List[np.ndarray]:
    """Float initializers plus every initializer a DequantizeLinear turns back into floats."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out, consumed = [], set()
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            scale = inits[node.input[1]]
            zero_point = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros_like(scale)
            q = inits[node.input[0]]
            out.append(dequantize(q, scale, zero_point, axis if np.size(scale) > 1 else None))
            consumed.update(node.input)
    out += [v.astype(np.float64) for k, v in inits.items() if k not in consumed and v.dtype.kind == "f" and v.ndim]
    return out


@register_compressor("ort_int8", DEFAULTS)
def ort_int8(ctx, params: Dict[str, Any], out_dir: Path) -> VariantModel:
    p = take_params(ctx, "ort_int8", params, DEFAULTS)
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
    with tempfile.TemporaryDirectory() as scratch:
        # The quantizer writes an augmented model beside its input: give it a copy, never the cache's file.
        shutil.copyfile(fp32, Path(scratch) / "fp32.onnx")
        quantize_static(str(Path(scratch) / "fp32.onnx"), str(path), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=bool(p["per_channel"]), activation_type=types[p["activation_type"]],
                        weight_type=types[p["weight_type"]], calibrate_method=methods[p["calibrate_method"]])
    reference, param_count = reference_weights(ctx)
    metrics = {"param_count": param_count, "quantization": "ort_qdq_int8",
               **weight_metrics(reference, onnx_weight_tensors(path))}
    return VariantModel(artifacts={"onnx": path}, metrics=metrics)

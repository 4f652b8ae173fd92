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
from typing import Any, Dict

from harness.prepare.compress import VariantModel, register_compressor
from harness.prepare.compressors._common import calibration, in_order, reference_weights, take_params, weight_metrics
from harness.prepare.compressors.weights import onnx_weight_tensors

DEFAULTS = {
    "per_channel": True,
    "activation_type": "int8",     # 'int8' or 'uint8'
    "weight_type": "int8",
    "calibrate_method": "minmax",  # 'minmax', 'entropy' or 'percentile'
    "calibration_samples": 0,      # 0: the recipe's
}



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

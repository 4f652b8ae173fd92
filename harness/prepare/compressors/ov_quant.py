"""OpenVINO int8: NNCF post-training quantization of the reference's IR (the source or its conversion).

nncf.quantize inserts FakeQuantize on activations (ranges from the recipe's
calibration samples) and stores weights as int8 constants with per-channel
scales; the saved IR (.xml + .bin) is the variant's 'openvino' artifact.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from harness.prepare.compress import VariantModel, register_compressor
from harness.prepare.compressors._common import calibration, in_order, reference_weights, take_params, weight_metrics

DEFAULTS = {
    "preset": "performance",        # 'performance' (symmetric) or 'mixed' (asymmetric activations)
    "fast_bias_correction": True,
    "calibration_samples": 0,       # 0: the recipe's
}


def _constant(node) -> np.ndarray:
    return np.asarray(node.get_data())


def openvino_weight_tensors(xml: Path) -> List[np.ndarray]:
    """Weights as the IR holds them: int8 constants decompressed through their Convert/Subtract/Multiply
    chain, plus float constants that are not FakeQuantize ranges."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    out, used = [], set()

    def source(node_input):
        return node_input.get_source_output().get_node()

    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "FakeQuantize":
            used.update(source(i).get_friendly_name() for i in list(op.inputs())[1:])
        if kind != "Multiply":
            continue
        data, scale = source(op.inputs()[0]), source(op.inputs()[1])
        if scale.get_type_name() != "Constant":
            continue
        zero_point = None
        if data.get_type_name() == "Subtract":
            zp = source(data.inputs()[1])
            zp = source(zp.inputs()[0]) if zp.get_type_name() == "Convert" else zp
            zero_point = _constant(zp) if zp.get_type_name() == "Constant" else None
            data = source(data.inputs()[0])
        if data.get_type_name() != "Convert":
            continue
        const = source(data.inputs()[0])
        if const.get_type_name() != "Constant" or const.get_output_element_type(0).is_real():
            continue
        q = _constant(const).astype(np.float64)
        zp = 0.0 if zero_point is None else zero_point.astype(np.float64)
        out.append((q - zp) * _constant(scale).astype(np.float64))  # IR constants broadcast like numpy
        used.update({const.get_friendly_name(), scale.get_friendly_name()})
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant" and op.get_friendly_name() not in used \
                and op.get_output_element_type(0).is_real():
            value = _constant(op)
            if value.ndim and value.size > 1:
                out.append(value.astype(np.float64))
    return out


@register_compressor("ov_int8", DEFAULTS)
def ov_int8(ctx, params: Dict[str, Any], out_dir: Path) -> VariantModel:
    p = take_params(ctx, "ov_int8", params, DEFAULTS)
    if p["preset"] not in ("performance", "mixed"):
        from harness.core.errors import ConfigError
        raise ConfigError(f"variant of {ctx.recipe.name}", f"ov_int8 preset must be performance or mixed, got "
                          f"{p['preset']!r}", "params.preset")
    import nncf
    import openvino as ov

    presets = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
    samples = calibration(ctx, "ov_int8", p["calibration_samples"])
    path = Path(out_dir) / f"{ctx.recipe.name}.xml"
    model = ov.Core().read_model(str(ctx.convert_reference("openvino")))
    names = [sorted(port.get_names())[0] if port.get_names() else port.get_any_name() for port in model.inputs]
    if model.is_dynamic():
        model.reshape({port: ov.PartialShape(list(x.shape)) for port, x in zip(model.inputs,
                                                                              in_order(samples[0], names))})
    items = [in_order(s, names) for s in samples]
    dataset = nncf.Dataset([x[0] if len(x) == 1 else tuple(x) for x in items])
    from harness.core.quiet import python_output_quieted
    with python_output_quieted("nncf.quantize"):  # its progress bar: the harness has its own progress lines
        quantized = nncf.quantize(model, dataset, preset=presets[p["preset"]], subset_size=len(samples),
                                  fast_bias_correction=bool(p["fast_bias_correction"]))
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    reference, param_count = reference_weights(ctx)
    metrics = {"param_count": param_count, "quantization": "nncf_ptq_int8",
               "quantization_settings": {"preset": p["preset"]},
               **weight_metrics(reference, openvino_weight_tensors(path))}
    return VariantModel(artifacts={"openvino": path}, metrics=metrics)

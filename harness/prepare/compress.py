"""Compressors: turn a reference model into a variant (pruned, quantized, distilled).

COMPRESSORS maps a name used in recipes (`variants: [{name, compressor, params}]`)
to `compress(ctx: CompressionContext, params: dict, out_dir: Path) -> VariantModel`.
A variant is either a framework model that every converter can take, or
ready-made artifacts for some formats (e.g. a TFLite int8 file).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from harness.core.registry import Registry

COMPRESSORS: Registry = Registry("compressor", {
    "keras_prune": "harness.prepare.compressors.keras_prune", "torch_prune": "harness.prepare.compressors.torch_prune",
    "tflite_dynamic": "harness.prepare.compressors.tflite_quant",
    "tflite_float16": "harness.prepare.compressors.tflite_quant", "tflite_int8": "harness.prepare.compressors.tflite_quant",
    "qat": "harness.prepare.compressors.qat", "ort_int8": "harness.prepare.compressors.ort_quant",
    "ov_int8": "harness.prepare.compressors.ov_quant", "distill": "harness.prepare.compressors.distill",
})


def register_compressor(name: str, defaults: Dict[str, Any]):
    """Register a compressor with its parameters' defaults, so a recipe's params are checked when it loads."""
    def decorator(function):
        function.defaults = dict(defaults)
        return COMPRESSORS.register(name)(function)
    return decorator

#: bump when a compressor's output changes, so cached variants are rebuilt
COMPRESSOR_VERSION = "2"


@dataclass(frozen=True)
class CompressionContext:
    recipe: Any
    #: the reference's source format (keras, torch_module, onnx, ...)
    source_format: str
    reference_model_path: Path
    #: the reference's fixed interface (harness.schema.interface.Interface)
    interface: Any
    #: calibration samples (harness.prepare.data.SampleSet), or None when there are none
    calibration: Any = None
    #: a zoo data set with a training split (x_train, y_train), for compressors that train; None for model files
    train_data: Any = None
    seed: int = 0
    #: fmt -> the reference converted to that deployable format (the build's cached conversion)
    convert_reference: Optional[Callable[[str], Path]] = field(default=None, compare=False)


@dataclass(frozen=True)
class VariantModel:
    #: a model file the converters can take (in source format `source_format`), or None
    model_path: Optional[Path] = None
    source_format: Optional[str] = None
    #: format -> primary file already made by the compressor
    artifacts: Dict[str, Path] = field(default_factory=dict)
    #: input/output dtypes other than float32 that this variant's artifacts may use (e.g. int8)
    io_dtypes: Tuple[str, ...] = ()
    #: param_count, macs, sparsity, weight_rel_frobenius, ... (result columns)
    metrics: Dict[str, Any] = field(default_factory=dict)
    #: made by this call, not found in the cache: its ready-made artifacts count as built, not reused
    built_now: bool = False

"""Compressors: turn a reference model into a variant (pruned, quantized, distilled).

COMPRESSORS maps a name used in recipes (`variants: [{name, compressor, params}]`)
to `compress(ctx: CompressionContext, params: dict, out_dir: Path) -> VariantModel`.
A variant is either a framework model that every converter can take, or
ready-made artifacts for some formats (e.g. a TFLite int8 file).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from .registry import Registry

COMPRESSORS: Registry = Registry("compressor", ["harness.compressors"])

#: bump when a compressor's output changes, so cached variants are rebuilt
COMPRESSOR_VERSION = "1"


@dataclass(frozen=True)
class CompressionContext:
    recipe: Any
    framework: str
    reference_model_path: Path
    #: harness.zoo.datasets.Dataset with the recipe's preprocessing applied
    data: Any
    seed: int = 0


@dataclass(frozen=True)
class VariantModel:
    #: a framework model file the converters can take, or None
    model_path: Optional[Path] = None
    framework: Optional[str] = None
    #: format -> primary file already made by the compressor
    artifacts: Dict[str, Path] = field(default_factory=dict)
    #: input/output dtypes other than float32 that this variant's artifacts may use (e.g. int8)
    io_dtypes: Tuple[str, ...] = ()
    #: param_count, macs, sparsity, weight_rel_frobenius, ... (result columns)
    metrics: Dict[str, Any] = field(default_factory=dict)

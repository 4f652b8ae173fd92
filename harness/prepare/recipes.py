"""Recipes as the build sees them: the recipe `--model-file` makes for a file (its format detected), and a
recipe's registry names, variant parameters and entry points checked before any work."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from harness.prepare.compress import COMPRESSORS
from harness.prepare.data import load_entry_point
from harness.prepare.sources import SOURCES, detect_format
from harness.core.errors import ConfigError
from harness.schema.recipes import DataSpec, InputSpec, ModelRecipe, OutputSpec, SourceSpec, VariantSpec
from harness.schema.targets import ALL_FORMATS, FORMATS
from harness.zoo import BUILDERS, DATASETS


#: the other settings of the int8 compressors, each a variant to run next to the first attempt (the finding of
#: harness.report.int8 names the one its evidence points to); `--variants all` leaves them out
ORT_ALTERNATIVES: Tuple[VariantSpec, ...] = (
    VariantSpec("ort_int8_u8", "ort_int8", {"activation_type": "uint8"}, alternative_of="ort_int8"),
    VariantSpec("ort_int8_qoperator", "ort_int8", {"quant_format": "qoperator"}, alternative_of="ort_int8"),
    VariantSpec("ort_int8_per_tensor", "ort_int8", {"per_channel": False}, alternative_of="ort_int8"),
    VariantSpec("ort_int8_keep_float", "ort_int8", {"keep_float": True}, alternative_of="ort_int8"),
)
OV_ALTERNATIVES: Tuple[VariantSpec, ...] = (
    VariantSpec("ov_int8_mixed", "ov_int8", {"preset": "mixed"}, alternative_of="ov_int8"),
)
#: `--variants int8_alternatives`: every alternative a recipe declares
ALTERNATIVES_GROUP = "int8_alternatives"

#: by compressor: the alternatives each first attempt of it gets (with_int8_alternatives)
ALTERNATIVES_BY_COMPRESSOR: Dict[str, Tuple[VariantSpec, ...]] = {"ort_int8": ORT_ALTERNATIVES,
                                                                  "ov_int8": OV_ALTERNATIVES}

_ORT = (VariantSpec("ort_int8", "ort_int8"),)
_OV = (VariantSpec("ov_int8", "ov_int8"),)
#: int8 and float16 variants that work from each source format (calibration comes from the user's data)
FILE_VARIANTS: Dict[str, Tuple[VariantSpec, ...]] = {
    "onnx": _ORT + _OV,
    "tflite": _ORT + _OV,
    "openvino": _OV,
    "keras": (VariantSpec("tflite_dynamic", "tflite_dynamic"), VariantSpec("tflite_fp16", "tflite_float16"),
              VariantSpec("tflite_int8", "tflite_int8", {"io": "float32"})) + _ORT + _OV,
    "torchscript": _ORT + _OV,
    "torch_export": _ORT + _OV,
}
FILE_VARIANTS["savedmodel"] = FILE_VARIANTS["keras"]


def recipe_for_file(path: Path, source_format: str = "", shapes: Optional[Dict[str, Tuple[int, ...]]] = None,
                    data: str = "", calibration: str = "", metric: str = "", task: str = "",
                    name: str = "", random_samples: int = 16, class_output: str = "") -> ModelRecipe:
    """The recipe `harness profile --model-file PATH` runs: the file, its data, every format, its int8 variants."""
    path = Path(path).expanduser().resolve()
    fmt = source_format or detect_format(path)
    where = f"--model-file {path}"
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name or (path.name if path.is_dir() else path.stem)).lstrip("._-") or "model"
    inputs = tuple(InputSpec(n, tuple(s)) for n, s in (shapes or {}).items())
    data_path = Path(data).expanduser().resolve() if data else None
    is_dir = bool(data_path and data_path.is_dir())
    try:
        spec = DataSpec(npz=str(data_path) if data_path and not is_dir else "",
                        images=str(data_path) if is_dir else "",
                        calibration=str(Path(calibration).expanduser().resolve()) if calibration else "",
                        random_samples=random_samples)
        # A torch file also runs as itself, in the torch runtime, where a target lists it.
        formats = ALL_FORMATS if fmt in ("torchscript", "torch_export") else FORMATS
        recipe = ModelRecipe(name=stem, source=SourceSpec(path=str(path), format=fmt), inputs=inputs, data=spec,
                             output=OutputSpec(name=class_output), formats=formats,
                             task=task, metric=metric, variants=FILE_VARIANTS.get(fmt, ()),  # type: ignore[arg-type]
                             description=f"{fmt} model file {path}", source_path="")
    except (TypeError, ValueError) as exc:
        raise ConfigError(where, str(exc)) from None
    return with_int8_alternatives(recipe)


def with_int8_alternatives(recipe: ModelRecipe) -> ModelRecipe:
    """The recipe with the other settings of each first-attempt ONNX Runtime or NNCF int8 variant it declares
    (ALTERNATIVES_BY_COMPRESSOR), so `--variants int8_alternatives` and the int8 finding's next step work for a
    recipe file as for a model file. Each alternative keeps its first attempt's parameters and changes one; it is
    named after it (`ort_int8_u8`; `my_int8_u8` for a variant `my_int8`). Names the recipe declares are kept."""
    from dataclasses import replace
    declared = {v.name for v in recipe.variants}
    extra = []
    for first in (v for v in recipe.variants if not v.alternative_of):
        for alt in ALTERNATIVES_BY_COMPRESSOR.get(first.compressor, ()):
            name = first.name + alt.name[len(alt.alternative_of):]
            if name not in declared:
                declared.add(name)
                extra.append(VariantSpec(name, first.compressor, {**dict(first.params), **dict(alt.params)},
                                         alternative_of=first.name))
    return replace(recipe, variants=tuple(recipe.variants) + tuple(extra)) if extra else recipe


def validate_recipe(recipe: ModelRecipe, variants: Sequence[str] = ()) -> None:
    """Registry names, variant parameters and entry points, checked before any work; each error names the
    recipe file (or the flag) and the field. `variants`: the ones this run makes."""
    where = recipe.source_path or "--model-file"
    checks = [("source.builder", recipe.source.builder, BUILDERS), ("data.dataset", recipe.data.dataset, DATASETS),
              ("source.format", recipe.source.format, SOURCES)]
    for key, name, registry in checks:
        if name and name not in registry:
            raise ConfigError(where, f"unknown {registry.kind} {name!r}; known: "
                              f"{', '.join(map(str, registry.names()))}", key)
    for i, variant in enumerate(recipe.variants):
        if variant.name not in variants:
            continue
        compressor = COMPRESSORS.get(variant.compressor) if variant.compressor in COMPRESSORS else None
        if compressor is None:
            raise ConfigError(where, f"unknown compressor {variant.compressor!r}; known: "
                              f"{', '.join(COMPRESSORS.names())}", f"variants[{i}].compressor")
        unknown = sorted(set(variant.params) - set(getattr(compressor, "defaults", variant.params)))
        if unknown:
            raise ConfigError(where, f"compressor {variant.compressor!r} has no parameter(s) {unknown}; known: "
                              f"{', '.join(sorted(compressor.defaults)) or 'none'}", f"variants[{i}].params")
    for key, entry in (("metric", recipe.metric), ("data.loader", recipe.data.loader)):
        if entry:
            load_entry_point(entry, where, key, recipe.base_dir)

"""The prepare stage as named steps: source → reference → compress → convert → inspect.

A model enters as a file in any source format (the user's, read and never written) or as what a zoo builder makes
(harness.prepare.reference: steps 1-3, the source, its data and its reference outputs). Here: step 4 makes each
variant (harness.prepare.compress), step 5 converts each to the recipe's formats and inspects it where the format's
runtime is (harness.prepare.inspection), and build_model_artifacts runs them all. Every step is cached by content
(the model's bytes, the data's bytes, the harness code and the converting libraries' versions): a second run with
nothing changed trains nothing and converts nothing, and says so; replacing a file in place, or upgrading a
converter, rebuilds.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from harness.prepare.cache import ContentCache, content_key
from harness.prepare.inspection import HOST, Inspector, pick_inspector
from harness.prepare.versions import library_versions
from harness.prepare.compress import COMPRESSOR_VERSION, COMPRESSORS, CompressionContext, VariantModel
from harness.core.errors import ConfigError, ConversionError, HarnessError, LibraryMissing
from harness.core.optional import as_library_missing
from harness.prepare.converters import (
    CONVERTER_VERSION,
    CONVERTERS,
    NO_CONVERTER,
    ConversionContext,
    artifact_files,
    copy_as_artifact,
)
from harness.schema.interface import Interface, check_interface
from harness.core.progress import SILENT, Progress
from harness.prepare.sources import content_sha256
from harness.core.files import file_sha256
from harness.prepare.artifact import REFERENCE, Artifact, PreparedModel, load_feeds
from harness.prepare.code_keys import source_hash
from harness.prepare.reference import prepare_model


def compress_variant(prepared: PreparedModel, variant_name: str, cache: ContentCache,
                     progress: Progress = SILENT) -> Tuple[VariantModel, bool]:
    """Make one compressed variant (cached by content). Returns it and whether it was cached."""
    recipe = prepared.recipe
    spec = recipe.variant(variant_name)
    compressor = COMPRESSORS.get(spec.compressor)
    key = content_key("variant", prepared.model_sha256, spec.compressor, spec.params, COMPRESSOR_VERSION,
                      source_hash(compressor, spec.compressor), prepared.calibration_sha256,
                      recipe.data.calibration_samples, recipe.seed, recipe.train, library_versions())

    def convert_reference(fmt: str) -> Path:
        artifact = convert(prepared, REFERENCE, reference_source(prepared), fmt, cache, progress)
        if artifact.error:
            raise ConversionError(f"{variant_name} starts from the reference in {fmt}: {artifact.error}")
        return Path(artifact.path)

    def compress(scratch: Path) -> None:
        progress(f"{recipe.name}/{variant_name}: compressing ({spec.compressor} {spec.params or ''})")
        ctx = CompressionContext(recipe, prepared.source_format, prepared.model_path, prepared.interface,
                                 prepared.calibration(), prepared.train_data, recipe.seed, convert_reference)
        started = time.perf_counter()
        variant = compressor(ctx, dict(spec.params), scratch)
        seconds = time.perf_counter() - started
        doc = {"model_path": _rel(variant.model_path, scratch), "source_format": variant.source_format,
               "artifacts": {f: _rel(p, scratch) for f, p in variant.artifacts.items()},
               "io_dtypes": list(variant.io_dtypes), "metrics": {**variant.metrics, "compression_s": seconds}}
        (scratch / "variant.json").write_text(json.dumps(doc, indent=1, default=float))

    entry = cache.get_or_build("variants", f"{recipe.name}-{variant_name}-{key}", compress)
    variant = replace(_load_variant(entry.path), built_now=not entry.cached)
    if entry.cached:
        progress(f"{recipe.name}/{variant_name}: variant cached")
    else:
        progress(f"{recipe.name}/{variant_name}: compressed in {variant.metrics['compression_s']:.1f}s")
    return variant, entry.cached

def _rel(path: Optional[Path], root: Path) -> Optional[str]:
    if path is None:
        return None
    return str(Path(path).resolve().relative_to(root.resolve()))

def _load_variant(entry: Path) -> VariantModel:
    doc = json.loads((entry / "variant.json").read_text())
    return VariantModel(model_path=entry / doc["model_path"] if doc["model_path"] else None,
                        source_format=doc["source_format"],
                        artifacts={f: entry / p for f, p in doc["artifacts"].items()},
                        io_dtypes=tuple(doc["io_dtypes"]), metrics=doc["metrics"])

def reference_source(prepared: PreparedModel) -> VariantModel:
    return VariantModel(model_path=prepared.model_path, source_format=prepared.source_format,
                        metrics={"param_count": prepared.param_count, "macs": prepared.macs})

#: bump when what inspection reads from an artifact changes, so cached inspections are redone
INSPECTION_VERSION = "2"

def _gzip_size(paths) -> int:
    return sum(len(gzip.compress(Path(p).read_bytes(), compresslevel=6)) for p in paths)

def _read_artifact_facts(primary: Path, fmt: str, files, shapes: Dict[str, List[int]],
                         inspector: Inspector = HOST) -> Dict[str, Any]:
    """What an artifact's content alone determines: interface, operators, gzip size (or why it won't load),
    read where `inspector` has the runtime (LibraryMissing where it has not: nothing is recorded)."""
    return {"gzip_bytes": _gzip_size(files), **inspector.inspect(primary, fmt, shapes)}

def inspect_files(prepared: PreparedModel, variant: str, fmt: str, primary: Path, io_dtypes=(), metrics=None,
                  cached: bool = False, cache: Optional[ContentCache] = None) -> Artifact:
    """Hash, inspect and check an artifact against its source's interface.

    With a cache, the content-determined facts (loading the model in its
    runtime, gzip of every file) are read once per content, not on every run.
    """
    files = artifact_files(primary, fmt)
    hashes = tuple(file_sha256(p) for p in files)
    combined = hashlib.sha256("".join(hashes).encode()).hexdigest()
    shapes = {s.name: list(s.static_shape) for s in prepared.interface.inputs}
    try:
        # The runtime that reads the file decides what is read: its version is part of the key. The host's
        # inspection of this content, kept from an earlier run, is read without importing the runtime (a warm
        # run would otherwise import every runtime only to ask whether it is there).
        host_key = content_key("inspection", combined, fmt, shapes, INSPECTION_VERSION, HOST.cache_identity(fmt))
        if cache is not None and cache.has("inspections", host_key):
            inspector = HOST
        else:  # on the host when it has the runtime, else on the first device of the run that has it
            inspector = pick_inspector(fmt, getattr(prepared, "inspector", None), f"inspecting the {fmt} artifact")
        key = host_key if inspector is HOST else \
            content_key("inspection", combined, fmt, shapes, INSPECTION_VERSION, inspector.cache_identity(fmt))

        def read_facts(scratch: Path) -> None:
            (scratch / "facts.json").write_text(json.dumps(_read_artifact_facts(primary, fmt, files, shapes,
                                                                                inspector)))

        facts = _read_artifact_facts(primary, fmt, files, shapes, inspector) if cache is None \
            else cache.get_or_build("inspections", key, read_facts).read_json("facts.json")
    except LibraryMissing as exc:
        return failed_artifact(prepared.recipe, variant, fmt, dict(metrics or {}), str(exc),
                               category="library_missing")
    except HarnessError as exc:  # the device that inspects could not be reached or lost its link
        return failed_artifact(prepared.recipe, variant, fmt, dict(metrics or {}), f"inspecting on a device of the "
                               f"run failed: {exc}", category="device_unreachable")
    if facts["load_error"]:
        problems: Tuple[str, ...] = (facts["load_error"],)
    else:
        problems = tuple(check_interface(prepared.interface, Interface.from_doc(facts["interface"]), io_dtypes,
                                         prepared.produced_outputs))
    recipe = prepared.recipe
    return Artifact(recipe.name, variant, fmt, str(primary), tuple(str(p) for p in files), hashes, combined,
                    sum(Path(p).stat().st_size for p in files), facts["gzip_bytes"], facts["interface"],
                    facts["operators"] or {}, problems, dict(metrics or {}), cached,
                    inspected_on=facts.get("inspected_on", "host"))

def first_sample(prepared: PreparedModel) -> Dict[str, np.ndarray]:
    return load_feeds(prepared.eval_inputs_path).sample(0)

def convert(prepared: PreparedModel, variant: str, source: VariantModel, fmt: str, cache: ContentCache,
            progress: Progress = SILENT) -> Artifact:
    """The artifact for one (variant, format): ready-made by a compressor, the source itself, or converted."""
    recipe = prepared.recipe
    metrics = dict(source.metrics)
    if fmt in source.artifacts:
        return inspect_files(prepared, variant, fmt, source.artifacts[fmt], source.io_dtypes, metrics,
                             cached=not source.built_now, cache=cache)
    if source.model_path is None or source.source_format is None:
        return failed_artifact(recipe, variant, fmt, metrics, "variant has no artifact in this format",
                                category="unsupported_format")
    pair = (source.source_format, fmt)
    if source.source_format == fmt:
        converter: Optional[Callable] = None
    elif pair in CONVERTERS:
        converter = CONVERTERS.get(pair)
    else:
        reason = NO_CONVERTER.get(pair, "no converter is registered for this pair")
        return failed_artifact(recipe, variant, fmt, metrics,
                                f"no converter from {source.source_format} to {fmt}: {reason}", category="no_converter")
    source_sha = content_sha256(source.model_path, source.source_format)
    key = content_key("artifact", source_sha, pair, CONVERTER_VERSION, prepared.interface.to_doc(),
                      source_hash(converter, fmt) if converter else "copy", library_versions())
    model_path = source.model_path  # not None, checked above

    def convert_into(scratch: Path) -> None:
        progress(f"{recipe.name}/{variant}: {'copying' if converter is None else 'converting'} "
                 f"{source.source_format} to {fmt}")
        started = time.perf_counter()
        ctx = ConversionContext(recipe.name, prepared.interface, first_sample(prepared))
        primary = copy_as_artifact(model_path, fmt, scratch, recipe.name) if converter is None \
            else converter(model_path, ctx, scratch)
        (scratch / "artifact.json").write_text(json.dumps({"primary": Path(primary).name,
                                                           "convert_s": time.perf_counter() - started}))

    try:
        entry = cache.get_or_build("artifacts", f"{recipe.name}-{variant}-{fmt}-{key}", convert_into)
    except ConversionError as exc:  # a converter that refuses fails this cell, not the run
        progress(f"{recipe.name}/{variant}: {fmt} conversion failed: {exc}")
        return failed_artifact(recipe, variant, fmt, metrics, str(exc), category="conversion_failed",
                               diagnostic=exc.diagnostic)
    except (LibraryMissing, ImportError) as exc:  # this host cannot make the format: skipped, naming the extra
        missing = as_library_missing(exc, f"converting to {fmt}")
        progress(f"{recipe.name}/{variant}: {fmt} not built: {missing}")
        return failed_artifact(recipe, variant, fmt, metrics, str(missing), category="library_missing")
    primary = entry.path / entry.read_json("artifact.json")["primary"]
    return inspect_files(prepared, variant, fmt, primary, source.io_dtypes, metrics, entry.cached, cache)

def failed_artifact(recipe, variant, fmt, metrics, message, category, diagnostic: str = "") -> Artifact:
    return Artifact(recipe.name, variant, fmt, "", (), (), "", 0, 0, {}, {}, (), {**metrics,
                    "error_category": category}, False, message, diagnostic)

#: compressors that quantize to integers: on a source that is already quantized they quantize it again
QUANTIZING_COMPRESSORS = ("ort_int8", "ov_int8", "tflite_int8", "tflite_dynamic", "qat")

#: ONNX operators only a quantized graph has: QDQ pairs and ONNX Runtime's integer (QOperator) kernels
QUANTIZED_ONNX_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                      "MatMulInteger", "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearSigmoid")


def quantized_source_ops(prepared: PreparedModel) -> List[str]:
    """What makes the source an int8 model: its int8 inputs/outputs (TFLite), or the quantized operators of an
    ONNX source ('3 QuantizeLinear, ...'); empty for a float source."""
    said = [t.name for t in prepared.interface.inputs + prepared.interface.outputs if t.quantization]
    if said:
        return [f"{', '.join(said)} carry int8 scales and zero points"]
    if prepared.source_format != "onnx":
        return []
    try:
        from harness.prepare.converters.inspect import list_operators
        counts = list_operators(Path(prepared.model_path), "onnx")
    except Exception:  # an unreadable graph is said where it is converted; here it is just not known quantized
        return []
    found = [f"{counts[op]} {op}" for op in QUANTIZED_ONNX_OPS if counts.get(op)]
    return [f"its graph has {', '.join(found)}"] if found else []


def requantization_note(prepared: PreparedModel, variant_name: str, quantized: Sequence[str]) -> str:
    """What a quantizing variant does to a source that is already quantized ('' for any other pair): it
    quantizes the source's conversion again, on top of the source's own scales. `quantized`: what makes the
    source an int8 model (quantized_source_ops, read once per build)."""
    spec = prepared.recipe.variant(variant_name)
    if spec.compressor not in QUANTIZING_COMPRESSORS or not quantized:
        return ""
    named = variant_name + (f" ({spec.compressor})" if spec.compressor != variant_name else "")
    return (f"re-quantization: {named} quantizes an already-quantized source again ({'; '.join(quantized)}"
            "): its own calibration on top of the "
            "source's, so it measures a twice-quantized model, not an int8 version of a float one; compare it "
            "with the reference's cells")


def build_model_artifacts(recipe, variants: List[str], cache: ContentCache, progress: Progress = SILENT,
                          inspector: Optional[Inspector] = None) -> Tuple[PreparedModel, List[Artifact]]:
    """Prepare the reference, make each requested variant, convert each to the recipe's formats; `inspector`
    reads what this host has no runtime for (see prepare_model)."""
    made_before = set(cache.made_here)
    prepared = prepare_model(recipe, cache, progress, with_calibration=bool(variants), inspector=inspector)
    sources: List[Tuple[str, VariantModel]] = [(REFERENCE, reference_source(prepared))]
    # the source's graph is read once, and only when a variant quantizes it
    quantizing = any(recipe.variant(name).compressor in QUANTIZING_COMPRESSORS for name in variants)
    quantized = quantized_source_ops(prepared) if quantizing else []
    for name in variants:
        requantizes = requantization_note(prepared, name, quantized)
        if requantizes:
            progress(f"{recipe.name}/{name}: {requantizes}")
            prepared = replace(prepared, data_notes=tuple(prepared.data_notes) + (requantizes,))
        try:
            variant, _ = compress_variant(prepared, name, cache, progress)
        except (LibraryMissing, ImportError) as exc:  # this host lacks the compressor's library
            missing = as_library_missing(exc, f"the {name} variant")
            progress(f"{recipe.name}/{name}: not made: {missing}")
            sources.append((name, VariantModel(metrics={"error_category": "library_missing",
                                                        "error_message": str(missing)})))
            continue
        except (ConfigError, ConversionError) as exc:  # this variant cannot be made here: its cells say why
            progress(f"{recipe.name}/{name}: compression failed: {exc}")
            sources.append((name, VariantModel(metrics={"error_category": "compression_failed",
                                                        "error_message": str(exc)})))
            continue
        except Exception as exc:  # a compressor that breaks fails its variant, not the run
            progress(f"{recipe.name}/{name}: compression failed: {exc}")
            sources.append((name, VariantModel(metrics={"error_category": "compression_failed",
                                                        "error_message": f"{type(exc).__name__}: {exc}"})))
            continue
        variant.metrics.setdefault("macs", prepared.macs)
        spec = recipe.variant(name)  # what the int8 finding (harness.report.int8) may name as the next variant
        if spec.alternative_of:
            variant.metrics["alternative_of"] = spec.alternative_of
        alternatives = {v.name: dict(v.params) for v in recipe.variants if v.alternative_of == name}
        if alternatives:
            variant.metrics["alternatives"] = alternatives
        sources.append((name, variant))
    artifacts = []
    for name, source in sources:
        for fmt in recipe.formats:
            if "error_message" in source.metrics:
                artifacts.append(failed_artifact(recipe, name, fmt, source.metrics, source.metrics["error_message"],
                                                 source.metrics["error_category"]))
                continue
            if source.model_path is None and fmt not in source.artifacts:
                continue  # a format-specific variant (e.g. ONNX int8) has no cell in the other formats
            artifacts.append(convert(prepared, name, source, fmt, cache, progress))
    # A conversion an earlier step of this build made (the reference in ONNX that ort_int8 starts from) was
    # built by this run, not reused, though its second lookup found it.
    made = cache.made_here - made_before
    artifacts = [replace(a, cached=False) if a.cached and a.path and any(Path(a.path).is_relative_to(m) for m in made)
                 else a for a in artifacts]
    return prepared, artifacts

"""Host-side build steps: prepare (train the reference), compress, convert, inspect.

Every step is cached by content: a second run with nothing changed trains
nothing and converts nothing, and says so.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .cache import ContentCache, content_key
from .compress import COMPRESSOR_VERSION, COMPRESSORS, CompressionContext, VariantModel
from .errors import ConversionError, HarnessError
from .formats import CONVERTER_VERSION, CONVERTERS, artifact_files
from .frameworks import get_framework
from .progress import SILENT, Progress
from .transport.base import file_sha256
from .zoo import BUILDERS, DATASETS

REFERENCE = "reference"


@dataclass(frozen=True)
class PreparedModel:
    """A trained reference model with its evaluation data and reference outputs."""

    recipe: Any
    model_path: Path
    eval_inputs_path: Path       # .npz, one array per input, samples first
    labels_path: Path            # .npy
    reference_outputs_path: Path  # .npy, the framework model's outputs on the eval inputs
    reference_accuracy: Optional[float]  # None: the data set has no labels
    param_count: int
    macs: Optional[int]
    cached: bool

    def labels(self) -> np.ndarray:
        return np.load(self.labels_path)

    def reference_outputs(self) -> np.ndarray:
        return np.load(self.reference_outputs_path)


@dataclass(frozen=True)
class Artifact:
    """One converted file set for (model, variant, format), inspected."""

    model: str
    variant: str
    format: str
    path: str
    files: Tuple[str, ...]
    file_sha256: Tuple[str, ...]
    sha256: str
    size_bytes: int
    gzip_bytes: int
    interface: Dict[str, Any]
    operators: Dict[str, int]
    problems: Tuple[str, ...]
    metrics: Dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    error: str = ""

    @property
    def compatible(self) -> bool:
        return not self.problems and not self.error


def load_dataset(recipe):
    loader = DATASETS.get(recipe.data.dataset)
    return loader(eval_fraction=recipe.data.eval_fraction, seed=recipe.data.seed)


def _module_source(module) -> str:
    import inspect
    try:
        return inspect.getsource(module)
    except (OSError, TypeError):
        return ""


def _harness_modules_imported_by(module, source: str) -> List[str]:
    """Names of the harness modules that `module` imports with relative imports, lazy ones included.

    `from .x import name` also yields `….x.name`, which counts only if it is a module itself."""
    import ast
    from importlib.util import resolve_name

    package = module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = resolve_name("." * node.level + (node.module or ""), package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import keras_util`
    # Import what is not loaded yet (harness modules import heavy libraries lazily, so this is cheap):
    # the key must not depend on what happened to be imported before.
    return sorted(n for n in names if n in sys.modules or _is_module(n))


def _is_module(name: str) -> bool:
    from importlib import import_module
    from importlib.util import find_spec
    try:
        if find_spec(name) is None:
            return False
        import_module(name)
        return True
    except (ImportError, ValueError):
        return False


def _source_hash(func, fallback: str) -> str:
    """Hash of the module that defines func and of the harness modules it imports (one level deep), so
    editing a builder, compressor or converter, or a helper it calls, rebuilds its cache entries."""
    import inspect
    module = inspect.getmodule(func)
    source = _module_source(module) if module is not None else ""
    if not source:
        return hashlib.sha256(fallback.encode()).hexdigest()[:12]
    digest = hashlib.sha256(source.encode())
    for name in _harness_modules_imported_by(module, source):
        digest.update(_module_source(sys.modules[name]).encode())
    return digest.hexdigest()[:12]


def _builder_source_hash(recipe) -> str:
    return _source_hash(BUILDERS.get(recipe.builder), recipe.builder)


def prepare_model(recipe, cache: ContentCache, progress: Progress = SILENT) -> PreparedModel:
    """Train (or load) the reference model and compute its outputs on the evaluation split."""
    key = content_key("model", recipe.training_key(), _builder_source_hash(recipe))
    entry = cache.entry("models", f"{recipe.name}-{key}")
    cached = cache.has("models", f"{recipe.name}-{key}")
    if not cached:
        progress(f"{recipe.name}: training reference model ({recipe.builder}, seed {recipe.seed})")
        started = time.perf_counter()
        data = load_dataset(recipe)
        with cache.build("models", f"{recipe.name}-{key}") as scratch:
            model_file = BUILDERS.get(recipe.builder)(recipe, data, scratch)
            framework = get_framework(recipe.framework)
            model = framework.load(model_file)
            x_eval, y_eval = data.x_eval, data.y_eval
            if y_eval is None:  # a data set without labels: -1 marks an unlabelled sample (see results.py)
                y_eval = np.full(len(x_eval), -1, dtype=np.int64)
            if recipe.data.eval_samples:
                x_eval, y_eval = x_eval[:recipe.data.eval_samples], y_eval[:recipe.data.eval_samples]
            ref = framework.predict(model, x_eval)
            labelled = y_eval >= 0
            accuracy = float((ref.argmax(axis=1)[labelled] == y_eval[labelled]).mean()) if labelled.any() else None
            np.savez(scratch / "eval_inputs.npz", **{recipe.input.name: x_eval.astype(recipe.input.dtype)})
            np.save(scratch / "labels.npy", y_eval)
            np.save(scratch / "reference_outputs.npy", ref)
            meta = {"model_file": Path(model_file).name, "reference_accuracy": accuracy,
                    "param_count": framework.param_count(model), "macs": framework.macs(model),
                    "train_s": time.perf_counter() - started, "n_eval": int(len(y_eval))}
            (scratch / "meta.json").write_text(json.dumps(meta, indent=1))
        progress(f"{recipe.name}: reference accuracy {_fmt_accuracy(accuracy)} on {len(y_eval)} held-out samples "
                 f"({meta['train_s']:.1f}s)")
    meta = json.loads((entry / "meta.json").read_text())
    if cached:
        progress(f"{recipe.name}: reference model cached (accuracy {_fmt_accuracy(meta['reference_accuracy'])})")
    return PreparedModel(recipe, entry / meta["model_file"], entry / "eval_inputs.npz", entry / "labels.npy",
                         entry / "reference_outputs.npy", meta["reference_accuracy"], meta["param_count"],
                         meta.get("macs"), cached)


def _fmt_accuracy(accuracy: Optional[float]) -> str:
    return "n/a (unlabelled data; cells report top1_agreement)" if accuracy is None else f"{accuracy:.4f}"


def compress_variant(prepared: PreparedModel, variant_name: str, cache: ContentCache,
                     progress: Progress = SILENT) -> Tuple[VariantModel, bool]:
    """Make one compressed variant (cached by content). Returns it and whether it was cached."""
    recipe = prepared.recipe
    spec = recipe.variant(variant_name)
    compressor = COMPRESSORS.get(spec.compressor)
    key = content_key("variant", file_sha256(prepared.model_path), spec.compressor, spec.params,
                      COMPRESSOR_VERSION, _source_hash(compressor, spec.compressor),
                      recipe.data.calibration_samples, recipe.seed)
    name = f"{recipe.name}-{variant_name}-{key}"
    entry = cache.entry("variants", name)
    if cache.has("variants", name):
        progress(f"{recipe.name}/{variant_name}: variant cached")
        return _load_variant(entry), True
    progress(f"{recipe.name}/{variant_name}: compressing ({spec.compressor} {spec.params or ''})")
    data = load_dataset(recipe)
    ctx = CompressionContext(recipe, recipe.framework, prepared.model_path, data, recipe.seed)
    # Load the reference once untimed, so compression_s does not include importing the framework.
    get_framework(recipe.framework).load(prepared.model_path)
    started = time.perf_counter()
    with cache.build("variants", name) as scratch:
        variant = compressor(ctx, dict(spec.params), scratch)
        seconds = time.perf_counter() - started
        doc = {"model_path": _rel(variant.model_path, scratch), "framework": variant.framework,
               "artifacts": {f: _rel(p, scratch) for f, p in variant.artifacts.items()},
               "io_dtypes": list(variant.io_dtypes), "metrics": {**variant.metrics, "compression_s": seconds}}
        (scratch / "variant.json").write_text(json.dumps(doc, indent=1, default=float))
    progress(f"{recipe.name}/{variant_name}: compressed in {seconds:.1f}s")
    return _load_variant(entry), False


def _rel(path: Optional[Path], root: Path) -> Optional[str]:
    if path is None:
        return None
    return str(Path(path).resolve().relative_to(root.resolve()))


def _load_variant(entry: Path) -> VariantModel:
    doc = json.loads((entry / "variant.json").read_text())
    return VariantModel(model_path=entry / doc["model_path"] if doc["model_path"] else None,
                        framework=doc["framework"], artifacts={f: entry / p for f, p in doc["artifacts"].items()},
                        io_dtypes=tuple(doc["io_dtypes"]), metrics=doc["metrics"])


#: bump when what inspection reads from an artifact changes, so cached inspections are redone
INSPECTION_VERSION = "1"


def _gzip_size(paths) -> int:
    return sum(len(gzip.compress(Path(p).read_bytes(), compresslevel=6)) for p in paths)


def _read_artifact_facts(primary: Path, fmt: str, files) -> Dict[str, Any]:
    """What an artifact's content alone determines: interface, operators, gzip size (or why it won't load)."""
    from .formats.inspect import list_operators, read_interface

    facts: Dict[str, Any] = {"gzip_bytes": _gzip_size(files), "interface": {}, "operators": {}, "load_error": ""}
    try:
        facts["interface"] = read_interface(primary, fmt)
        facts["operators"] = list_operators(primary, fmt)
    except Exception as exc:  # a file the runtime rejects is an incompatibility of this cell
        facts["load_error"] = f"cannot load with the {fmt} runtime: {exc}"
    return facts


def inspect_files(recipe, variant: str, fmt: str, primary: Path, io_dtypes=(), metrics=None,
                  cached: bool = False, cache: Optional[ContentCache] = None) -> Artifact:
    """Hash, inspect and check an artifact against the recipe.

    With a cache, the content-determined facts (loading the model in its
    runtime, gzip of every file) are read once per content, not on every run.
    """
    from .formats.inspect import check_interface

    files = artifact_files(primary, fmt)
    hashes = tuple(file_sha256(p) for p in files)
    combined = hashlib.sha256("".join(hashes).encode()).hexdigest()
    key = content_key("inspection", combined, fmt, INSPECTION_VERSION)
    if cache is not None and cache.has("inspections", key):
        facts = json.loads((cache.entry("inspections", key) / "facts.json").read_text())
    else:
        facts = _read_artifact_facts(primary, fmt, files)
        if cache is not None:
            with cache.build("inspections", key) as scratch:
                (scratch / "facts.json").write_text(json.dumps(facts))
    if facts["load_error"]:
        problems: Tuple[str, ...] = (facts["load_error"],)
    else:
        problems = tuple(check_interface(recipe, facts["interface"], io_dtypes))
    return Artifact(recipe.name, variant, fmt, str(primary), tuple(str(p) for p in files), hashes, combined,
                    sum(Path(p).stat().st_size for p in files), facts["gzip_bytes"], facts["interface"],
                    facts["operators"], problems, dict(metrics or {}), cached)


def convert(recipe, variant: str, source: VariantModel, fmt: str, cache: ContentCache,
            progress: Progress = SILENT) -> Artifact:
    """The artifact for one (variant, format): ready-made by a compressor, or converted and cached."""
    metrics = dict(source.metrics)
    if fmt in source.artifacts:
        return inspect_files(recipe, variant, fmt, source.artifacts[fmt], source.io_dtypes, metrics, cached=True,
                             cache=cache)
    if source.model_path is None:
        return _failed_artifact(recipe, variant, fmt, metrics, "variant has no artifact in this format",
                                category="unsupported_format")
    try:
        converter = CONVERTERS.get((source.framework, fmt))
    except HarnessError as exc:
        return _failed_artifact(recipe, variant, fmt, metrics, str(exc), category="unsupported_format")
    key = content_key("artifact", file_sha256(source.model_path), source.framework, fmt, CONVERTER_VERSION,
                      _source_hash(converter, fmt), recipe.input, recipe.output)
    name = f"{recipe.name}-{variant}-{fmt}-{key}"
    cached = cache.has("artifacts", name)
    if not cached:
        progress(f"{recipe.name}/{variant}: converting to {fmt}")
        started = time.perf_counter()
        try:
            with cache.build("artifacts", name) as scratch:
                primary = converter(source.model_path, recipe, scratch)
                (scratch / "artifact.json").write_text(json.dumps({"primary": Path(primary).name,
                                                                   "convert_s": time.perf_counter() - started}))
        except ConversionError as exc:
            progress(f"{recipe.name}/{variant}: {fmt} conversion failed: {exc}")
            return _failed_artifact(recipe, variant, fmt, metrics, str(exc), category="conversion_failed")
    entry = cache.entry("artifacts", name)
    doc = json.loads((entry / "artifact.json").read_text())
    return inspect_files(recipe, variant, fmt, entry / doc["primary"], source.io_dtypes, metrics, cached, cache)


def _failed_artifact(recipe, variant, fmt, metrics, message, category) -> Artifact:
    return Artifact(recipe.name, variant, fmt, "", (), (), "", 0, 0, {}, {}, (), {**metrics,
                    "error_category": category}, False, message)


def build_model_artifacts(recipe, variants: List[str], cache: ContentCache,
                          progress: Progress = SILENT) -> Tuple[PreparedModel, List[Artifact]]:
    """Prepare the reference, make each requested variant, convert each to the recipe's formats."""
    prepared = prepare_model(recipe, cache, progress)
    reference = VariantModel(model_path=prepared.model_path, framework=recipe.framework,
                             metrics={"param_count": prepared.param_count, "macs": prepared.macs})
    sources: List[Tuple[str, VariantModel]] = [(REFERENCE, reference)]
    for name in variants:
        try:
            variant, _ = compress_variant(prepared, name, cache, progress)
        except HarnessError:
            raise
        except Exception as exc:  # a compressor that breaks fails its variant, not the run
            progress(f"{recipe.name}/{name}: compression failed: {exc}")
            sources.append((name, VariantModel(metrics={"error_category": "compression_failed",
                                                        "error_message": f"{type(exc).__name__}: {exc}"})))
            continue
        variant.metrics.setdefault("macs", prepared.macs)
        sources.append((name, variant))
    artifacts = []
    for name, source in sources:
        formats = list(recipe.formats)
        for fmt in formats:
            if "error_message" in source.metrics:
                artifacts.append(_failed_artifact(recipe, name, fmt, source.metrics, source.metrics["error_message"],
                                                  "compression_failed"))
                continue
            if source.model_path is None and fmt not in source.artifacts:
                continue  # a format-specific variant (e.g. ONNX int8) has no cell in the other formats
            artifacts.append(convert(recipe, name, source, fmt, cache, progress))
    return prepared, artifacts

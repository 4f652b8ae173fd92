"""Host-side build steps: source → reference → compress → convert → inspect.

A model enters as a file in any source format (the user's, read and never
written) or as what a zoo builder makes. Its interface is read from the file
and fixed; its evaluation data is checked against it; the source runs on the
host to give the reference outputs every cell is compared with, output by
output. Every step is cached by content (the model's bytes, the data's bytes,
the harness code and the converting libraries' versions): a second run with
nothing changed trains nothing and converts nothing, and says so; replacing a
file in place, or upgrading a converter, rebuilds.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from harness.agent import agent as device_agent
from harness.prepare.cache import ContentCache, content_key
from harness.prepare.inspection import HOST, Inspector, device_reader, pick_inspector, reference_on_device
from harness.prepare.versions import CONVERTING_LIBRARIES, library_versions  # noqa: F401 (re-exported)
from harness.prepare.compress import COMPRESSOR_VERSION, COMPRESSORS, CompressionContext, VariantModel
from harness.prepare.data import (
    SampleSet,
    call_loader,
    cast_notes,
    check_sample_memory,
    check_input_names,
    conform,
    fill_shapes_from_data,
    load_entry_point,
    random_samples,
    read_images,
    read_npz,
    split,
)
from harness.core.errors import ConfigError, ConversionError, HarnessError, LibraryMissing
from harness.core.optional import as_library_missing
from harness.judge.evaluate import ScoringSpec, score_outputs
from harness.prepare.converters import (
    CONVERTER_VERSION,
    CONVERTERS,
    NO_CONVERTER,
    ConversionContext,
    artifact_files,
    copy_as_artifact,
)
from harness.schema.interface import (
    Interface,
    TensorSpec,
    batch_defaults,
    check_interface,
    declared_vs_produced,
    fix_interface,
    normalize_name,
    produced_specs,
)
from harness.core.progress import SILENT, Progress
from harness.prepare.sources import SOURCES, content_sha256
from harness.core.files import atomic_write_bytes, file_sha256
from harness.zoo import BUILDERS, DATASETS

REFERENCE = "reference"



@dataclass(frozen=True)
class PreparedModel:
    """A reference model with its fixed interface, evaluation data and reference outputs on disk."""

    recipe: Any
    source_format: str
    model_path: Path
    model_sha256: str
    interface: Interface
    eval_inputs_path: Path            # the agent's feeds .npz
    labels_path: Optional[Path]       # .npy, or None without labels
    reference_outputs_path: Path      # the agent's outputs .npz: the source run on the host
    calibration_path: Optional[Path]  # feeds .npz of calibration samples, or None
    #: content hash of the calibration samples ('' without any): part of every variant's cache key
    calibration_sha256: str
    #: the reference's own figures: accuracy, top5_accuracy, metric_<name>, ...
    reference_figures: Dict[str, Any]
    param_count: Optional[int]
    macs: Optional[int]
    #: where the evaluation and calibration data came from, for the report
    data_notes: Tuple[str, ...]
    cached: bool
    #: a zoo data set's training split (in-process only: compressors that train use it)
    train_data: Any = field(default=None, compare=False, repr=False)
    #: the outputs the source produced on the host at the fixed input shapes: the truth its artifacts are
    #: checked against, where the file's declared output shapes may be wrong or dynamic
    produced_outputs: Tuple[TensorSpec, ...] = ()
    #: where files are read when this host lacks their runtime (a device of the run), or None: the host only
    inspector: Optional[Inspector] = field(default=None, compare=False, repr=False)

    @property
    def reference_accuracy(self) -> Optional[float]:
        return self.reference_figures.get("accuracy")

    def labels(self) -> Optional[np.ndarray]:
        return None if self.labels_path is None else np.load(self.labels_path)

    def calibration(self) -> Optional[SampleSet]:
        return None if self.calibration_path is None else load_feeds(self.calibration_path)


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
    #: the converter's whole diagnostic where `error` is its most specific line
    diagnostic: str = ""
    #: where the artifact was inspected: "host", or "<target> (<runtime> <version>)"
    inspected_on: str = ""

    @property
    def compatible(self) -> bool:
        return not self.problems and not self.error


def load_feeds(path: Path) -> SampleSet:
    feeds = device_agent.Feeds.load(str(path))
    return SampleSet({f["name"]: feeds.arrays[f["key"]] for f in feeds.spec},
                     {f["name"]: f["mode"] for f in feeds.spec}, None, str(path))


def load_dataset(recipe, cache: Optional[ContentCache] = None):
    """The recipe's zoo data set, split. With a cache, the splits are kept as one .npz per (data set, split,
    loader code): a warm run reads arrays instead of importing scikit-learn and preprocessing again.

    Kept beside the cache's entries, not as one of them: a data set is an input of steps, never shipped to
    workers or devices."""
    from harness.zoo.datasets import Dataset

    loader = DATASETS.get(recipe.data.dataset)
    if cache is None:
        return loader(eval_fraction=recipe.data.eval_fraction, seed=recipe.data.seed)
    key = content_key("dataset", recipe.data.dataset, recipe.data.eval_fraction, recipe.data.seed,
                      _source_hash(loader, recipe.data.dataset))
    path = cache.root / "datasets" / f"{recipe.data.dataset}-{key}.npz"
    fields = ("x_train", "y_train", "x_eval", "y_eval")
    if path.exists():
        with np.load(path, allow_pickle=False) as arrays:  # a split without labels has no array
            return Dataset(recipe.data.dataset, *(arrays[f] if f in arrays.files else None for f in fields))
    data = loader(eval_fraction=recipe.data.eval_fraction, seed=recipe.data.seed)
    buffer = io.BytesIO()
    np.savez(buffer, **{f: getattr(data, f) for f in fields if getattr(data, f) is not None})
    atomic_write_bytes(path, buffer.getvalue())
    return data


def _module_source(module) -> str:
    import inspect
    try:
        return inspect.getsource(module)
    except (OSError, TypeError):
        return ""


def _harness_modules_imported_by(module, source: str) -> List[str]:
    """Names of the harness modules that `module` imports, lazy ones included.

    `from harness.x import name` also yields `harness.x.name`, which counts only if it is a module itself."""
    import ast
    from importlib.util import resolve_name

    package = module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module or ""
            if base.split(".")[0] != "harness":
                continue
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from harness.zoo import keras_util`
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.split(".")[0] == "harness")
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
    return _source_hash(BUILDERS.get(recipe.source.builder), recipe.source.builder)


# ---------------------------------------------------------------- step 1: the source model
def build_zoo_model(recipe, cache: ContentCache, progress: Progress = SILENT) -> Tuple[Path, Optional[int], bool]:
    """(model file, MACs, cached) of a zoo recipe: its builder trains or loads the model, once per content."""
    key = content_key("model", recipe.training_key(), _builder_source_hash(recipe), library_versions())

    def train(scratch: Path) -> None:
        progress(f"{recipe.name}: building reference model ({recipe.source.builder}, seed {recipe.seed})")
        started = time.perf_counter()
        model_file = Path(BUILDERS.get(recipe.source.builder)(recipe, load_dataset(recipe, cache), scratch))
        meta = {"model_file": model_file.name, "macs": _zoo_macs(recipe, model_file),
                "build_s": time.perf_counter() - started}
        (scratch / "meta.json").write_text(json.dumps(meta, indent=1))

    entry = cache.get_or_build("models", f"{recipe.name}-{key}", train)
    meta = entry.read_json("meta.json")
    if not entry.cached:
        progress(f"{recipe.name}: reference model built ({meta['build_s']:.1f}s)")
    return entry.path / meta["model_file"], meta.get("macs"), entry.cached


def _zoo_macs(recipe, model_file: Path) -> Optional[int]:
    if recipe.source.format == "keras":
        from harness.prepare.sources.tensorflow import load_keras_model
        from harness.zoo.keras_util import keras_macs
        return keras_macs(load_keras_model(model_file))
    return getattr(SOURCES.get("torch_module")().load(model_file), "macs", None)


def describe_source(path: Path, fmt: str, sha: str, cache: ContentCache,
                    inspector: Optional[Inspector] = None) -> Interface:
    """The interface the file records, read once per content: by its source on the host, or, for a file a
    runtime reads (onnx, tflite, openvino) that this host lacks, by the agent where `inspector` has it."""
    device = device_reader(fmt, inspector, f"reading {Path(path).name}")
    identity = library_versions() if device is None else device.cache_identity(fmt)
    key = content_key("interface", sha, fmt, _source_hash(SOURCES.get(fmt), fmt), identity)

    def describe(scratch: Path) -> None:
        if device is None:
            doc = SOURCES.get(fmt)().describe(path).to_doc()
        else:
            facts = device.inspect(path, fmt, None)
            if facts["load_error"]:
                raise ConfigError(path, f"cannot be read as a {fmt} model on {device.where(fmt)} "
                                  f"({facts['load_error']}); check that the file is a {fmt} model, or name its "
                                  "format with --source-format")
            doc = Interface.from_doc(facts["interface"]).to_doc()
        (scratch / "interface.json").write_text(json.dumps(doc))

    return Interface.from_doc(cache.get_or_build("interfaces", key, describe).read_json("interface.json"))


# ---------------------------------------------------------------- step 2: the data
@dataclass(frozen=True)
class RawData:
    arrays: Dict[str, np.ndarray]
    labels: Optional[np.ndarray]
    origin: str
    #: calibration arrays that come with the data (a zoo training split), if any
    calibration: Optional[Dict[str, np.ndarray]] = None


def read_data(recipe, interface: Interface, train_data: Any) -> Optional[RawData]:
    """The evaluation data the recipe names, as arrays by input name (None: no data, random inputs)."""
    d, where = recipe.data, recipe.source_path or "--data"
    if d.dataset:
        name = recipe.input.name
        x_eval, y_eval = train_data.x_eval, train_data.y_eval
        if d.eval_samples:
            x_eval = x_eval[:d.eval_samples]
            y_eval = None if y_eval is None else y_eval[:d.eval_samples]
        # Each zoo sample is the model's whole input: the batch axis of 1 goes in front of it.
        calib = {name: train_data.calibration(d.calibration_samples)[:, None]}
        return RawData({name: x_eval[:, None]}, y_eval, f"data set {d.dataset} (evaluation split)", calib)
    if d.npz:
        arrays, labels = read_npz(recipe.resolve(d.npz))
        return RawData(arrays, labels, Path(d.npz).name)
    if d.images:
        if len(interface.inputs) != 1:
            raise ConfigError(where, f"image data feeds one image input; the model has {interface.input_names}",
                              "data.images")
        from harness.schema.recipes import ImagePreprocessing
        spec = interface.inputs[0]
        arrays, labels = read_images(recipe.resolve(d.images), recipe.resolve(d.labels) if d.labels else None,
                                     d.preprocessing or ImagePreprocessing(), spec, where)
        return RawData(arrays, labels, f"images in {d.images}")
    if d.loader:
        arrays, labels = call_loader(d.loader, where, recipe.base_dir)
        return RawData(arrays, labels, f"loader {d.loader}")
    return None


def data_digest(data: Optional[SampleSet]) -> str:
    if data is None:
        return ""
    digest = hashlib.sha256()
    for name, array in data.arrays.items():
        digest.update(f"{name}|{data.modes[name]}|{array.dtype}|{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    if data.labels is not None:
        digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()


#: sources whose inputs are positional arguments: their names are the forward() parameters', not tensors'
POSITIONAL_SOURCES = ("torch_module", "torchscript")


class DataPlan(NamedTuple):
    """The fixed interface and the samples the reference runs on, from the recipe and the file."""

    interface: Interface
    evaluation: SampleSet
    calibration: Optional[SampleSet]
    #: where the evaluation and calibration data came from, for the report
    notes: List[str]
    #: inputs whose dynamic batch axis was fixed at 1 because nothing else fixed it
    batch_defaulted: Dict[str, Tuple[int, ...]] = {}


def plan_data(recipe, described: Interface, train_data: Any, with_calibration: bool) -> DataPlan:
    """The fixed interface, evaluation samples, calibration samples and notes from the recipe and the file."""
    where = recipe.source_path or f"--model-file {recipe.source.path}"
    declared_names = [s.name for s in recipe.inputs]
    if recipe.source.format in POSITIONAL_SOURCES and len(declared_names) == len(described.inputs) and \
            not set(declared_names) & set(described.input_names):
        # A module's forward(self, inputs) names a parameter; the recipe's declared inputs name the tensors.
        described = Interface(tuple(TensorSpec(n, s.shape, s.dtype) for n, s in zip(declared_names, described.inputs)),
                              described.outputs)
    declared = {s.name: tuple(s.shape) for s in recipe.inputs if s.shape}
    raw = read_data(recipe, described, train_data)
    if raw is not None and described.inputs:
        check_input_names(described, raw.arrays, where)
    # A file that records no dtypes (TorchScript) takes the data's; the recipe's declared dtypes win.
    dtypes = {s.name: np.asarray(raw.arrays[k]).dtype.name for k in (raw.arrays if raw else {})
              for s in described.inputs if not s.dtype and normalize_name(s.name) == normalize_name(k)}
    dtypes.update({s.name: "float32" for s in described.inputs if not s.dtype and s.name not in dtypes})
    dtypes.update({s.name: s.dtype for s in recipe.inputs if s.dtype})
    shapes = {**(fill_shapes_from_data(described, raw.arrays) if raw else {}), **declared}
    # A declared input the file does not record (TorchScript) is still an input the recipe names.
    if not described.inputs and recipe.inputs:
        described = Interface(tuple(TensorSpec(s.name, None) for s in recipe.inputs), described.outputs)
    batch = batch_defaults(described, shapes)
    interface = fix_interface(described, {**batch, **shapes}, where, dtypes)
    notes: List[str] = [batch_note(batch)] if batch else []
    d = recipe.data
    if raw is None:
        check_sample_memory(interface, d.random_samples + (min(d.calibration_samples, 64) if with_calibration else 0),
                            where)
        evaluation = random_samples(interface, d.random_samples, d.seed)
        notes.append(f"evaluation: {evaluation.origin}: no data given, so accuracy is empty and parity holds")
    else:
        evaluation = conform(interface, raw.arrays, raw.labels, where, raw.origin)
        notes += cast_notes(interface, raw.arrays)
    calibration: Optional[SampleSet] = None
    if d.calibration:
        arrays, _ = read_npz(recipe.resolve(d.calibration))
        calibration = conform(interface, arrays, None, recipe.resolve(d.calibration).name,
                              Path(d.calibration).name)
    elif raw is not None and raw.calibration is not None:
        calibration = conform(interface, raw.calibration, None, where, f"data set {d.dataset} (training split)")
    elif with_calibration and raw is None:
        calibration = random_samples(interface, min(d.calibration_samples, 64), d.seed + 1)
    elif with_calibration:
        if evaluation.n_samples < 2:
            raise ConfigError(where, f"int8 variants need calibration samples and the data has "
                              f"{evaluation.n_samples}; give --calibration calib.npz")
        n_calib = min(d.calibration_samples, evaluation.n_samples // 2)
        calibration, evaluation = split(evaluation, n_calib, d.seed)
    if calibration is not None:
        notes.append(f"calibration: {calibration.origin}" + (" (disjoint from evaluation)" if "split" in
                                                              calibration.origin else ""))
    if raw is not None:
        notes.insert(0, f"evaluation: {evaluation.n_samples} samples from {evaluation.origin}")
    return DataPlan(interface, evaluation, calibration, notes, batch)


def batch_note(batch: Dict[str, Tuple[int, ...]]) -> str:
    """What the run did with dynamic batch axes nobody fixed, and how to profile another batch."""
    flags = " ".join(f"--input-shape {name}=N" + "".join(f"x{d}" for d in shape[1:]) for name, shape in batch.items())
    return (f"batch: {', '.join(batch)} {'has a' if len(batch) == 1 else 'have'} dynamic batch axis, run at batch 1 "
            f"as benchmark_model and onnxruntime_perf_test do ({flags} profiles batch N)")


# ---------------------------------------------------------------- step 3: the reference on the host
def run_on_host(path: Path, fmt: str, interface: Interface, data: SampleSet) -> Tuple[List[Tuple[str, Any]], Interface]:
    """The source's outputs on every sample, run on the host with its own framework or runtime; and the
    interface with outputs filled in where the file records none (TorchScript)."""
    model = SOURCES.get(fmt)().open(path, interface)
    feeds = data.feeds()
    try:
        outputs = device_agent.collect_outputs(model, feeds, device_agent.feed_order(model, feeds), feeds.n_samples)
    except device_agent.AgentFailure as exc:
        raise ConfigError(path, str(exc)) from None
    except Exception as exc:
        raise ConfigError(path, f"the model fails on the evaluation data on this host ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); check the data's "
                          "shapes and dtypes against the model") from None
    if not interface.outputs:
        first = lambda v: v[0] if isinstance(v, list) else v[0]
        interface = Interface(interface.inputs, tuple(
            TensorSpec(name, tuple(np.shape(first(v))), np.asarray(first(v)).dtype.name) for name, v in outputs))
    if keeps_state(model, feeds, outputs):
        interface = replace(interface, stateful=True)
    return outputs, interface


def keeps_state(model: Any, feeds: Any, outputs: List[Tuple[str, Any]]) -> bool:
    """Whether a model keeps state between inferences: what its runtime says (TFLite resource variables,
    OpenVINO's ReadValue/Assign), or the first sample, run again after all of them, giving other outputs."""
    if getattr(model, "holds_state", False):
        return True
    if not outputs or not feeds.n_samples:
        return False
    model.infer(model.prepare(feeds.sample(0, device_agent.feed_order(model, feeds))))
    again = model.fetch()
    return any(not np.array_equal(np.asarray(values[0]), np.asarray(y), equal_nan=True)
               for (_, values), y in zip(outputs, again))


@dataclass(frozen=True)
class SourceModel:
    """The model file the reference runs: the user's, or what a zoo builder made."""

    path: Path
    format: str
    #: what the zoo builder counted (None for a user's file)
    macs: Optional[int]
    #: False when this call had to build it (a zoo model)
    cached: bool


def resolve_source(recipe, cache: ContentCache, progress: Progress = SILENT) -> SourceModel:
    """The recipe's model file and source format: a zoo builder's (built once per content) or the user's own."""
    if recipe.source.builder:
        model_path, macs, cached = build_zoo_model(recipe, cache, progress)
        return SourceModel(model_path, recipe.source.format, macs, cached)
    from harness.prepare.sources import detect_format
    model_path = recipe.resolve(recipe.source.path)
    fmt = recipe.source.format or detect_format(model_path)
    if fmt not in SOURCES:
        raise ConfigError(recipe.source_path or "--source-format", f"unknown source format {fmt!r}; known: "
                          f"{', '.join(SOURCES.names())}", "source.format")
    return SourceModel(model_path, fmt, None, True)


def load_metric(recipe) -> Optional[Callable]:
    """The recipe's own metric function (`metric: "package.module:function"`), or None."""
    if not recipe.metric:
        return None
    return load_entry_point(recipe.metric, recipe.source_path or "--metric", "metric", recipe.base_dir)


@dataclass(frozen=True)
class ReferenceRun:
    """The reference's cache entry, read back: the source's outputs on the evaluation samples and its figures."""

    #: holds eval_inputs.npz, reference_outputs.npz, and labels.npy and calibration.npz where there are any
    entry: Path
    #: the planned interface, with outputs filled in where the file records none (TorchScript)
    interface: Interface
    figures: Dict[str, Any]
    notes: Tuple[str, ...]
    param_count: Optional[int]
    calibration_sha256: str
    cached: bool
    #: the outputs the source produced on the host at the fixed input shapes (what artifacts are checked against)
    produced_outputs: Tuple[TensorSpec, ...] = ()


def run_reference(recipe, source: SourceModel, source_sha256: str, plan: DataPlan, metric: Optional[Callable],
                  cache: ContentCache, progress: Progress = SILENT, inspector: Optional[Inspector] = None
                  ) -> ReferenceRun:
    """Run the source over the evaluation samples and score it against itself, once per content: on the host, or
    where `inspector` has the runtime of a runtime-format source this host lacks."""
    fmt, evaluation, calibration = source.format, plan.evaluation, plan.calibration
    calibration_sha = data_digest(calibration)
    device = device_reader(fmt, inspector, f"the reference outputs of {Path(source.path).name}")
    key = content_key("reference", source_sha256, fmt, plan.interface.to_doc(), data_digest(evaluation),
                      calibration_sha, recipe.metric, recipe.primary_metric, recipe.task, recipe.output,
                      _source_hash(run_on_host, "reference"), _source_hash(SOURCES.get(fmt), fmt), library_versions(),
                      *(() if device is None else ("device", device.cache_identity(fmt))))

    def run(scratch: Path) -> None:
        started = time.perf_counter()
        evaluation.write_feeds(scratch / "eval_inputs.npz")
        where_notes: List[str] = []
        if device is None:
            progress(f"{recipe.name}: running the {fmt} source on {evaluation.n_samples} samples for the reference")
            outputs, interface = run_on_host(source.path, fmt, plan.interface, evaluation)
            device_agent.save_outputs(str(scratch / "reference_outputs.npz"), outputs)
        else:
            progress(f"{recipe.name}: running the {fmt} source on {evaluation.n_samples} samples for the reference "
                     f"on {device.where(fmt)} (this host has no {fmt} runtime)")
            outputs, interface, note = reference_on_device(device, source.path, fmt, plan.interface,
                                                     scratch / "eval_inputs.npz", scratch / "reference_outputs.npz")
            where_notes.append(note)
        if evaluation.labels is not None:
            np.save(scratch / "labels.npy", evaluation.labels)
        if calibration is not None:
            calibration.write_feeds(scratch / "calibration.npz")
        reference = dict(outputs)
        figures = score_outputs(reference, reference, evaluation.labels, ScoringSpec.from_recipe(recipe), metric)[0]
        produced = produced_specs(outputs)
        notes = plan.notes + where_notes + declared_vs_produced(interface.outputs, produced)
        if interface.stateful:
            notes.append("stateful: the model keeps state between inferences; its evaluation outputs run from its "
                         "initial state on every device, as the reference does, and its timed figures are per "
                         "step of a stream")
        meta = {"interface": interface.to_doc(), "figures": figures, "notes": notes,
                "produced_outputs": [s.to_doc() for s in produced],
                "param_count": _param_count(source.path, fmt), "seconds": time.perf_counter() - started}
        (scratch / "meta.json").write_text(json.dumps(meta, indent=1, default=float))

    entry = cache.get_or_build("references", f"{recipe.name}-{key}", run)
    meta = entry.read_json("meta.json")
    return ReferenceRun(entry.path, Interface.from_doc(meta["interface"]), meta["figures"], tuple(meta["notes"]),
                        meta.get("param_count"), calibration_sha, entry.cached,
                        tuple(TensorSpec.from_doc(d) for d in meta.get("produced_outputs", [])))


def reference_summary(recipe, figures: Dict[str, Any], interface: Interface) -> str:
    """The reference's headline figures for the progress line, and which output the classes come from."""
    summary = ", ".join(f"{k} {v:.4f}" for k, v in figures.items() if isinstance(v, float) and k in
                        ("accuracy", "top5_accuracy") or k.startswith("metric_") and not k.endswith("_retention"))
    if "accuracy" in figures or "top1_agreement" in figures:
        class_output = recipe.output.name or interface.output_names[0]
        chosen = "" if recipe.output.name or len(interface.outputs) == 1 \
            else " (the first; --class-output or output.name picks another)"
        summary += ("; " if summary else "") + f"classes from output {class_output!r}" + chosen
    return summary


def prepare_model(recipe, cache: ContentCache, progress: Progress = SILENT,
                  with_calibration: bool = False, inspector: Optional[Inspector] = None) -> PreparedModel:
    """The reference: the source model (built for zoo recipes), its fixed interface, data and outputs.

    `inspector` reads files whose runtime this host lacks (a device of the run, harness.run.device_inspection):
    the source's interface and reference outputs, and every artifact's inspection."""
    source = resolve_source(recipe, cache, progress)
    train_data = load_dataset(recipe, cache) if recipe.data.dataset else None
    sha = content_sha256(source.path, source.format)
    plan = plan_data(recipe, describe_source(source.path, source.format, sha, cache, inspector), train_data,
                     with_calibration)
    if plan.batch_defaulted:
        progress(f"{recipe.name}: {batch_note(plan.batch_defaulted)}")
    reference = run_reference(recipe, source, sha, plan, load_metric(recipe), cache, progress, inspector)
    if reference.figures.get("evaluation_error"):
        progress(f"{recipe.name}: on the reference, {reference.figures['evaluation_error']}: the primary figure "
                 "of its cells is unavailable")
    summary = reference_summary(recipe, reference.figures, reference.interface)
    cached = reference.cached and source.cached
    progress(f"{recipe.name}: reference {'cached' if cached else 'ready'} "
             f"({source.format}, {plan.evaluation.n_samples} samples{', ' + summary if summary else ''})")
    entry = reference.entry

    def optional(name: str) -> Optional[Path]:  # labels and calibration samples are there only if the data has them
        return entry / name if (entry / name).exists() else None

    return PreparedModel(recipe, source.format, Path(source.path), sha, reference.interface,
                         entry / "eval_inputs.npz", optional("labels.npy"), entry / "reference_outputs.npz",
                         optional("calibration.npz"), reference.calibration_sha256, reference.figures,
                         reference.param_count, source.macs, reference.notes, cached, train_data,
                         reference.produced_outputs, inspector)


def _param_count(path: Path, fmt: str) -> Optional[int]:
    try:
        return SOURCES.get(fmt)().param_count(path)
    except Exception:  # a count is a nicety: a source that cannot count leaves it empty
        return None


# ---------------------------------------------------------------- step 4: variants
def compress_variant(prepared: PreparedModel, variant_name: str, cache: ContentCache,
                     progress: Progress = SILENT) -> Tuple[VariantModel, bool]:
    """Make one compressed variant (cached by content). Returns it and whether it was cached."""
    recipe = prepared.recipe
    spec = recipe.variant(variant_name)
    compressor = COMPRESSORS.get(spec.compressor)
    key = content_key("variant", prepared.model_sha256, spec.compressor, spec.params, COMPRESSOR_VERSION,
                      _source_hash(compressor, spec.compressor), prepared.calibration_sha256,
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
    variant = _load_variant(entry.path)
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


# ---------------------------------------------------------------- step 5: convert and inspect
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
        # on the host when it has the runtime, else on the first device of the run that has it
        inspector = pick_inspector(fmt, getattr(prepared, "inspector", None), f"inspecting the {fmt} artifact")
        # The runtime that reads the file decides what is read: its version is part of the key.
        key = content_key("inspection", combined, fmt, shapes, INSPECTION_VERSION, inspector.cache_identity(fmt))

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
        return inspect_files(prepared, variant, fmt, source.artifacts[fmt], source.io_dtypes, metrics, cached=True,
                             cache=cache)
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
                      _source_hash(converter, fmt) if converter else "copy", library_versions())
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


def build_model_artifacts(recipe, variants: List[str], cache: ContentCache, progress: Progress = SILENT,
                          inspector: Optional[Inspector] = None) -> Tuple[PreparedModel, List[Artifact]]:
    """Prepare the reference, make each requested variant, convert each to the recipe's formats; `inspector`
    reads what this host has no runtime for (see prepare_model)."""
    prepared = prepare_model(recipe, cache, progress, with_calibration=bool(variants), inspector=inspector)
    sources: List[Tuple[str, VariantModel]] = [(REFERENCE, reference_source(prepared))]
    for name in variants:
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
    return prepared, artifacts

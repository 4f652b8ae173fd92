"""Prepare steps 1-3: the source model (a recipe's zoo model or the user's file), its data, and its reference
outputs computed where the source's runtime is (this host, or a device of the run).
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from harness.agent import agent as device_agent
from harness.prepare.cache import ContentCache, content_key
from harness.prepare.inspection import Inspector, device_reader, reference_on_device
from harness.prepare.versions import library_versions
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
    samples_on_leading_axis,
    split,
)
from harness.core.errors import ConfigError
from harness.judge.evaluate import ScoringSpec, score_outputs
from harness.schema.interface import (Interface, TensorSpec, batch_defaults, declared_vs_produced, fix_interface, normalize_name, produced_specs)
from harness.core.progress import SILENT, Progress
from harness.prepare.sources import SOURCES, content_sha256
from harness.core.files import atomic_write_bytes
from harness.zoo import BUILDERS, DATASETS
from harness.prepare.artifact import PreparedModel
from harness.prepare.code_keys import builder_source_hash, source_hash


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
                      source_hash(loader, recipe.data.dataset))
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

def build_zoo_model(recipe, cache: ContentCache, progress: Progress = SILENT) -> Tuple[Path, Optional[int], bool]:
    """(model file, MACs, cached) of a zoo recipe: its builder trains or loads the model, once per content."""
    key = content_key("model", recipe.training_key(), builder_source_hash(recipe), library_versions())

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
    key = content_key("interface", sha, fmt, source_hash(SOURCES.get(fmt), fmt), identity)

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
    #: what the run did to the data that the progress line says too (samples on the leading axis, float data
    #: quantized for an integer input, evaluation samples moved to calibration)
    said: Tuple[str, ...] = ()

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
    said: List[str] = []  # what the progress line says about the data, besides the notes
    if raw is not None:
        arrays, said = samples_on_leading_axis(described, raw.arrays, raw.labels, declared)
        raw = replace(raw, arrays=arrays)
    leading = bool(said)
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
    notes: List[str] = ([batch_note(batch)] if batch else []) + said
    notes += [f"output {o.name}: {o.dtype} codes for reals (scale {o.quantization[0]:.6g}, zero point "
              f"{o.quantization[1]}); parity compares every cell on the dequantized values (a converted file's "
              "integer outputs are dequantized with this scale and zero point)"
              for o in described.outputs if o.quantization is not None]
    d = recipe.data
    if raw is None:
        check_sample_memory(interface, d.random_samples + (min(d.calibration_samples, 64) if with_calibration else 0),
                            where)
        evaluation = random_samples(interface, d.random_samples, d.seed)
        notes.append(f"evaluation: {evaluation.origin}: no data given, so accuracy is empty and parity holds")
    else:
        evaluation = conform(interface, raw.arrays, raw.labels, where, raw.origin)
        quantized = cast_notes(interface, raw.arrays)
        notes += quantized
        said += [n for n in quantized if "quantized" in n]
    calibration: Optional[SampleSet] = None
    if d.calibration:
        arrays, _ = read_npz(recipe.resolve(d.calibration))
        if leading:  # the same convention as the evaluation data: the samples on the leading axis
            arrays = samples_on_leading_axis(described, arrays, None, declared, force=True)[0]
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
        n_all = evaluation.n_samples
        calibration, evaluation = split(evaluation, n_calib, d.seed)
        moved = (f"{CALIBRATION_SPLIT} {n_calib} of the {n_all} samples of {raw.origin} were moved to calibration "
                 f"for the int8 variants (seeded, disjoint from evaluation), so the reference and every cell are "
                 f"scored on the other {evaluation.n_samples}; pass --calibration FILE (or data.calibration in a "
                 f"recipe) to keep all {n_all} for evaluation")
        said.append(moved)
        notes.append(moved)
    if calibration is not None and not (said and said[-1].startswith(CALIBRATION_SPLIT)):
        notes.append(f"calibration: {calibration.origin}")
    if raw is not None:
        notes.insert(0, f"evaluation: {evaluation.n_samples} samples from {evaluation.origin}")
    return DataPlan(interface, evaluation, calibration, notes, batch, tuple(said))

#: how the note on evaluation samples moved to calibration begins (the summary repeats it)
CALIBRATION_SPLIT = "calibration split:"

def batch_note(batch: Dict[str, Tuple[int, ...]]) -> str:
    """What the run did with dynamic batch axes nobody fixed, and how to profile another batch."""
    flags = " ".join(f"--input-shape {name}=N" + "".join(f"x{d}" for d in shape[1:]) for name, shape in batch.items())
    return (f"batch: {', '.join(batch)} {'has a' if len(batch) == 1 else 'have'} dynamic batch axis, run at batch 1 "
            f"as benchmark_model and onnxruntime_perf_test do ({flags} profiles batch N)")

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
                      source_hash(run_on_host, "reference"), source_hash(SOURCES.get(fmt), fmt), library_versions(),
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
    for line in plan.said:
        progress(f"{recipe.name}: {line}")
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

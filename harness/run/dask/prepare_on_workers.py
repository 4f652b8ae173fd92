"""Preparing on dask workers: each build step (prepare a reference, compress a variant, convert and inspect one
format) is one task, run only where the host's cache lacks what the step makes; what it made comes back as bytes."""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from harness.core.errors import HarnessError
from harness.core.progress import SILENT, Progress
from harness.prepare.cache import ContentCache
from harness.run.dask.workers import (Bundle, Entry, EntryMissing, EventProgress, TrackingCache, BUILD_LOCK,
                                      pack_entries, unpack_entries, worker_cache, worker_name)

log = logging.getLogger("harness.run.dask")

@dataclass(frozen=True)
class BuildStep:
    """One build step of one model: 'prepare' (the reference), 'compress' (a variant), 'convert' (a format)."""

    kind: str
    recipe: Any
    with_calibration: bool
    variant: str = ""
    fmt: str = ""
    topic: str = ""
    #: compress: the compressor may convert the reference itself (else it comes back needs_reference)
    may_convert: bool = True
    #: reads files whose runtime the worker lacks (harness.run.device_inspection.DeviceInspector), or None
    inspector: Any = None

    def describe(self) -> str:
        name = self.recipe.name
        return {"prepare": f"{name}: reference", "compress": f"{name}/{self.variant}: compress",
                "convert": f"{name}/{self.variant}: {self.fmt}"}[self.kind]

@dataclass(frozen=True)
class StepResult:
    step: BuildStep
    #: the cache entries the step made or read on the worker, less those it was sent
    bundle: Bundle
    worker: str
    seconds: float
    #: the step failed: why (type and message)
    error: str = ""
    #: convert: an artifact that failed to convert (it has no cache entry)
    artifact: Any = None
    #: compress: the compressor starts from a conversion of the reference that is not made yet; the host sends
    #: the step again with the reference's conversions once they are in (each is converted once, not per variant)
    needs_reference: bool = False

class _HeldProgress:
    """Passes the first line on at once and holds the rest until flush()."""

    def __init__(self, progress: Callable[[str], None]):
        self.progress, self.held, self.first = progress, [], True

    def __call__(self, line: str) -> None:
        if self.first:
            self.first = False
            self.progress(line)
        else:
            self.held.append(line)

    def flush(self) -> None:
        for line in self.held:
            self.progress(line)
        self.held = []

def run_build_step(step: BuildStep, *seeds: Bundle) -> StepResult:
    """On a worker: one build step against the worker's own cache, seeded with the entries it depends on."""
    from harness.prepare.artifact import REFERENCE
    from harness.prepare.reference import prepare_model
    from harness.prepare.steps import compress_variant, convert, reference_source

    cache = worker_cache()
    seeded: Set[Entry] = set()
    for seed in seeds:
        seeded |= unpack_entries(cache, seed)
    progress = EventProgress(step.topic)
    error, failed, needs_reference = "", None, False
    with BUILD_LOCK:
        started = time.perf_counter()
        try:
            prepared = prepare_model(step.recipe, cache, progress if step.kind == "prepare" else SILENT,
                                     with_calibration=step.with_calibration, inspector=step.inspector)
            if step.kind == "compress":
                cache.read_only_kinds = set() if step.may_convert else {"artifacts"}
                # The first line ("compressing ...") goes out at once, the rest once the step is through, so an
                # attempt that stops at a missing conversion does not say it converted anything.
                held = _HeldProgress(progress)
                compress_variant(prepared, step.variant, cache, held)
                held.flush()
            elif step.kind == "convert":
                source = reference_source(prepared) if step.variant == REFERENCE else \
                    compress_variant(prepared, step.variant, cache, SILENT)[0]
                artifact = convert(prepared, step.variant, source, step.fmt, cache, progress)
                if artifact.error:
                    failed = artifact
        except EntryMissing:
            needs_reference = True
            progress(f"{step.recipe.name}/{step.variant}: starts from a conversion of the reference; waits for it")
        except Exception as exc:  # failures are data: the host turns them into failed variants and artifacts
            error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, HarnessError) else str(exc)
        seconds = time.perf_counter() - started
    return StepResult(step, pack_entries(cache, sorted(cache.touched - seeded)), worker_name(), seconds, error,
                      failed, needs_reference)

# ---------------------------------------------------------------- host side: builds
def distributable(recipe) -> bool:
    """A recipe whose model and data the workers can make themselves (a zoo builder over an installed data set).
    One that names files on this host (--model-file, npz, images, a loader or metric module) is built here."""
    d = recipe.data
    return bool(recipe.source.builder) and not (d.npz or d.images or d.loader or d.calibration or recipe.metric)

#: why the host may not find what a worker built: the cache keys hold the harness code and the libraries' versions
MISMATCH = (" this host can use (its cache keys differ: run the same harness checkout and the same library versions, "
            "pip install -e '.[all]' -c constraints.txt, on the workers as here)")

def _on_host(cache: ContentCache, call: Callable[[ContentCache, Progress], Any],
             progress: Progress) -> Tuple[bool, Any, Set[Entry]]:
    """(found, value, entries) of a step run against the host's cache without building anything; its progress
    lines are shown only when everything was there."""
    probe = TrackingCache(cache.root, read_only=True)
    lines: List[str] = []
    try:
        value = call(probe, lines.append)
    except EntryMissing:
        return False, None, set()
    for line in lines:
        progress(line)
    return True, value, probe.touched

def _trains(recipe, variant: str) -> bool:
    """A scheduling hint: a variant whose parameters name epochs trains, and is the longest kind of step."""
    return "epochs" in (recipe.variant(variant).params or {})

@dataclass
class _ModelPlan:
    recipe: Any
    variants: List[str]
    prepared: Any = None
    prepared_seed: Any = None          # future of the Bundle of the reference's entries
    reference_seed: Any = None         # future of the Bundle of the reference's converted artifacts
    reference_entries: Set[Entry] = field(default_factory=set)
    reference_pending: int = 0
    #: compress steps that wait for the reference's conversions: (index, name, done)
    waiting: List[Tuple[int, str, Any]] = field(default_factory=list)
    variant_seeds: Dict[str, Any] = field(default_factory=dict)
    sources: Dict[str, Any] = field(default_factory=dict)
    artifacts: Dict[Tuple[int, int], Any] = field(default_factory=dict)
    outstanding: int = 0

class _Builder:
    """The host's side of a distributed build: probe the cache, submit what is missing, store what comes back."""

    def __init__(self, client, cache: ContentCache, progress: Progress, inspector: Any = None):
        from distributed import as_completed

        self.client, self.cache, self.progress = client, cache, progress
        self.inspector = inspector
        self.topic = f"harness-build-{uuid.uuid4().hex[:10]}"
        self.pending = as_completed(loop=client.loop)  # the client need not be the default one
        self.handlers: Dict[str, Callable[[Any], None]] = {}
        self.submitted = 0
        #: each step that ran on a worker and came back: what, where, how long, how many bytes
        self.steps: List[Dict[str, Any]] = []

    def on_event(self, event) -> None:
        _, msg = event
        if isinstance(msg, dict) and msg.get("type") == "line":
            self.progress(f"{msg['line']} (worker {msg.get('name')})")

    def submit(self, step: BuildStep, seeds: Sequence[Any], done: Callable[[StepResult], None]) -> None:
        step = replace(step, topic=self.topic, inspector=self.inspector)
        # References first, then compressions (minutes, and what conversions wait for), then conversions.
        priority = {"prepare": 4, "compress": 2}.get(step.kind, 2 if step.variant == "reference" else 1)
        if step.kind == "compress" and _trains(step.recipe, step.variant):
            priority = 3  # a variant that trains is the longest step: it starts first, so it is not the tail
        future = self.client.submit(run_build_step, step, *[s for s in seeds if s is not None], pure=False,
                                    key=f"harness-build-{step.kind}-{uuid.uuid4().hex[:12]}", priority=priority)
        self.handlers[future.key] = done
        self.pending.add(future)
        self.submitted += 1

    def scatter(self, entries: Set[Entry]):
        bundle = pack_entries(self.cache, sorted(entries))
        return self.client.scatter(bundle, hash=False, broadcast=True) if bundle.files else None

    def store(self, result: StepResult) -> None:
        self.steps.append({"step": result.step.describe(), "worker": result.worker, "seconds": result.seconds,
                           "bytes_back": result.bundle.nbytes})
        unpack_entries(self.cache, result.bundle)
        mib = result.bundle.nbytes / 2**20
        log.info("%s: %.1fs on worker %s, %.1f MiB back", result.step.describe(), result.seconds, result.worker, mib)

    # -------------------------------------------------------- one model's steps
    def start(self, plan: _ModelPlan) -> None:
        from harness.prepare.reference import prepare_model
        recipe, with_cal = plan.recipe, bool(plan.variants)
        inspector = self.inspector
        call = lambda c, p: prepare_model(recipe, c, p, with_calibration=with_cal, inspector=inspector)  # noqa: E731
        found, prepared, entries = _on_host(self.cache, call, self.progress)
        if found:
            return self.prepared(plan, prepared, entries)

        def done(result: StepResult) -> None:
            if result.error:
                raise HarnessError(f"{recipe.name}: preparing the reference on worker {result.worker} failed: "
                                   f"{result.error}")
            self.store(result)
            ok, value, touched = _on_host(self.cache, call, SILENT)  # the worker said it
            if not ok:
                raise HarnessError(f"{recipe.name}: worker {result.worker} sent back no usable reference{MISMATCH}")
            self.prepared(plan, value, touched)

        self.submit(BuildStep("prepare", recipe, with_cal), (), done)

    def prepared(self, plan: _ModelPlan, prepared, entries: Set[Entry]) -> None:
        from harness.prepare.artifact import REFERENCE
        from harness.prepare.steps import reference_source
        plan.prepared = prepared
        plan.prepared_seed = self.scatter(entries)
        plan.sources[REFERENCE] = reference_source(prepared)
        formats = list(plan.recipe.formats)
        plan.reference_pending = len(formats)
        # Variants start at once, beside the reference's conversions, those that train first (the longest steps);
        # one whose compressor starts from such a conversion (int8 ONNX, int8 IR) comes back needs_reference and
        # goes again once they are in.
        for i, name in sorted(enumerate(plan.variants, start=1), key=lambda v: not _trains(plan.recipe, v[1])):
            self.compress(plan, i, name)
        for j, fmt in enumerate(formats):
            self.convert(plan, 0, REFERENCE, fmt, j)

    def reference_converted(self, plan: _ModelPlan, entries: Set[Entry]) -> None:
        plan.reference_entries |= entries
        plan.reference_pending -= 1
        if plan.reference_pending == 0:
            plan.reference_seed = self.scatter(plan.reference_entries)
            waiting, plan.waiting = plan.waiting, []
            for index, name, done in waiting:
                self.submit_compress(plan, index, name, done)

    def submit_compress(self, plan: _ModelPlan, index: int, name: str, done) -> None:
        # Once the reference's conversions are all in, a compressor may convert one the recipe does not list.
        step = BuildStep("compress", plan.recipe, True, variant=name, may_convert=plan.reference_pending == 0)
        self.submit(step, (plan.prepared_seed, plan.reference_seed), done)

    def compress(self, plan: _ModelPlan, index: int, name: str) -> None:
        from harness.prepare.steps import compress_variant
        prepared = plan.prepared
        call = lambda c, p: compress_variant(prepared, name, c, p)  # noqa: E731
        try:
            found, value, entries = _on_host(self.cache, call, self.progress)
        except Exception as exc:  # as build_model_artifacts: a compressor that breaks fails its variant only
            return self.variant_failed(plan, index, name, f"{type(exc).__name__}: {exc}")
        if found:
            return self.compressed(plan, index, name, value[0], entries)

        def done(result: StepResult) -> None:
            if result.needs_reference:
                if plan.reference_pending > 0:
                    return plan.waiting.append((index, name, done))
                return self.submit_compress(plan, index, name, done)  # now it may convert what it still lacks
            if result.error:
                return self.variant_failed(plan, index, name, result.error)
            self.store(result)
            ok, value, touched = _on_host(self.cache, call, SILENT)  # the worker said it
            if not ok:
                return self.variant_failed(plan, index, name, f"worker {result.worker} sent back no variant{MISMATCH}")
            self.compressed(plan, index, name, value[0], touched)

        self.submit_compress(plan, index, name, done)

    def variant_failed(self, plan: _ModelPlan, index: int, name: str, message: str) -> None:
        from harness.prepare.steps import failed_artifact
        self.progress(f"{plan.recipe.name}/{name}: compression failed: {message}")
        for j, fmt in enumerate(plan.recipe.formats):
            plan.artifacts[(index, j)] = failed_artifact(plan.recipe, name, fmt, {"error_category":
                                                         "compression_failed", "error_message": message},
                                                         message, "compression_failed")

    def compressed(self, plan: _ModelPlan, index: int, name: str, variant, entries: Set[Entry]) -> None:
        variant.metrics.setdefault("macs", plan.prepared.macs)
        plan.sources[name] = variant
        plan.variant_seeds[name] = self.scatter(entries)
        for j, fmt in enumerate(plan.recipe.formats):
            if variant.model_path is None and fmt not in variant.artifacts:
                continue  # a format-specific variant (e.g. ONNX int8) has no cell in the other formats
            self.convert(plan, index, name, fmt, j)

    def convert(self, plan: _ModelPlan, index: int, variant: str, fmt: str, j: int) -> None:
        from harness.prepare.artifact import REFERENCE
        from harness.prepare.steps import convert, failed_artifact
        recipe, prepared, source = plan.recipe, plan.prepared, plan.sources[variant]
        call = lambda c, p: convert(prepared, variant, source, fmt, c, p)  # noqa: E731
        found, artifact, entries = _on_host(self.cache, call, self.progress)

        def finish(artifact, touched: Set[Entry]) -> None:
            plan.artifacts[(index, j)] = artifact
            if variant == REFERENCE:
                self.reference_converted(plan, touched)

        if found:
            return finish(artifact, entries)

        def done(result: StepResult) -> None:
            if result.artifact is not None:  # it failed to convert: the worker's row says why
                return finish(result.artifact, set())
            if result.error:
                return finish(failed_artifact(recipe, variant, fmt, dict(source.metrics), result.error,
                                              "conversion_failed"), set())
            self.store(result)
            ok, value, touched = _on_host(self.cache, call, SILENT)  # the worker said it
            if not ok:
                return finish(failed_artifact(recipe, variant, fmt, dict(source.metrics), f"worker "
                                              f"{result.worker} sent back no artifact{MISMATCH}", "conversion_failed"),
                              set())
            finish(replace(value, cached=False), touched)

        seeds = (plan.prepared_seed,) if variant == REFERENCE else (plan.prepared_seed, plan.variant_seeds[variant])
        self.submit(BuildStep("convert", recipe, bool(plan.variants), variant=variant, fmt=fmt), seeds, done)

    def run(self, plans: Sequence[_ModelPlan]) -> None:
        self.client.subscribe_topic(self.topic, self.on_event)
        try:
            for plan in plans:
                self.start(plan)
            for future in self.pending:
                done = self.handlers.pop(future.key)
                try:
                    result = future.result()
                except Exception as exc:  # the task itself broke (e.g. its worker died too often): data, not a crash
                    step_error = f"{type(exc).__name__}: {exc}"
                    if str(future.key).startswith("harness-build-prepare-"):
                        raise HarnessError(f"preparing a reference on the workers failed: {step_error}") from None
                    result = StepResult(BuildStep("?", None, False), Bundle(), "?", 0.0, step_error)
                done(result)
        finally:
            self.client.unsubscribe_topic(self.topic)

def build_on_workers(recipes: Sequence[Any], variants: Dict[str, List[str]], cache: ContentCache, client,
                     progress: Progress = SILENT, steps: Optional[List[Dict[str, Any]]] = None,
                     inspector: Any = None) -> List[Tuple[Any, List[Any]]]:
    """(prepared, artifacts) per recipe, as harness.prepare.steps.build_model_artifacts gives, with every missing build
    step run as a task on the scheduler's workers and its cache entries brought back into `cache`."""
    from harness.prepare.steps import build_model_artifacts

    built: Dict[str, Tuple[Any, List[Any]]] = {}
    plans = []
    for recipe in recipes:
        if distributable(recipe):
            plans.append(_ModelPlan(recipe, list(variants.get(recipe.name, []))))
        else:
            progress(f"{recipe.name}: its model or data is a file on this host, so it is built here")
            built[recipe.name] = build_model_artifacts(recipe, variants.get(recipe.name, []), cache, progress,
                                                       inspector)
    if plans:
        builder = _Builder(client, cache, progress, inspector)
        try:
            builder.run(plans)
        finally:
            if steps is not None:
                steps.extend(builder.steps)
        if builder.submitted:
            progress(f"build: {builder.submitted} step(s) ran on the workers")
        for plan in plans:
            built[plan.recipe.name] = (plan.prepared, [plan.artifacts[k] for k in sorted(plan.artifacts)])
    return [built[r.name] for r in recipes]

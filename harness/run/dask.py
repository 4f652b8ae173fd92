"""A farm bigger than one host: build steps and device jobs on dask.distributed workers.

Only used when a scheduler is named (`--scheduler tcp://HOST:PORT`, DASK_SCHEDULER_ADDRESS, or a
DaskDispatcher(distributed.Client(...)) passed to run_profile as its dispatcher); otherwise nothing here runs
and dask is never imported. Nothing assumes a shared disk:

* **Builds.** Each build step (prepare a reference, compress a variant, convert and inspect one format) is one
  dask task. The host first runs the step against its own content cache in read-only mode
  (:class:`TrackingCache`): if every entry the step needs is there, nothing is submitted. Otherwise the step
  runs on a worker, in the worker's own cache (seeded with the entries it depends on, sent as bytes), and the
  cache entries it made come back as bytes into the host's cache; the host then runs the step again, which is
  now a pure cache hit and gives the same objects a host-only build would. An artifact already built is never
  rebuilt, on any worker, and each step runs once.
* **Device jobs.** A target's job runs on a worker (one with the resource `site-<site>` where the target says
  `site:`), with its artifacts and evaluation files sent as bytes. It writes into a scratch copy of the run on
  the worker; each record it writes (cell, its outputs and agent documents, device probe) is streamed to the
  host as a dask event, and the host writes the run directory the moment it arrives. The job's result carries
  every file again, so nothing streamed and lost in flight is missing at the end.
* **Faults.** A worker that dies mid-job leaves the job's unrecorded cells `lost` / `worker_lost` with the
  worker's address; a job is never run twice (a rerun that dask schedules after a worker died refuses, since
  cells it measured are already recorded), so `harness run --resume` finishes the rest on the remaining workers.

Everything submitted is module-level functions and plain frozen data.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from harness.prepare.cache import ContentCache
from harness.core.errors import HarnessError
from harness.core.progress import SILENT, Progress
from harness.core.files import atomic_write_bytes
from harness.run.pipeline import Dispatcher, TargetJob, failed_row, record_cell, run_target_job
from harness.schema.results import LOST, Category
from harness.schema.rundir import RunDir

log = logging.getLogger("harness.run.dask")

#: environment variable that names the scheduler when --scheduler is not given (dask's own name for it)
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
#: a worker's own content cache (default: <the worker's local directory>/harness-cache, which dies with it)
WORKER_CACHE_ENV = "HARNESS_WORKER_CACHE_DIR"
#: the share of a worker's `site-<site>` resource one device job takes: a worker started with `site-lab-a=1`
#: drives as many of its lab's devices at once as it has threads
SITE_SHARE = 0.001
CONNECT_TIMEOUT_S = 10.0

Entry = Tuple[str, str]  # (kind, key) of a ContentCache entry


# ---------------------------------------------------------------- connecting
def scheduler_address(flag: Optional[str] = None) -> str:
    """The scheduler named by --scheduler, else by DASK_SCHEDULER_ADDRESS; '' for an embedded run."""
    return (flag or os.environ.get(SCHEDULER_ENV, "")).strip()


def connect(address: str, timeout_s: float = CONNECT_TIMEOUT_S):
    """A distributed.Client for the scheduler at address, or one HarnessError that names the address."""
    try:
        from distributed import Client
    except ImportError:
        raise HarnessError(f"scheduler {address} given but dask.distributed is not installed: "
                           "pip install -e '.[distributed]' (or make venv EXTRAS=distributed)") from None
    def unreachable(why: str) -> HarnessError:
        return HarnessError(f"cannot reach the dask scheduler at {address} ({why}); start one with `dask scheduler` "
                            f"on that host, or check the address (--scheduler, {SCHEDULER_ENV})")

    # A plain TCP connect first: it fails at once and plainly, where a Client retries and leaves a half object.
    scheme = address.split("://", 1)[0] if "://" in address else "tcp"
    if scheme not in ("tcp", "tls", "ws", "wss", "ucx"):
        raise unreachable(f"unknown address scheme {scheme!r}: give tcp://HOST:PORT")
    match = re.match(r"^(?:tcp://)?\[?([^\]/]+?)\]?:(\d+)/?$", address)
    if address.startswith("tcp://") or match:
        if not match:
            raise unreachable("expected tcp://HOST:PORT")
        try:
            socket.create_connection((match.group(1), int(match.group(2))), timeout=timeout_s).close()
        except OSError as exc:
            raise unreachable(exc.strerror or type(exc).__name__) from None
    try:
        return Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise unreachable(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None


# ---------------------------------------------------------------- cache entries as bytes
class EntryMissing(Exception):
    """A read-only TrackingCache was asked to build an entry: the step must run on a worker."""

    def __init__(self, kind: str, key: str):
        super().__init__(f"{kind}/{key}")
        self.kind, self.key = kind, key


class TrackingCache(ContentCache):
    """A ContentCache that remembers every complete entry a step looked at or built (`touched`); read-only,
    a build raises EntryMissing instead, so the host learns whether a step is cached without running it."""

    def __init__(self, root: Path, read_only: bool = False):
        super().__init__(root)
        self.read_only = read_only
        #: kinds of entry this cache must not build even when it may build others
        self.read_only_kinds: Set[str] = set()
        self.touched: Set[Entry] = set()

    def has(self, kind: str, key: str) -> bool:
        found = super().has(kind, key)
        if found:
            self.touched.add((kind, key))
        return found

    @contextmanager
    def build(self, kind: str, key: str) -> Iterator[Path]:
        if self.read_only or kind in self.read_only_kinds:
            raise EntryMissing(kind, key)
        with super().build(kind, key) as scratch:
            yield scratch
        self.touched.add((kind, key))


@dataclass(frozen=True)
class Bundle:
    """Files by relative path, as bytes: cache entries or a cell's files on their way between machines."""

    files: Dict[str, bytes] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.files.values())


def pack_entries(cache: ContentCache, entries: Sequence[Entry]) -> Bundle:
    files: Dict[str, bytes] = {}
    for kind, key in sorted(set(entries)):
        root = cache.entry(kind, key)
        for path in sorted(root.rglob("*")):
            if path.is_file():
                files[f"{kind}/{key}/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    return Bundle(files)


def unpack_entries(cache: ContentCache, bundle: Bundle) -> Set[Entry]:
    """Write each entry of bundle into cache (complete entries already there are kept); returns the entries."""
    grouped: Dict[Entry, Dict[str, bytes]] = {}
    for rel, data in bundle.files.items():
        kind, key, inner = rel.split("/", 2)
        grouped.setdefault((kind, key), {})[inner] = data
    plain = ContentCache(cache.root)
    for (kind, key), files in grouped.items():
        if plain.has(kind, key):
            continue
        with plain.build(kind, key) as scratch:
            for inner, data in files.items():
                if inner == ".complete":
                    continue
                target = scratch / inner
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
    return set(grouped)


# ---------------------------------------------------------------- worker side
#: one build step at a time in a worker process: the frameworks' global state (Keras sessions, seeds) is not
#: safe across threads, and a worker given threads for its devices must not train two models at once
_BUILD_LOCK = threading.Lock()


def _this_worker():
    try:
        from distributed import get_worker
        return get_worker()
    except (ImportError, ValueError):
        return None


def worker_name() -> str:
    worker = _this_worker()
    return str(worker.name if worker is not None else "host")


def worker_scratch() -> Path:
    """The worker's own directory (its local_directory; the working directory outside a worker)."""
    worker = _this_worker()
    return Path(worker.local_directory if worker is not None else ".harness").resolve()


def worker_cache() -> TrackingCache:
    return TrackingCache(Path(os.environ.get(WORKER_CACHE_ENV) or worker_scratch() / "harness-cache"))


def _emit(topic: str, message: Dict[str, Any]) -> None:
    """An event to the host (the scheduler adds the worker's address as message['worker'])."""
    worker = _this_worker()
    if worker is not None and topic:
        worker.log_event(topic, message)


class EventProgress:
    """Progress lines of a worker's task, sent to the host as events on the run's topic (made on the worker)."""

    def __init__(self, topic: str, job: str = ""):
        self.topic, self.job = topic, job

    def __call__(self, message: str) -> None:
        _emit(self.topic, {"type": "line", "job": self.job, "name": worker_name(), "line": message})


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
    from harness.prepare.steps import REFERENCE, compress_variant, convert, prepare_model, reference_source

    cache = worker_cache()
    seeded: Set[Entry] = set()
    for seed in seeds:
        seeded |= unpack_entries(cache, seed)
    progress = EventProgress(step.topic)
    error, failed, needs_reference = "", None, False
    with _BUILD_LOCK:
        started = time.perf_counter()
        try:
            prepared = prepare_model(step.recipe, cache, progress if step.kind == "prepare" else SILENT,
                                     with_calibration=step.with_calibration)
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

    def __init__(self, client, cache: ContentCache, progress: Progress):
        from distributed import as_completed

        self.client, self.cache, self.progress = client, cache, progress
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
        step = replace(step, topic=self.topic)
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
        from harness.prepare.steps import prepare_model
        recipe, with_cal = plan.recipe, bool(plan.variants)
        call = lambda c, p: prepare_model(recipe, c, p, with_calibration=with_cal)  # noqa: E731
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
        from harness.prepare.steps import REFERENCE, reference_source
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
        from harness.prepare.steps import REFERENCE, convert, failed_artifact
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
                     progress: Progress = SILENT, steps: Optional[List[Dict[str, Any]]] = None
                     ) -> List[Tuple[Any, List[Any]]]:
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
            built[recipe.name] = build_model_artifacts(recipe, variants.get(recipe.name, []), cache, progress)
    if plans:
        builder = _Builder(client, cache, progress)
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


# ---------------------------------------------------------------- device jobs
@dataclass(frozen=True)
class RemoteJob:
    """A device job as it travels to a worker: the job (with the host's paths) and where to report."""

    job: TargetJob
    token: str
    topic: str


@dataclass(frozen=True)
class JobResult:
    token: str
    worker: str
    #: every file the job wrote into its copy of the run, by path relative to the run directory
    files: Dict[str, bytes]
    seq: int
    #: set when this attempt did not run: the job had started on a worker before (that worker died)
    refused: str = ""


def _materialize(base: Path, bundle: Bundle) -> Dict[str, str]:
    """Write a bundle's files under base (kept between jobs: content-named); {name: local path}."""
    paths = {}
    for name, data in bundle.files.items():
        path = base / name
        if not path.exists() or path.stat().st_size != len(data):
            atomic_write_bytes(path, data)
        paths[name] = str(path)
    return paths


def _localize(job, artifacts: Dict[str, Bundle], evals: Dict[str, Bundle], run_root: Path):
    """The job with its artifacts, evaluation files and run directory on this worker's disk."""
    files = worker_scratch() / "harness-device-files"
    cells = []
    for cell in job.cells:
        a = cell.artifact
        if a.sha256 in artifacts:
            local = _materialize(files / a.sha256, artifacts[a.sha256])
            a = replace(a, path=local[Path(a.path).name], files=tuple(local[Path(p).name] for p in a.files))
        cells.append(replace(cell, artifact=a))
    local_evals = {}
    for model, e in job.evals.items():
        if model not in evals:
            local_evals[model] = e
            continue
        local = _materialize(files / f"eval-{model}-{Path(e.eval_inputs_path).parent.name}", evals[model])
        local_evals[model] = replace(e, eval_inputs_path=local["eval_inputs"],
                                     labels_path=local.get("labels", ""),
                                     reference_outputs_path=local["reference_outputs"])
    return replace(job, cells=tuple(cells), evals=local_evals, run_root=str(run_root))


def _cell_files(root: Path, written: Path) -> Dict[str, bytes]:
    """The file just written and, for a cell, its outputs and the agent's documents."""
    rel = written.relative_to(root)
    files = {rel.as_posix(): written.read_bytes()}
    if rel.parts[0] == "cells":
        cell = written.stem
        extra = [root / "outputs" / f"{cell}.npz", root / "agent" / f"{cell}.json"]
        extra += sorted((root / "agent").glob(f"{cell}.repeat*.json"))
        for path in extra:
            if path.exists():
                files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def run_device_job(remote: RemoteJob, artifacts: Dict[str, Bundle], evals: Dict[str, Bundle]) -> JobResult:
    """On a worker: one target's job, as harness.run.pipeline.run_target_job runs it, streaming each record home."""
    import shutil

    from distributed import Event

    from harness.schema.rundir import watch_writes

    me = worker_name()
    # dask reschedules a task whose worker died; a device job must not run twice (its first cells are recorded)
    started = Event(f"harness-job-{remote.token}")
    if started.is_set():
        return JobResult(remote.token, me, {}, 0, refused="the job had started on a worker that died")
    started.set()
    worker = _this_worker()
    _emit(remote.topic, {"type": "started", "job": remote.token, "name": me,
                         "address": worker.address if worker is not None else ""})
    job = remote.job
    run_id = Path(job.run_root).name
    scratch = worker_scratch() / "harness-runs" / remote.token
    run = RunDir.create(run_id, scratch)
    local_job = _localize(job, artifacts, evals, run.root.resolve())
    seq = [0]
    lock = threading.Lock()

    def stream(path: Path) -> None:
        with lock:
            seq[0] += 1
            message = {"type": "files", "job": remote.token, "name": me, "seq": seq[0],
                       "files": _cell_files(run.root, path)}
        _emit(remote.topic, message)

    try:
        with watch_writes(run.root, stream):
            run_target_job(local_job, EventProgress(remote.topic, remote.token))
        files = {p.relative_to(run.root).as_posix(): p.read_bytes() for p in sorted(run.root.rglob("*"))
                 if p.is_file() and not p.name.startswith(".")}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return JobResult(remote.token, me, files, seq[0] + 1)


@dataclass
class _JobState:
    job: TargetJob
    future: Any = None
    worker: str = ""
    address: str = ""
    #: the highest sequence number written per file
    seqs: Dict[str, int] = field(default_factory=dict)
    died: str = ""
    ended: bool = False


def _eval_bundle(evals) -> Bundle:
    files = {"eval_inputs": Path(evals.eval_inputs_path).read_bytes(),
             "reference_outputs": Path(evals.reference_outputs_path).read_bytes()}
    if evals.labels_path:
        files["labels"] = Path(evals.labels_path).read_bytes()
    return Bundle(files)


def _workers_by_resource(client) -> Dict[str, List[str]]:
    """{resource: worker addresses} of the workers that offer at least one device job's share of it."""
    found: Dict[str, List[str]] = {}
    for address, info in client.scheduler_info(n_workers=-1).get("workers", {}).items():
        for resource, amount in (info.get("resources") or {}).items():
            if float(amount) >= SITE_SHARE:
                found.setdefault(resource, []).append(address)
    return found


def dispatch_on_workers(jobs: Sequence[TargetJob], client, run: RunDir, progress: Progress = SILENT) -> None:
    """Every target's job on a worker (its site's, where it names one); the host writes each record of `run` as
    it arrives, and cells of a job whose worker died are `lost` / `worker_lost`."""
    if not jobs:
        return
    _DeviceJobs(client, run, progress).dispatch(jobs)


def _site_resource(target) -> str:
    """The worker resource a target's job needs: `site-<site>`, or '' for any worker."""
    return f"site-{target.site}" if target.site else ""


class _DeviceJobs:
    """The host's side of a run's device jobs on the workers: submit each, write the records they stream, and
    end a job whose worker died (or whose site has no worker left) with its unfinished cells lost."""

    def __init__(self, client, run: RunDir, progress: Progress):
        self.client, self.run, self.progress = client, run, progress
        self.topic = f"harness-run-{run.run_id}-{uuid.uuid4().hex[:8]}"
        self.states: Dict[str, _JobState] = {}  # by token
        self.by_key: Dict[str, str] = {}  # token by future key
        # the client's event loop delivers events on its own thread, while this one submits and collects
        self.lock = threading.Lock()
        # each artifact's and each model's evaluation files go to the cluster once, whichever jobs need them
        self.artifact_futures: Dict[str, Any] = {}
        self.eval_futures: Dict[str, Any] = {}

    def dispatch(self, jobs: Sequence[TargetJob]) -> None:
        resources = _workers_by_resource(self.client)
        n_workers = len(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        self.client.subscribe_topic(self.topic, self.on_event)
        self.client.subscribe_topic("all", self.on_cluster_event)
        try:
            submitted = []
            for job in jobs:
                why = self.unplaceable(job, resources, n_workers)
                if why:
                    self.lose_unplaced(job, why)
                else:
                    submitted.append(self.submit(job))
            for future in _as_finished(self.client, submitted, self.strand):
                self.collect(future)
        finally:
            self.client.unsubscribe_topic(self.topic)
            self.client.unsubscribe_topic("all")

    # -------------------------------------------------------- submitting
    def unplaceable(self, job: TargetJob, resources: Dict[str, List[str]], n_workers: int) -> str:
        """Why no worker can take the job ('' when one can)."""
        need = _site_resource(job.target)
        if need and (need not in resources or not n_workers):
            return (f"no dask worker offers the resource {need}: start one where {job.target.name} is reachable "
                    f"with `dask worker {_address(self.client)} --resources \"{need}=1\"`")
        return "" if n_workers else "the dask scheduler has no workers"

    def lose_unplaced(self, job: TargetJob, why: str) -> None:
        self.progress(f"[{job.target.name}] {why}")
        for cell in job.cells:
            record_cell(self.run, failed_row(self.run.run_id, cell, LOST, Category.WORKER_LOST.value, why))

    def artifact_bundles(self, job: TargetJob) -> Dict[str, Any]:
        """{sha256: future of the Bundle of its files} for the job's artifacts."""
        bundles: Dict[str, Any] = {}
        for cell in job.cells:
            a = cell.artifact
            if a.files and a.sha256 not in bundles:
                if a.sha256 not in self.artifact_futures:
                    self.artifact_futures[a.sha256] = self.client.scatter(
                        Bundle({Path(p).name: Path(p).read_bytes() for p in a.files}), hash=False)
                bundles[a.sha256] = self.artifact_futures[a.sha256]
        return bundles

    def eval_bundles(self, job: TargetJob) -> Dict[str, Any]:
        """{model: future of the Bundle of its evaluation files} for the job's models."""
        bundles: Dict[str, Any] = {}
        for model in {c.artifact.model for c in job.cells}:
            if model not in self.eval_futures:
                self.eval_futures[model] = self.client.scatter(_eval_bundle(job.evals[model]), hash=False)
            bundles[model] = self.eval_futures[model]
        return bundles

    def submit(self, job: TargetJob):
        """The job as a task on a worker with its site's resource; its future."""
        need = _site_resource(job.target)
        artifacts, evals = self.artifact_bundles(job), self.eval_bundles(job)
        token = f"{job.target.name}-{uuid.uuid4().hex[:10]}"
        state = _JobState(job)
        with self.lock:
            self.states[token] = state
            state.future = self.client.submit(run_device_job, RemoteJob(job, token, self.topic), artifacts, evals,
                                              pure=False, key=f"harness-device-job-{token}",
                                              resources={need: SITE_SHARE} if need else None)
            self.by_key[state.future.key] = token
        return state.future

    # -------------------------------------------------------- while the jobs run (the client's event thread)
    def write(self, state: _JobState, files: Dict[str, bytes], seq: int) -> None:
        for rel, data in files.items():
            if state.seqs.get(rel, -1) >= seq:
                continue  # an older copy than the one already written
            state.seqs[rel] = seq
            atomic_write_bytes(self.run.root / rel, data)

    def on_event(self, event) -> None:
        """A job's message: it started on a worker, a progress line, or files it wrote."""
        _, msg = event
        if not isinstance(msg, dict):
            return
        with self.lock:
            state = self.states.get(msg.get("job", ""))
            if state is None:
                return
            if msg.get("type") == "started":
                if not state.worker:
                    state.worker, state.address = msg["name"], msg.get("address", "")
                    self.progress(f"[{state.job.target.name}] job on worker {state.worker}")
                return
            if state.ended or (state.worker and msg.get("name") != state.worker):
                return  # a late message, or one from an attempt after the first
            if msg.get("type") == "line":
                self.progress(msg["line"])
            elif msg.get("type") == "files":
                self.write(state, msg["files"], msg["seq"])

    def on_cluster_event(self, event) -> None:
        """A worker left the cluster: the job it was running has died mid-run."""
        _, msg = event
        if not isinstance(msg, dict) or msg.get("action") != "remove-worker":
            return
        address = msg.get("worker", "")
        processing = {str(k) for k in (msg.get("processing-tasks") or ())}
        with self.lock:
            for state in self.states.values():
                if state.ended or state.died:
                    continue
                if state.future.key in processing or (state.address and state.address == address):
                    state.died = f"dask worker {address} running this device's job died mid-run"
                    self.progress(f"[{state.job.target.name}] {state.died}; its unfinished cells are lost")
                    # not from this thread: it is the client's event loop, which the cancel itself needs
                    threading.Thread(target=state.future.cancel, daemon=True).start()

    def strand(self, pending: Set[Any]) -> None:
        """A job waiting for a site whose every worker has gone would wait for ever: it ends, its cells lost."""
        offered = _workers_by_resource(self.client)
        for future in pending:
            state = self.states[self.by_key[future.key]]
            site = state.job.target.site
            if site and f"site-{site}" not in offered and not state.died:
                with self.lock:
                    state.died = f"no dask worker with the resource site-{site} is left to run this device's job"
                self.progress(f"[{state.job.target.name}] {state.died}")
                future.cancel()

    # -------------------------------------------------------- a job that ended
    def collect(self, future) -> None:
        """The finished job's files written; if it did not finish, its unrecorded cells are lost."""
        state = self.states[self.by_key[future.key]]
        reason = self.ending(state, future)
        with self.lock:
            state.ended = True
        if reason:
            self.lose_unfinished(state, reason)

    def ending(self, state: _JobState, future) -> str:
        """'' once every file of the job's result is written; else why the job did not finish."""
        try:
            result: JobResult = future.result()
            if result.refused:
                return state.died or f"dask worker running this device's job died mid-run ({result.refused})"
            with self.lock:
                self.write(state, result.files, result.seq)
            return ""
        except Exception as exc:  # cancelled after its worker died, KilledWorker, or a bug in the job
            return state.died or f"the device's job on dask broke: {type(exc).__name__}: {exc}"

    def lose_unfinished(self, state: _JobState, reason: str) -> None:
        run = self.run
        lost = [c for c in state.job.cells if not run.cell_path(c.cell_id).exists()]
        address = _scheduler_of(self.client)
        for cell in lost:
            record_cell(run, failed_row(run.run_id, cell, LOST, Category.WORKER_LOST.value,
                                        f"{reason}; `harness run --resume {run.run_id} --scheduler {address}` "
                                        "runs it on the remaining workers"))
        if lost:
            self.progress(f"[{state.job.target.name}] {len(lost)} cell(s) lost: {reason}")


def _scheduler_of(client) -> str:
    """The scheduler's address, for the resume hint (the cells must go back to the same cluster's workers)."""
    try:
        return str(client.scheduler.address) or "tcp://SCHEDULER:PORT"
    except Exception:  # a client whose scheduler is gone: the hint still names the flag
        return "tcp://SCHEDULER:PORT"


def _as_finished(client, futures: Sequence[Any], idle: Callable[[Set[Any]], None], every_s: float = 10.0):
    """Each future as it finishes; idle(pending) every every_s seconds that none does."""
    from distributed import wait

    pending = set(futures)
    while pending:
        try:
            with client.as_current():  # wait() asks for the default client; this one need not be it
                done, pending = wait(pending, timeout=every_s, return_when="FIRST_COMPLETED")
        except TimeoutError:
            idle(pending)
            continue
        except Exception:  # FuturesCancelledError: wait() raises for a cancelled future instead of returning it
            done = {f for f in pending if f.cancelled() or f.done()}
            if not done:
                raise
            pending -= done
        yield from done


def _address(client) -> str:
    try:
        return str(client.scheduler.address)
    except AttributeError:
        return "tcp://SCHEDULER:8786"


# ---------------------------------------------------------------- the dispatcher
class DaskDispatcher(Dispatcher):
    """A run's build steps and device jobs on the workers of `client`'s cluster (harness profile --scheduler);
    whoever made the client closes it."""

    def __init__(self, client):
        self.client = client

    def build(self, recipes: Sequence[Any], variants: Dict[str, List[str]], cache: ContentCache,
              progress: Progress = SILENT) -> List[Tuple[Any, List[Any]]]:
        return build_on_workers(recipes, variants, cache, self.client, progress)

    def run_jobs(self, jobs: Sequence[TargetJob], run: RunDir, progress: Progress = SILENT) -> None:
        dispatch_on_workers(jobs, self.client, run, progress)

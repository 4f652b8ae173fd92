"""The run: compress → convert → push → run → collect, as a matrix of independent cells.

A cell is (model, variant, format, target). Every artifact is built first
(cached by content), then one job per target runs its cells. A Dispatcher says
where both happen: ThreadDispatcher on this host (one thread per device), or
harness.run.dask.DaskDispatcher on a dask cluster's workers for a farm too large
for one host; the jobs are the same plain data either way.
Each cell ends as a result row, measured or with an error category; rows are
written the moment a cell finishes, so nothing measured is ever lost.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Executor, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from harness.run import probe as device
from harness.prepare.steps import Artifact, PreparedModel, build_model_artifacts
from harness.prepare.cache import ContentCache
from harness.core.errors import CommandTimeout, ConnectError, DeviceBusy, HarnessError, TransportError
from harness.core.files import file_sha256
from harness.core.optional import RUNTIME_MODULES, install_hint
from harness.judge.fidelity import fidelity
from harness.core.progress import SILENT, Progress
from harness.prepare.data import importable_from, load_entry_point
from harness.judge.evaluate import ScoringSpec, read_outputs, score_outputs
from harness.run.measurement import combine_repeats
from harness.run.pairing import MANIFEST_KEY as PAIRED_KEY, interleave
from harness.judge.verdict import device_failure
from harness.schema.results import (
    FAILED,
    INCOMPATIBLE,
    LOST,
    OK,
    SKIPPED,
    Category,
    agent_metrics,
    cell_id,
    make_row,
    results_frame,
)
from harness.schema.rundir import REPORTS_DIR, RunDir, new_run_id
from harness.schema.runtime_configs import RuntimeConfig, compiled_cache_key, default_config, wants_cache
from harness.schema.targets import TargetSpec
from harness.run.transport import open_transport
from harness.run.storage import SUSPECT_KEY, DeviceCache, disk_full_message, entry_key, suspect_reason

log = logging.getLogger("harness.run.pipeline")

#: exit codes of the agent process that say how it died (shell convention 128+signal)
_SIGNAL_CATEGORIES = {137: Category.OOM_KILLED, 139: Category.CRASHED, 134: Category.CRASHED,
                      135: Category.CRASHED, 136: Category.CRASHED}


@dataclass(frozen=True)
class RunSettings:
    warmup: int = 10
    iterations: int = 100
    #: None: the target's own thread count
    threads: Optional[int] = None
    #: outputs for at most this many evaluation samples (0: all)
    max_samples: int = 0
    #: after each cell's timed run, a separate profiled session: per-layer times and where each node ran
    #: (reports/<run>/profiles/<cell>.json)
    profile: bool = True
    profile_runs: int = 10
    #: only the runtime configurations with these names (harness profile --runtime-config); empty: all
    runtime_configs: Tuple[str, ...] = ()
    #: the formats the user named (harness profile --formats): a missing library for one of them fails its
    #: cells instead of skipping them
    formats: Tuple[str, ...] = ()

    @classmethod
    def from_manifest(cls, doc: Dict[str, Any]) -> "RunSettings":
        """A run's recorded settings; keys this version no longer has (ov_precision, now a runtime
        configuration) are left out."""
        known = {f for f in cls.__dataclass_fields__}
        kept = {k: v for k, v in doc.items() if k in known}
        for key in ("runtime_configs", "formats"):
            if key in kept:
                kept[key] = tuple(kept[key])
        return cls(**kept)
    #: per-cell agent timeout; None: the target's command_timeout_s
    cell_timeout_s: Optional[float] = None
    #: each agent run times for at least this long (and at least `iterations`), at most max_duration_s
    min_duration_s: float = 1.0
    max_duration_s: float = 60.0
    #: independent agent runs per cell, interleaved across the device's cells (A B C A B C)
    repeats: int = 1


@dataclass(frozen=True)
class ModelEval:
    """What a device job needs to score a model's cells (plain paths and data: picklable)."""

    model: str
    eval_inputs_path: str
    #: '' without labels
    labels_path: str
    reference_outputs_path: str
    #: the reference's own figures (accuracy, metric_*), for retention
    reference_figures: Dict[str, Any]
    scoring: ScoringSpec
    #: the model keeps state between inferences: the agent starts it again before its outputs
    stateful: bool = False

    @classmethod
    def of(cls, prepared: Any) -> "ModelEval":
        """From a prepared model (harness.prepare.steps.PreparedModel)."""
        return cls(prepared.recipe.name, str(prepared.eval_inputs_path.resolve()),
                   str(prepared.labels_path.resolve()) if prepared.labels_path else "",
                   str(prepared.reference_outputs_path.resolve()), prepared.reference_figures,
                   ScoringSpec.from_recipe(prepared.recipe), prepared.interface.stateful)


@dataclass(frozen=True)
class Cell:
    artifact: Artifact
    target: str
    #: how the target runs the artifact's format (the runtime's default unless the target names others)
    runtime_config: RuntimeConfig = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.runtime_config is None:
            object.__setattr__(self, "runtime_config", default_config(self.artifact.format))

    @property
    def cell_id(self) -> str:
        config = self.runtime_config
        return cell_id(self.artifact.model, self.artifact.variant, self.artifact.format, self.target,
                       "" if config.is_default else config.name)


@dataclass(frozen=True)
class TargetJob:
    target: TargetSpec
    cells: Tuple[Cell, ...]
    evals: Dict[str, ModelEval]
    run_root: str
    settings: RunSettings


@dataclass
class RunOutcome:
    run_dir: RunDir
    frame: Any
    built: int = 0
    reused: int = 0
    missing: List[str] = field(default_factory=list)


# ---------------------------------------------------------------- rows
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def base_row(run_id: str, cell: Cell) -> Dict[str, Any]:
    a = cell.artifact
    m = a.metrics
    return dict(run_id=run_id, cell_id=cell.cell_id, model=a.model, variant=a.variant, format=a.format,
                runtime_config=cell.runtime_config.name, runtime_options=cell.runtime_config.options_json(),
                target=cell.target, artifact_size_bytes=a.size_bytes or None, artifact_gzip_bytes=a.gzip_bytes or None,
                artifact_sha256=a.sha256 or None, param_count=m.get("param_count"), macs=m.get("macs"),
                sparsity=m.get("sparsity"), weight_rel_frobenius=m.get("weight_rel_frobenius"),
                compression_s=m.get("compression_s"), started_at=_now())


def record_cell(run: RunDir, row: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
    """The cell's record (its full row and `extra`) written into the run; returns the full row."""
    full = make_row(**row)
    run.write_cell({"row": full, **extra})
    return full


def failed_row(run_id: str, cell: Cell, status: str, category: str, message: str) -> Dict[str, Any]:
    return {**base_row(run_id, cell), "status": status, "error_category": category, "error_message": message}


# ---------------------------------------------------------------- one device
def run_target_job(job: TargetJob, progress: Progress = SILENT) -> List[Dict[str, Any]]:
    """Profile every cell of one target, in order, writing each result as it finishes.

    Never raises for a device problem: an unreachable device or one lost
    mid-run turns the remaining cells into 'lost' rows that say why.
    """
    run = RunDir(Path(job.run_root))
    target, settings = job.target, job.settings
    rows: List[Dict[str, Any]] = []
    pending = list(job.cells)

    def lose_rest(category: str, message: str, status: str = LOST, running: bool = False) -> None:
        # with `running`, the first pending cell's command was under way: only it carries the command's message
        first = pending[0].cell_id if pending else ""
        while pending:
            cell = pending.pop(0)
            said = message if not running or cell.cell_id == first else \
                f"not started: the device was lost while {first} ran"
            rows.append(record_cell(run, failed_row(run.run_id, cell, status, category, said)))
        progress(f"[{target.name}] device {'lost' if status == LOST else 'refused'}: {message}")

    try:
        transport = open_transport(target)
    except HarnessError as exc:
        run.write_device(target.name, device.unreachable_probe(target.name, exc))
        status, category = device_failure(exc)  # a changed host key is failed/host_key_changed, never lost
        lose_rest(category, str(exc), status)
        return rows
    try:
        try:
            probe = device.probe(transport, device.device_python(target, transport))
            run.write_device(target.name, probe)
            agent_path = probe["agent_path"]
        except (TransportError, HarnessError) as exc:
            run.write_device(target.name, device.unreachable_probe(target.name, exc))
            lose_rest("device_unreachable", f"health probe failed: {exc}")
            return rows
        available = {fmt for fmt, info in probe.get("runtimes", {}).items() if info.get("available")}
        progress(f"[{target.name}] reachable: Python {probe.get('python')}, numpy {probe.get('numpy')}, "
                 f"runtimes {', '.join(sorted(available)) or 'none'}")
        storage = DeviceStorage(DeviceCache.of(target, transport, device.device_python(target, transport), agent_path),
                                run.run_id, target.lock_timeout_s, probe)
        storage.pin(job, run)
        uploaded_inputs: Dict[str, str] = {}
        references: Dict[str, Any] = {}
        measured: Dict[str, Tuple[PushedCell, List[Dict[str, Any]]]] = {}
        total = len(pending)
        while pending:
            cell = pending[0]
            try:
                row = _run_cell(job, cell, transport, agent_path, available, uploaded_inputs, references, run,
                                measured, storage)
            except ConnectError as exc:
                lose_rest("device_lost", str(exc), running=True)
                break
            except TransportError as exc:
                lose_rest("device_lost", f"{type(exc).__name__}: {exc}", running=True)
                break
            pending.pop(0)
            rows.append(row)
            config = "" if cell.runtime_config.is_default else f"@{cell.runtime_config.name}"
            progress(f"[{target.name}] {total - len(pending)}/{total} {cell.artifact.model}/{cell.artifact.variant}/"
                     f"{cell.artifact.format}{config}: {_describe(row)}")
        if not pending and settings.repeats > 1 and measured:
            rows = repeat_timings(job, transport, agent_path, run, measured, rows, progress)
        storage.unpin()
    finally:
        transport.close()
    return rows


def repeat_timings(job: TargetJob, transport, agent_path: str, run: RunDir,
                   measured: Dict[str, Tuple["PushedCell", List[Dict[str, Any]]]], rows: List[Dict[str, Any]],
                   progress: Progress = SILENT) -> List[Dict[str, Any]]:
    """repeats 2..n: the measured cells timed again, round by round across the device's cells (A B C A B C),
    so drift on the device hits every cell alike; then each cell's row and record carry all its repeats.
    A repeat that fails is left out (the cell keeps the ones it has); a lost device ends the rounds."""
    target, settings = job.target, job.settings
    cells = {c.cell_id: c for c in job.cells}
    try:
        for k in range(2, settings.repeats + 1):
            for cell_id, (pushed, documents) in measured.items():
                try:
                    document = check_agent(run_agent(transport, job, cells[cell_id], pushed, agent_path, run,
                                                     repeat=k))
                except CellEnded as ended:
                    progress(f"[{target.name}] repeat {k} of {cell_id} left out: {ended.message}")
                    continue
                if document.get("status") == "ok":
                    documents.append(document)
            progress(f"[{target.name}] repeat {k}/{settings.repeats} of {len(measured)} cell(s) done")
    except (ConnectError, TransportError) as exc:
        progress(f"[{target.name}] device lost during the repeats ({exc}); cells keep the repeats they have")
    threads = settings.threads or target.threads
    updated: Dict[str, Dict[str, Any]] = {}
    for cell_id, (_, documents) in measured.items():
        if len(documents) < 2:
            continue
        record = json.loads(run.cell_path(cell_id).read_text())
        fields, extras = combine_repeats(documents, target.quiet, threads)
        record["row"] = make_row(**{**record["row"], **fields})
        record.update(extras)
        run.write_cell(record)
        updated[cell_id] = record["row"]
    return [updated.get(str(r.get("cell_id")), r) for r in rows]


def _describe(row: Dict[str, Any]) -> str:
    if row["status"] != OK:
        return f"{row['status']} ({row['error_category']}): {row['error_message']}"
    acc = f"acc {row['accuracy']:.4f}, " if row.get("accuracy") is not None else ""
    broken = f"; {row['evaluation_error']} (primary figure unavailable)" if row.get("evaluation_error") else ""
    return f"{acc}p50 {row['latency_p50_ms']:.3f} ms, p99 {row['latency_p99_ms']:.3f} ms, " \
           f"peak {row['peak_rss_bytes'] / 2**20:.0f} MiB{broken}"


# ---------------------------------------------------------------- the steps of one cell
@dataclass(frozen=True)
class PushedCell:
    """The cell's files on the device: model files and evaluation inputs, by their device paths."""

    model_files: Tuple[str, ...]
    inputs: str
    result: str
    outputs: str


@dataclass(frozen=True)
class AgentRun:
    """What the agent left: its JSON document (None if it wrote none), exit code and output tail."""

    document: Optional[Dict[str, Any]]
    exit_code: Optional[int]
    output_tail: str


class CellEnded(Exception):
    """A step ended the cell early; the row says how."""

    def __init__(self, status: str, category: Category, message: str):
        super().__init__(message)
        self.status, self.category, self.message = status, category, message


def check_eligible(target: TargetSpec, artifact: Artifact, available: set, requested: Sequence[str] = ()) -> None:
    """eligibility: the artifact was built, matches its source and the target has its runtime.

    `requested`: the formats the user named; a library missing for one of those fails the cell, for any other
    format (the default portability matrix) it skips the cell."""
    missing_status = FAILED if artifact.format in requested else SKIPPED
    if artifact.error:
        category = Category.parse(artifact.metrics.get("error_category", Category.CONVERSION_FAILED))
        # No converter for the pair is a known gap of the toolchain, not a fault of the model: skipped, with why.
        status = {Category.UNSUPPORTED_FORMAT: INCOMPATIBLE, Category.NO_CONVERTER: SKIPPED,
                  Category.LIBRARY_MISSING: missing_status}.get(category, FAILED)
        raise CellEnded(status, category, artifact.error)
    if artifact.problems:
        raise CellEnded(INCOMPATIBLE, Category.INTERFACE_MISMATCH, "; ".join(artifact.problems))
    if artifact.format not in target.runtimes:
        raise CellEnded(SKIPPED, Category.UNSUPPORTED_ON_TARGET, f"{target.name} does not list runtime "
                        f"{artifact.format!r} (targets/{target.name}.yaml runtimes: {list(target.runtimes)})")
    if artifact.format not in available and target.transport == "local":
        # The device is this host: its Python lacks the runtime, which an extra of the harness brings.
        _, line = install_hint(RUNTIME_MODULES.get(artifact.format, artifact.format))
        raise CellEnded(missing_status, Category.LIBRARY_MISSING, f"this host's Python cannot import the "
                        f"{artifact.format} runtime; {line}")
    if artifact.format not in available:
        raise CellEnded(FAILED, Category.RUNTIME_MISSING, f"{target.name} should have the {artifact.format} runtime "
                        "but its probe found none importable; install it on the device")


def push(transport, cell: Cell, evals: ModelEval, uploaded_inputs: Dict[str, str], run_id: str,
         storage: Optional["DeviceStorage"] = None) -> PushedCell:
    """push: model files and inputs into the device's content cache (sent only when missing there); with
    `storage`, least-recently-used entries no run needs are evicted first until the missing files fit."""
    artifact = cell.artifact
    if storage is not None:
        wanted = [(Path(p), sha) for p, sha in zip(artifact.files, artifact.file_sha256)]
        if evals.eval_inputs_path not in uploaded_inputs:
            wanted.append((Path(evals.eval_inputs_path), storage.digest_of(evals.eval_inputs_path)))
        storage.make_room(transport, wanted, cell)
    try:
        if evals.eval_inputs_path not in uploaded_inputs:
            uploaded_inputs[evals.eval_inputs_path] = device.ensure_artifact(transport, Path(evals.eval_inputs_path))
        files = tuple(device.ensure_artifact(transport, Path(p), sha)
                      for p, sha in zip(artifact.files, artifact.file_sha256))
    except ConnectError:
        raise  # the device is gone: the job marks this and the remaining cells lost
    except TransportError as exc:  # checksum mismatch twice, disk full, permission denied
        category = Category.DEVICE_DISK_FULL if "No space left" in str(exc) else Category.UPLOAD_FAILED
        raise CellEnded(FAILED, category, str(exc)) from None
    remote_dir = f"{transport.workdir}/runs/{run_id}/{cell.cell_id}"
    transport.mkdir(remote_dir)
    return PushedCell(files, uploaded_inputs[evals.eval_inputs_path], f"{remote_dir}/result.json",
                      f"{remote_dir}/outputs.npz")


def run_agent(transport, job: TargetJob, cell: Cell, pushed: PushedCell, agent_path: str, run: RunDir,
              repeat: int = 1) -> AgentRun:
    """run: the agent on the device, then its JSON result fetched back. Repeats after the first time only
    (no outputs pass) and keep their own result files."""
    target, settings, artifact = job.target, job.settings, cell.artifact
    remote_result = pushed.result if repeat == 1 else pushed.result.replace(".json", f".repeat{repeat}.json")
    argv = [device.device_python(target, transport), agent_path, "run", "--model", pushed.model_files[0],
            "--format", artifact.format, "--inputs", pushed.inputs, "--result", remote_result,
            "--warmup", str(settings.warmup), "--iterations", str(settings.iterations),
            "--min-duration", str(settings.min_duration_s), "--max-duration", str(settings.max_duration_s),
            "--threads", str(settings.threads or target.threads), "--max-samples", str(settings.max_samples),
            "--lock", device.lock_path(transport), "--lock-timeout", str(target.lock_timeout_s),
            "--holder", f"run {run.run_id}", "--verify-cache"]
    if repeat == 1:
        argv += ["--outputs", pushed.outputs]
        if job.evals[artifact.model].stateful:
            argv += ["--stateful"]
    if artifact.format == "openvino" and len(pushed.model_files) > 1:
        argv += ["--weights", pushed.model_files[1]]
    config = cell.runtime_config
    if not config.is_default:
        argv += ["--runtime-config", json.dumps(config.to_agent())]
    if wants_cache(config):
        argv += ["--cache-dir", f"{transport.workdir}/cache/compiled/{compiled_cache_key(artifact.sha256, config)}"]
    if repeat == 1 and settings.profile:
        argv += ["--profile", profile_path(pushed), "--profile-runs", str(settings.profile_runs)]
    try:
        result = transport.run(argv, timeout_s=settings.cell_timeout_s or target.command_timeout_s)
    except CommandTimeout as exc:
        raise CellEnded(FAILED, Category.TIMEOUT, str(exc)) from None
    local_result = run.root / "agent" / (f"{cell.cell_id}.json" if repeat == 1 else
                                         f"{cell.cell_id}.repeat{repeat}.json")
    document: Optional[Dict[str, Any]] = None
    try:
        transport.get(remote_result, local_result)
        document = json.loads(local_result.read_text())
    except ConnectError:
        raise  # the link dropped: the device is lost, whatever the agent's exit code was
    except (TransportError, ValueError):
        if result.ok:
            raise
    tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
    return AgentRun(document, result.exit_code, tail)


def check_agent(agent: AgentRun) -> Dict[str, Any]:
    """The agent's document if it measured; a signal exit or its own error category ends the cell."""
    document = agent.document
    if document is None or agent.exit_code in _SIGNAL_CATEGORIES and document.get("status") == "ok":
        category = _SIGNAL_CATEGORIES.get(agent.exit_code, Category.AGENT_FAILED)
        message = f"agent exited {agent.exit_code}" + (f": {agent.output_tail}" if agent.output_tail else " with no output")
        if category == Category.OOM_KILLED:
            message += " (killed, most likely for memory: raise the device's memory limit or use a smaller variant)"
        raise CellEnded(FAILED, category, message)
    return document


def profile_path(pushed: PushedCell) -> str:
    return pushed.result.replace("result.json", "profile.json")


def fetch_profile(transport, pushed: PushedCell, run: RunDir, cell: Cell, document: Dict[str, Any]) -> None:
    """fetch: the cell's per-layer profile (where each node ran) into reports/<run>/profiles/<cell>.json.
    A profile that failed or did not come back leaves the measured cell as it is."""
    if not document.get("profile"):
        return
    local = run.root / "profiles" / f"{cell.cell_id}.json"
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        transport.get(profile_path(pushed), local)
    except ConnectError:
        raise
    except TransportError as exc:
        log.warning("profile of %s not fetched: %s", cell.cell_id, exc)


def fetch_outputs(transport, pushed: PushedCell, run: RunDir, cell: Cell) -> Path:
    """fetch: the outputs of every evaluation sample, into the run directory."""
    local = run.outputs_path(cell.cell_id)
    transport.get(pushed.outputs, local)
    return local


def score(outputs_path: Path, evals: ModelEval, references: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """score: the cell's outputs against the reference (per output), labels and the recipe's metric."""
    if evals.model not in references:
        labels = np.load(evals.labels_path) if evals.labels_path else None
        metric = load_entry_point(evals.scoring.metric, evals.model, "metric", Path(evals.scoring.base_dir)) \
            if evals.scoring.metric else None
        references[evals.model] = (read_outputs(Path(evals.reference_outputs_path)), labels, metric)
    reference, labels, metric = references[evals.model]
    with importable_from(Path(evals.scoring.base_dir) if evals.scoring.base_dir else None):
        row, per_output = score_outputs(read_outputs(outputs_path), reference, labels, evals.scoring, metric,
                                        evals.reference_figures)
    return row, per_output


def _repair_text(repairs: List[str], document: Dict[str, Any]) -> Optional[str]:
    """What was repaired on the way to the cell's result: the host's re-uploads and the agent's own (a compiled-model
    cache rebuilt)."""
    notes = list(repairs) + ([document["cache_repair"]] if document.get("cache_repair") else [])
    return "; ".join(notes) or None


class DeviceStorage:
    """One device job's use of the device's cache: its pin, room for each cell's files, the repair of a corrupted
    entry, and the storage marked suspect after a second mismatch."""

    def __init__(self, cache: DeviceCache, run_id: str, lock_timeout_s: float, probe: Dict[str, Any]):
        self.cache, self.run_id, self.lock_timeout_s, self.probe = cache, run_id, float(lock_timeout_s), probe
        self._digests: Dict[str, str] = {}
        self.pinned = False

    def digest_of(self, local_path: str) -> str:
        if local_path not in self._digests:
            self._digests[local_path] = file_sha256(Path(local_path))
        return self._digests[local_path]

    def pin(self, job: TargetJob, run: RunDir) -> None:
        """Every key the job's cells need, so no run evicts them while this one lasts. A device whose cache
        cannot be managed (an old agent) still runs: its cells just get no eviction."""
        keys = {entry_key(self.cache.agent_path)}
        for cell in job.cells:
            keys.update(s for s in cell.artifact.file_sha256 if s)
            if cell.artifact.sha256 and wants_cache(cell.runtime_config):
                keys.add(compiled_cache_key(cell.artifact.sha256, cell.runtime_config))
        keys.update(self.digest_of(e.eval_inputs_path) for e in job.evals.values()
                    if Path(e.eval_inputs_path).is_file())
        try:
            state = self.cache.pin(self.run_id, keys)
        except TransportError as exc:
            log.warning("[%s] cache not pinned (%s); eviction is off for this run", self.cache.transport.name, exc)
            return
        self.pinned = True
        self.probe["cache"] = {k: state.get(k) for k in ("n_entries", "bytes", "oldest_use", "newest_use",
                                                         "free_bytes", "total_bytes", "budget")}
        run.write_device(self.cache.transport.name, self.probe)

    def unpin(self) -> None:
        if not self.pinned:
            return
        try:
            self.cache.unpin(self.run_id)
        except TransportError as exc:  # the pin expires on its own (agent.PIN_TTL_S)
            log.warning("[%s] cache pin of run %s not removed: %s", self.cache.transport.name, self.run_id, exc)

    def make_room(self, transport, wanted: Sequence[Tuple[Path, str]], cell: Cell) -> None:
        """Room in the cache for the files of `wanted` that the device does not have yet."""
        if not self.pinned:
            return
        missing = [(p, sha) for p, sha in wanted if p.is_file() and not transport.exists(device.cache_path(
            transport, p, sha))]
        if not missing:
            return
        need = sum(p.stat().st_size for p, _ in missing)
        try:
            answer = self.cache.make_room(need, self.lock_timeout_s, f"run {self.run_id}")
        except DeviceBusy as exc:
            raise CellEnded(FAILED, Category.DEVICE_BUSY, str(exc)) from None
        except ConnectError:
            raise
        except TransportError as exc:
            log.warning("[%s] no eviction before upload: %s", transport.name, exc)
            return
        if not answer.get("fits", True):
            raise CellEnded(FAILED, Category.DEVICE_DISK_FULL,
                            disk_full_message(transport.name, [p for p, _ in missing], answer, self.cache.target_file))

    def evict_corrupted(self, document: Dict[str, Any], uploaded_inputs: Dict[str, str], cell: Cell) -> str:
        """Evict the entries whose files the agent found changed; returns the note the cell's row carries."""
        corrupted = document.get("corrupted_files") or []
        keys = sorted({entry_key(str(c.get("path", ""))) for c in corrupted if c.get("path")})
        try:
            self.cache.evict(keys, self.lock_timeout_s, f"run {self.run_id}")
        except DeviceBusy as exc:
            raise CellEnded(FAILED, Category.DEVICE_BUSY, str(exc)) from None
        for local, remote in list(uploaded_inputs.items()):
            if entry_key(remote) in keys:
                del uploaded_inputs[local]  # sent again by the next push
        names = ", ".join(f"{Path(str(c.get('path'))).name} (sha256 {str(c.get('actual_sha256'))[:12]}, expected "
                          f"{str(c.get('expected_sha256'))[:12]})" for c in corrupted)
        log.warning("[%s] corrupted cache entries %s evicted; uploading again", self.cache.transport.name, names)
        return f"cache entry corrupted on the device: {names}; evicted, uploaded again and the cell rerun"

    def mark_suspect(self, document: Dict[str, Any], run: RunDir, device_name: str) -> None:
        reason = suspect_reason(device_name, document.get("corrupted_files") or [], self.run_id)
        try:
            self.cache.mark_suspect(reason)
        except TransportError as exc:
            log.warning("[%s] storage not marked suspect on the device: %s", device_name, exc)
        self.probe[SUSPECT_KEY] = reason
        run.write_device(device_name, self.probe)


def _run_cell(job: TargetJob, cell: Cell, transport, agent_path: str, available: set,
              uploaded_inputs: Dict[str, str], references: Dict[str, Any], run: RunDir,
              measured: Optional[Dict[str, Tuple[PushedCell, List[Dict[str, Any]]]]] = None,
              storage: Optional[DeviceStorage] = None) -> Dict[str, Any]:
    """One cell through its steps: eligibility, push, run, fetch, score, record. A step that ends the
    cell early raises CellEnded, which becomes the row; a lost link propagates to the device job.
    A measured cell is added to `measured` (its files on the device and its agent document) for the repeats."""
    artifact, evals = cell.artifact, job.evals[cell.artifact.model]
    extra: Dict[str, Any] = {"interface": artifact.interface, "operators": artifact.operators}
    if artifact.diagnostic:  # the converter's whole text; the row's message is its most specific line
        extra["diagnostic"] = artifact.diagnostic
    started = time.perf_counter()
    document: Dict[str, Any] = {}
    repairs: List[str] = []
    try:
        check_eligible(job.target, artifact, available, job.settings.formats)
        pushed = push(transport, cell, evals, uploaded_inputs, run.run_id, storage)
        document = check_agent(run_agent(transport, job, cell, pushed, agent_path, run))
        if document.get("error_category") == Category.CACHE_CORRUPTED.value and storage is not None:
            # storage changed a cached file since its verified upload: evict it, upload it again, run once more
            repairs.append(storage.evict_corrupted(document, uploaded_inputs, cell))
            pushed = push(transport, cell, evals, uploaded_inputs, run.run_id, storage)
            document = check_agent(run_agent(transport, job, cell, pushed, agent_path, run))
            if document.get("error_category") == Category.CACHE_CORRUPTED.value:
                storage.mark_suspect(document, run, job.target.name)
                raise CellEnded(FAILED, Category.CACHE_CORRUPTED,
                                f"{document.get('error_message', '')}; corrupted again after a fresh upload: the "
                                f"device's storage is suspect ({job.target.name})")
        if document.get("status") != "ok":
            raise CellEnded(FAILED, Category.parse(document.get("error_category", Category.AGENT_FAILED)),
                            document.get("error_message", ""))
        figures, per_output = score(fetch_outputs(transport, pushed, run, cell), evals, references)
        fetch_profile(transport, pushed, run, cell, document)
    except CellEnded as ended:
        row = {**base_row(run.run_id, cell), **agent_metrics(document), "status": ended.status,
               "error_category": ended.category.value, "error_message": ended.message}
        row["cache_repair"] = _repair_text(repairs, document)
        if document:
            row["duration_s"] = time.perf_counter() - started
        return record_cell(run, row, **extra)
    timing, measurement = combine_repeats([document], job.target.quiet, job.settings.threads or job.target.threads)
    row = {**base_row(run.run_id, cell), **agent_metrics(document), **figures, **timing}
    row["fidelity"] = fidelity(row.get("kl_divergence"), row.get("weight_rel_frobenius"))
    row.update(status=OK, duration_s=time.perf_counter() - started, cache_repair=_repair_text(repairs, document))
    if measured is not None:
        measured[cell.cell_id] = (pushed, [document])
    if document.get("state_reset"):  # how a stateful model was started again before its outputs
        extra["state_reset"] = document["state_reset"]
    return record_cell(run, row, agent=document.get("interface"), outputs=per_output, **measurement, **extra)


# ---------------------------------------------------------------- where the work runs
class Dispatcher(ABC):
    """Where a run's work happens: the build steps of its models, and one job per target.

    ThreadDispatcher does both on this host; harness.run.dask.DaskDispatcher spreads them over a dask cluster's
    workers (harness profile --scheduler). The caller picks one, so this module never imports dask.
    """

    @abstractmethod
    def build(self, recipes: Sequence[Any], variants: Dict[str, List[str]], cache: ContentCache,
              progress: Progress = SILENT) -> List[Tuple[PreparedModel, List[Artifact]]]:
        """(prepared, artifacts) per recipe, in the recipes' order, as build_model_artifacts gives them, with
        every artifact in `cache`."""

    @abstractmethod
    def run_jobs(self, jobs: Sequence[TargetJob], run: RunDir, progress: Progress = SILENT) -> None:
        """Every target's job, each finished cell recorded in `run`; a broken job never stops the others."""


class ThreadDispatcher(Dispatcher):
    """Everything on this host: the models built one after another, then one thread per device (or `executor`,
    a concurrent.futures.Executor, runs the jobs)."""

    def __init__(self, executor: Optional[Executor] = None):
        self.executor = executor

    def build(self, recipes: Sequence[Any], variants: Dict[str, List[str]], cache: ContentCache,
              progress: Progress = SILENT) -> List[Tuple[PreparedModel, List[Artifact]]]:
        return [build_model_artifacts(recipe, variants.get(recipe.name, []), cache, progress) for recipe in recipes]

    def run_jobs(self, jobs: Sequence[TargetJob], run: RunDir, progress: Progress = SILENT) -> None:
        if not jobs:
            return
        own = self.executor is None
        executor = self.executor or ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="device")
        try:
            futures = {executor.submit(run_target_job, job, progress): job for job in jobs}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    future.result()
                except Exception as exc:  # a bug in one device's job: its unfinished cells are lost, others go on
                    log.exception("job for %s crashed", job.target.name)
                    lose_unfinished(job, f"{type(exc).__name__}: {exc}")
        finally:
            if own:
                executor.shutdown(wait=True)


def lose_unfinished(job: TargetJob, message: str) -> None:
    """Each cell of the job without a record yet, recorded lost (harness_error) with message."""
    run = RunDir(Path(job.run_root))
    for cell in job.cells:
        if not run.cell_path(cell.cell_id).exists():
            record_cell(run, failed_row(run.run_id, cell, LOST, "harness_error", message))


# ---------------------------------------------------------------- the whole run
#: an emulated device computes outputs for at most this many samples (qemu is ~200x slower than the board)
EMULATED_MAX_SAMPLES = 200


def settings_for(target: TargetSpec, settings: RunSettings) -> RunSettings:
    """An emulated device (qemu) checks that a model loads and what it outputs; its timing means nothing,
    so it times briefly and scores fewer samples."""
    if not target.emulated:
        return settings
    return replace(settings, warmup=min(settings.warmup, 1), iterations=min(settings.iterations, 5),
                   min_duration_s=min(settings.min_duration_s, 0.1), repeats=1,
                   max_samples=min(settings.max_samples or EMULATED_MAX_SAMPLES, EMULATED_MAX_SAMPLES))


def pick_configs(targets: Sequence[TargetSpec], names: Sequence[str]) -> List[TargetSpec]:
    """Each target with only the named runtime configurations (all when none are named); a name no target
    has is a ConfigError listing the ones they have."""
    from harness.schema.runtime_configs import check_picked, pick
    if not names:
        return list(targets)
    check_picked({t.name: t.runtime_configs for t in targets}, names)
    return [replace(t, runtimes=(), runtime_configs=pick(t.runtime_configs, names)) for t in targets]


def plan_cells(artifacts: Sequence[Artifact], targets: Sequence[TargetSpec], only: Sequence[str] = ()) -> List[Cell]:
    """A cell per (artifact, target, runtime configuration of the artifact's format on that target); a target
    without the format gets one cell with the runtime's default (it ends skipped, saying why). With `only`
    (configuration names: harness profile --runtime-config), just the cells of those configurations."""
    cells = []
    for t in targets:
        for a in artifacts:
            configs = [c for c in t.runtime_configs if c.runtime == a.format] or [default_config(a.format)]
            cells += [Cell(a, t.name, c) for c in configs if not only or c.name in only]
    return cells


@dataclass(frozen=True)
class BuiltModels:
    """What the build gave the run: every artifact, and per model what scoring and the manifest need."""

    artifacts: List[Artifact]
    evals: Dict[str, ModelEval]
    data_notes: Dict[str, List[str]]
    interfaces: Dict[str, Dict[str, Any]]

    @classmethod
    def of(cls, models: Sequence[Tuple[PreparedModel, List[Artifact]]]) -> "BuiltModels":
        built = cls([], {}, {}, {})
        for prepared, model_artifacts in models:
            name = prepared.recipe.name
            built.artifacts.extend(model_artifacts)
            built.evals[name] = ModelEval.of(prepared)
            built.data_notes[name] = list(prepared.data_notes)
            built.interfaces[name] = {"source_format": prepared.source_format, **prepared.interface.to_doc()}
        return built

    @property
    def converted(self) -> int:
        """Artifacts made by this run (not found in the cache)."""
        return sum(1 for a in self.artifacts if not a.cached and not a.error)

    @property
    def reused(self) -> int:
        return sum(1 for a in self.artifacts if a.cached)

    def tell_cache_use(self, progress: Progress) -> None:
        if self.converted == 0:
            progress(f"cache: all {self.reused} artifacts reused, nothing converted")
        else:
            progress(f"cache: {self.converted} artifacts converted, {self.reused} reused")


def validate_recipes(recipes: Sequence[Any], variants: Dict[str, List[str]]) -> None:
    """Before any work: a bad name, parameter or entry point names its file and field."""
    from harness.prepare.recipes import validate_recipe

    for recipe in recipes:
        validate_recipe(recipe, variants.get(recipe.name, []))


#: failed cells a resume runs again: the device was busy (another run held its lock), not the model's doing
RERUN_ON_RESUME = frozenset({"device_busy"})


def needs_rerun(row: Mapping[str, Any]) -> bool:
    """A cell `harness run --resume` runs again: lost, or failed because the device was busy."""
    return row.get("status") == LOST or (row.get("status") == FAILED and row.get("error_category") in RERUN_ON_RESUME)


def cells_to_run(run: RunDir, planned: Sequence[Cell], resume: bool, progress: Progress = SILENT) -> List[Cell]:
    """The planned cells; on a resume, only those without a result yet (a lost or device_busy cell runs again)."""
    if not resume:
        return list(planned)
    done = {c["row"]["cell_id"] for c in run.iter_cells() if not needs_rerun(c["row"])}
    cells = [c for c in planned if c.cell_id not in done]
    progress(f"resume {run.run_id}: {len(done)} cells already done, {len(cells)} to run")
    return cells


def build_manifest(run_id: str, recipes: Sequence[Any], variants: Dict[str, List[str]],
                   targets: Sequence[TargetSpec], settings: RunSettings, models: BuiltModels,
                   artifacts: Sequence[Artifact], planned: Sequence[Cell], pairs: Dict[str, str],
                   resumed: bool = False) -> Dict[str, Any]:
    """The run's manifest: what it was asked (models, variants, targets, settings, pairs), what the build
    made (artifacts, data notes, interfaces) and every cell planned, so a resume and collate know the whole."""
    manifest = {"run_id": run_id, "created_at": _now(), "models": [r.name for r in recipes],
                "model_sources": [r.source_path for r in recipes],
                "variants": {r.name: variants.get(r.name, []) for r in recipes},
                "model_files": {r.name: str(r.resolve(r.source.path)) for r in recipes if r.source.path},
                "recipes": {r.name: asdict(r) for r in recipes if not r.source_path},
                "data": models.data_notes, "interfaces": models.interfaces,
                "targets": [t.name for t in targets], "target_sources": [t.source_path for t in targets],
                "target_specs": [asdict(t) for t in targets],
                "settings": asdict(settings),
                "artifacts": [asdict(a) for a in artifacts],
                "planned_cells": [c.cell_id for c in planned],
                PAIRED_KEY: dict(pairs)}
    if resumed:
        manifest["resumed_at"] = _now()
    return manifest


def plan_jobs(targets: Sequence[TargetSpec], cells: Sequence[Cell], evals: Dict[str, ModelEval], run: RunDir,
              settings: RunSettings) -> List[TargetJob]:
    """One job per target that has cells to run, with the settings for that target."""
    jobs = []
    for target in targets:
        target_cells = tuple(c for c in cells if c.target == target.name)
        if target_cells:
            jobs.append(TargetJob(target, target_cells, evals, str(run.root.resolve()), settings_for(target, settings)))
    return jobs


def run_profile(recipes: Sequence[Any], targets: Sequence[TargetSpec], variants: Optional[Dict[str, List[str]]] = None,
                settings: RunSettings = RunSettings(), run_id: Optional[str] = None,
                reports_dir: Path = REPORTS_DIR, cache: Optional[ContentCache] = None,
                progress: Progress = SILENT, dispatcher: Optional[Dispatcher] = None, resume: bool = False,
                write_report: bool = True, pairs: Optional[Dict[str, str]] = None,
                history: Optional[str] = None) -> RunOutcome:
    """Build every (model, variant, format) artifact, profile it on every target, collate.

    variants maps a model name to the variant names to make (default: none, the reference only).
    With resume=True and an existing run_id, only cells without a result (or lost ones) run.
    pairs maps a baseline twin's model name to its candidate's (harness.run.pairing): each twin cell is measured
    right after its candidate's, round after round, and the manifest records the pairing for the gate.
    dispatcher says where the builds and device jobs run (default: ThreadDispatcher, all on this host).
    history is the history store the run is recorded in (a SQLite path or a postgresql:// URL; default
    HARNESS_HISTORY, else .harness/history.sqlite).
    """
    cache = cache or ContentCache()
    variants = variants or {}
    pairs = pairs or {}
    dispatcher = dispatcher or ThreadDispatcher()
    targets = pick_configs(targets, settings.runtime_configs)
    validate_recipes(recipes, variants)
    run_id = run_id or new_run_id()
    run = RunDir.create(run_id, reports_dir)
    models = BuiltModels.of(dispatcher.build(recipes, variants, cache, progress))
    models.tell_cache_use(progress)
    artifacts = interleave(models.artifacts, pairs)
    planned = plan_cells(artifacts, targets, settings.runtime_configs)
    cells = cells_to_run(run, planned, resume, progress)
    run.write_manifest(build_manifest(run_id, recipes, variants, targets, settings, models, artifacts, planned, pairs,
                                      resumed=resume and run.manifest_path.exists()))
    progress(f"run {run_id}: {len(cells)} cells on {len(targets)} target(s)")
    if write_report:
        preload_report_libraries()
    dispatcher.run_jobs(plan_jobs(targets, cells, models.evals, run, settings), run, progress)
    return collate(run, targets, write_report=write_report, progress=progress, built=models.converted,
                   reused=models.reused, history=history)


#: what collating, the report and the history import: loaded while the devices measure
_COLLATE_MODULES = ("pandas", "harness.schema.results", "harness.report", "harness.report.html",
                    "harness.report.markdown", "harness.report.trends_page", "harness.judge.history",
                    "matplotlib.figure", "matplotlib.backends.backend_agg")


def preload_report_libraries() -> None:
    """Import what collation and the report use in the background while the devices measure: the host is idle
    then, and these imports would otherwise add most of a second to every run after its last cell."""
    def load() -> None:
        for module in _COLLATE_MODULES:
            try:
                importlib.import_module(module)
            except Exception:  # noqa: BLE001 - the report says itself what it cannot draw
                continue

    threading.Thread(target=load, name="preload-report", daemon=True).start()


def collate(run: RunDir, targets: Sequence[TargetSpec] = (), write_report: bool = True,
            progress: Progress = SILENT, built: int = 0, reused: int = 0,
            history: Optional[str] = None) -> RunOutcome:
    """Collect every cell written so far into the results tables (and the report, the history record in
    `history` and the trend page)."""
    frame = results_frame(run.rows())
    run.write_tables(frame)
    planned = set(run.read_manifest().get("planned_cells", [])) if run.manifest_path.exists() else set()
    rerun = [str(r["cell_id"]) for r in frame[["cell_id", "status", "error_category"]].to_dict(orient="records")
             if needs_rerun(r)]
    missing = sorted(planned - set(frame["cell_id"])) + sorted(rerun)
    outcome = RunOutcome(run, frame, built, reused, missing)
    if write_report:
        _write_reports(run, targets, progress, history)
    return outcome


def _write_reports(run: RunDir, targets: Sequence[TargetSpec], progress: Progress,
                   history: Optional[str] = None) -> None:
    """Report and history are derived data: their failure must never lose the measured results."""
    try:
        from harness.report import write_report
        path = write_report(run, {t.name: t for t in targets})
        progress(f"report: {path}")
    except Exception as exc:
        log.exception("report failed")
        progress(f"report could not be written ({type(exc).__name__}: {exc}); results tables are complete")
    try:
        from harness.judge.history import History, record_run
        from harness.report.trends_page import write_trend_page
        record_run(run, history)
        progress(f"trends: {write_trend_page(History(history), run.root.parent)}")
    except HarnessError as exc:  # an unreachable history server: one line, the run's own tables are written
        log.info("history not updated: %s", exc)  # the progress line below says it once
        progress(f"history not updated: {exc}; the run's own tables in {run.root} are complete")
    except Exception as exc:
        log.exception("history failed")
        progress(f"history not updated ({type(exc).__name__}: {exc})")

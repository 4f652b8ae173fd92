"""The steps of one cell, in order: eligibility, push, run the agent, fetch, score, record.

A step that ends the cell early raises CellEnded, which becomes the cell's row; a lost link (ConnectError,
TransportError) propagates to the device job, which marks the remaining cells lost.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from harness.agent.agent import Doc, ErrorCategory, STATUS_OK
from harness.core.errors import CommandTimeout, ConnectError, TransportError
from harness.core.optional import RUNTIME_MODULES, install_hint
from harness.judge.evaluate import read_outputs, score_outputs
from harness.judge.fidelity import fidelity
from harness.prepare.data import importable_from, load_entry_point
from harness.prepare.artifact import Artifact
from harness.run import probe as device
from harness.run.measurement import combine_repeats, least_slow, remeasure_note, slow_measurement
from harness.run.plan import Cell, ModelEval, TargetJob
from harness.run.rows import CellEnded, base_row, record_cell
from harness.schema.results import FAILED, INCOMPATIBLE, LOST, OK, SKIPPED, Category, agent_metrics
from harness.schema.rundir import RunDir
from harness.schema.runtime_configs import compiled_cache_key, wants_cache
from harness.schema.targets import QuietLimits, TargetSpec

log = logging.getLogger("harness.run.cell_steps")

#: exit codes of the agent process that say how it died (shell convention 128+signal)
_SIGNAL_CATEGORIES = {137: Category.OOM_KILLED, 139: Category.CRASHED, 134: Category.CRASHED,
                      135: Category.CRASHED, 136: Category.CRASHED}

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

def device_run_folder(run_id: str, target: str) -> str:
    """The name of one device job's folder under <workdir>/runs, and of its pin: per target, since two targets may
    share a device's workdir within one run. The agent removes it with the pin when the job ends."""
    return f"{run_id}.{target}"


def push(transport, cell: Cell, evals: ModelEval, uploaded_inputs: Dict[str, str], run_id: str,
         storage: Any = None) -> PushedCell:
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
        raise CellEnded(FAILED, storage_trouble(str(exc)) or Category.UPLOAD_FAILED, str(exc)) from None
    remote_dir = f"{transport.workdir}/runs/{device_run_folder(run_id, cell.target)}/{cell.cell_id}"
    transport.mkdir(remote_dir)
    return PushedCell(files, uploaded_inputs[evals.eval_inputs_path], f"{remote_dir}/result.json",
                      f"{remote_dir}/outputs.npz")

def run_agent(transport, job: TargetJob, cell: Cell, pushed: PushedCell, agent_path: str, run: RunDir,
              repeat: int = 1, again: int = 0) -> AgentRun:
    """run: the agent on the device, then its JSON result fetched back. Repeats after the first, and a repeat
    measured `again` because the device ran slow, time only (no outputs pass) and keep their own result files."""
    target, settings, artifact = job.target, job.settings, cell.artifact
    suffix = (f".repeat{repeat}" if repeat > 1 else "") + (f".again{again}" if again else "")
    remote_result = pushed.result.replace(".json", f"{suffix}.json") if suffix else pushed.result
    drift = target.quiet.max_reference_drift
    argv = [device.device_python(target, transport), agent_path, "run", "--model", pushed.model_files[0],
            "--format", artifact.format, "--inputs", pushed.inputs, "--result", remote_result,
            "--warmup", str(settings.warmup), "--iterations", str(settings.iterations),
            "--min-duration", str(settings.min_duration_s), "--max-duration", str(settings.max_duration_s),
            "--threads", str(settings.threads or target.threads), "--max-samples", str(settings.max_samples),
            "--lock", device.lock_path(transport), "--lock-timeout", str(target.lock_timeout_s),
            "--holder", f"run {run.run_id}", "--verify-cache",
            # the device speed reference's usual is kept in the device's workdir
            "--workdir", transport.workdir, "--max-reference-drift", "none" if drift is None else str(drift),
            # energy per inference from the device's power sensor (docs/energy.md)
            "--power", json.dumps(target.power.to_agent()),
            # temperature and throttling around the timed loop, the cooldown before it (docs/heat.md)
            "--thermal", json.dumps(target.thermal.to_agent(target.quiet))]
    first = repeat == 1 and not again
    if first:
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
    if first and settings.profile:
        argv += ["--profile", profile_path(pushed), "--profile-runs", str(settings.profile_runs)]
    try:
        # a cooldown waits on the device before the agent's own work: its longest wait is on top of the timeout
        result = transport.run(argv, timeout_s=(settings.cell_timeout_s or target.command_timeout_s)
                               + target.quiet.cooldown_s)
    except CommandTimeout as exc:
        if exc.stalled:  # the device stalled the agent, not the model: resumable, never a model failure
            raise CellEnded(LOST, Category.DEVICE_TIMEOUT, f"{exc}. Cleaned up: the agent was killed and its "
                            f"device lock released; `harness run --resume {run.run_id}` measures the cell again"
                            ) from None
        raise CellEnded(FAILED, Category.TIMEOUT, f"{exc}; raise --timeout or the target's command_timeout_s if "
                        "the model needs longer") from None
    local_result = run.root / "agent" / f"{cell.cell_id}{suffix}.json"
    document: Optional[Dict[str, Any]] = None
    try:
        transport.get(remote_result, local_result)
        document = json.loads(local_result.read_text())
    except ConnectError:
        raise  # the link dropped: the device is lost, whatever the agent's exit code was
    except (TransportError, ValueError):
        if result.ok:
            raise
        document = said_on_stdout(result.stdout)  # the agent could not write its result file: it said why
    tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
    return AgentRun(document, result.exit_code, tail)

def said_on_stdout(stdout: str) -> Optional[Dict[str, Any]]:
    """The agent's error document from its last stdout line, when it could not write its result file."""
    try:
        document = json.loads((stdout or "").strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return document if isinstance(document, dict) and document.get(Doc.ERROR_CATEGORY) else None


#: what a device says when its storage is full, or cannot be written (mkdir, SFTP and the agent's own words)
_DISK_FULL_WORDS = ("no space left",)
_READONLY_WORDS = ("read-only file system", "permission denied", "errno 30", "errno 13")


def storage_trouble(text: str) -> Optional[Category]:
    """DEVICE_DISK_FULL or DEVICE_STORAGE_READONLY when a device's error says its storage is full or cannot be
    written (a fix on the device, not a lost device or a failed model), else None."""
    text = text.lower()
    if any(word in text for word in _DISK_FULL_WORDS):
        return Category.DEVICE_DISK_FULL
    if any(word in text for word in _READONLY_WORDS):
        return Category.DEVICE_STORAGE_READONLY
    return None


def check_agent(agent: AgentRun) -> Dict[str, Any]:
    """The agent's document if it measured; a signal exit or its own error category ends the cell."""
    document = agent.document
    if document is None or agent.exit_code in _SIGNAL_CATEGORIES and document.get(Doc.STATUS) == STATUS_OK:
        category = _SIGNAL_CATEGORIES.get(agent.exit_code, Category.AGENT_FAILED)
        message = f"agent exited {agent.exit_code}" + (f": {agent.output_tail}" if agent.output_tail else " with no output")
        if category == Category.OOM_KILLED:
            message += " (killed, most likely for memory: raise the device's memory limit or use a smaller variant)"
        raise CellEnded(FAILED, category, message)
    return document

def measure_while_slow(timing_run: Callable[[int], Dict[str, Any]], document: Dict[str, Any], limits: QuietLimits,
                       repeat: int = 1) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """A repeat measured while the device ran slower than its usual (measurement.slow_measurement) is measured
    again, `timing_run(n)` for n = 1 .. limits.max_remeasures, until one is not slow. Returns the document whose
    timing the cell keeps (the first quiet one, else the least slow) and a note for each slow run (`kept`: the
    one the cell keeps when all were slow). A run again that fails ends the retries; the cell keeps what it has."""
    tried = [document]
    notes: List[Dict[str, Any]] = []
    reason = slow_measurement(document, limits)
    while reason is not None:
        notes.append(remeasure_note(repeat, tried[-1], reason))
        again: Optional[Dict[str, Any]] = None
        if len(tried) <= limits.max_remeasures:
            try:
                again = timing_run(len(tried))
            except CellEnded as ended:
                log.warning("repeat %d measured again failed: %s", repeat, ended.message)
        if again is None or again.get(Doc.STATUS) != STATUS_OK:
            kept = least_slow(tried)
            notes[tried.index(kept)]["kept"] = True
            return kept, notes
        tried.append(again)
        reason = slow_measurement(again, limits)
    return tried[-1], notes


def profile_path(pushed: PushedCell) -> str:
    return pushed.result.replace("result.json", "profile.json")

def fetch_profile(transport, pushed: PushedCell, run: RunDir, cell: Cell, document: Dict[str, Any]) -> None:
    """fetch: the cell's per-layer profile (where each node ran) into reports/<run>/profiles/<cell>.json.
    A profile that failed or did not come back leaves the measured cell as it is."""
    if not document.get(Doc.PROFILE):
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
    notes = list(repairs) + ([document[Doc.CACHE_REPAIR]] if document.get(Doc.CACHE_REPAIR) else [])
    return "; ".join(notes) or None

def run_cell(job: TargetJob, cell: Cell, transport, agent_path: str, available: set,
              uploaded_inputs: Dict[str, str], references: Dict[str, Any], run: RunDir,
              measured: Optional[Dict[str, Tuple[PushedCell, List[Dict[str, Any]]]]] = None,
              storage: Any = None) -> Dict[str, Any]:
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
        if document.get(Doc.ERROR_CATEGORY) == ErrorCategory.CACHE_CORRUPTED and storage is not None:
            # storage changed a cached file since its verified upload: evict it, upload it again, run once more
            repairs.append(storage.evict_corrupted(document, uploaded_inputs, cell))
            pushed = push(transport, cell, evals, uploaded_inputs, run.run_id, storage)
            document = check_agent(run_agent(transport, job, cell, pushed, agent_path, run))
            if document.get(Doc.ERROR_CATEGORY) == ErrorCategory.CACHE_CORRUPTED:
                storage.mark_suspect(document, run, job.target.name)
                raise CellEnded(FAILED, Category.CACHE_CORRUPTED,
                                f"{document.get(Doc.ERROR_MESSAGE, '')}; corrupted again after a fresh upload: the "
                                f"device's storage is suspect ({job.target.name})")
        if document.get(Doc.STATUS) != STATUS_OK:
            raise CellEnded(FAILED, Category.parse(document.get(Doc.ERROR_CATEGORY, Category.AGENT_FAILED)),
                            document.get(Doc.ERROR_MESSAGE, ""))
        figures, per_output = score(fetch_outputs(transport, pushed, run, cell), evals, references)
        fetch_profile(transport, pushed, run, cell, document)
    except CellEnded as ended:
        row = {**base_row(run.run_id, cell), **agent_metrics(document), "status": ended.status,
               "error_category": ended.category.value, "error_message": ended.message}
        row["cache_repair"] = _repair_text(repairs, document)
        if document:
            row["duration_s"] = time.perf_counter() - started
        return record_cell(run, row, **extra)
    # the timing of a repeat measured on a slow device comes from a run again (timing only); the outputs,
    # profile and load figures stay the first run's
    timed, remeasured = measure_while_slow(
        lambda again: check_agent(run_agent(transport, job, cell, pushed, agent_path, run, again=again)),
        document, job.target.quiet)
    timing, measurement = combine_repeats([timed], job.target.quiet, job.settings.threads or job.target.threads,
                                          remeasured)
    row = {**base_row(run.run_id, cell), **agent_metrics(document), **figures, **timing}
    row["fidelity"] = fidelity(row.get("kl_divergence"), row.get("weight_rel_frobenius"))
    row.update(status=OK, duration_s=time.perf_counter() - started, cache_repair=_repair_text(repairs, document))
    if measured is not None:
        measured[cell.cell_id] = (pushed, [timed])
    if document.get(Doc.STATE_RESET):  # how a stateful model was started again before its outputs
        extra["state_reset"] = document[Doc.STATE_RESET]
    return record_cell(run, row, agent=document.get(Doc.INTERFACE), outputs=per_output, **measurement, **extra)

def describe_row(row: Dict[str, Any]) -> str:
    if row["status"] != OK:
        return f"{row['status']} ({row['error_category']}): {row['error_message']}"
    acc = f"acc {row['accuracy']:.4f}, " if row.get("accuracy") is not None else ""
    broken = f"; {row['evaluation_error']} (primary figure unavailable)" if row.get("evaluation_error") else ""
    dequantized = "; int8 outputs compared dequantized" if row.get("outputs_dequantized") else ""
    return f"{acc}p50 {row['latency_p50_ms']:.3f} ms, p99 {row['latency_p99_ms']:.3f} ms, " \
           f"peak {row['peak_rss_bytes'] / 2**20:.0f} MiB{broken}{dequantized}"

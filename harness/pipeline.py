"""The run: compress → convert → push → run → collect, as a matrix of independent cells.

A cell is (model, variant, format, target). The host builds every artifact
first (cached by content), then dispatches one job per target through a
concurrent.futures.Executor (one worker per device), so a farm too large for
one host can hand the same jobs to dask.distributed's Executor unchanged.
Each cell ends as a result row, measured or with an error category; rows are
written the moment a cell finishes, so nothing measured is ever lost.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from concurrent.futures import Executor, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import device
from .build import Artifact, build_model_artifacts
from .cache import ContentCache
from .errors import CommandTimeout, ConnectError, HarnessError, TransportError
from .fidelity import fidelity
from .progress import SILENT, Progress
from .results import FAILED, INCOMPATIBLE, LOST, OK, SKIPPED, agent_metrics, cell_id, make_row, output_metrics, \
    results_frame
from .rundir import REPORTS_DIR, RunDir, new_run_id
from .targets import TargetSpec
from .transport import open_transport

log = logging.getLogger("harness.pipeline")

#: exit codes of the agent process that say how it died (shell convention 128+signal)
_SIGNAL_CATEGORIES = {137: "oom_killed", 139: "crashed", 134: "crashed", 135: "crashed", 136: "crashed"}


@dataclass(frozen=True)
class RunSettings:
    warmup: int = 10
    iterations: int = 100
    #: None: the target's own thread count
    threads: Optional[int] = None
    #: outputs for at most this many evaluation samples (0: all)
    max_samples: int = 0
    #: OpenVINO INFERENCE_PRECISION_HINT ('' = the plugin's default, e.g. bf16 on CPUs that have it)
    ov_precision: str = ""
    #: per-cell agent timeout; None: the target's command_timeout_s
    cell_timeout_s: Optional[float] = None


@dataclass(frozen=True)
class ModelEval:
    """What a device job needs to score a model's cells (plain paths: picklable)."""

    model: str
    eval_inputs_path: str
    labels_path: str
    reference_outputs_path: str
    #: None for unlabelled evaluation data (agreement with the reference is the figure then)
    reference_accuracy: Optional[float]


@dataclass(frozen=True)
class Cell:
    artifact: Artifact
    target: str

    @property
    def cell_id(self) -> str:
        return cell_id(self.artifact.model, self.artifact.variant, self.artifact.format, self.target)


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
                target=cell.target, artifact_size_bytes=a.size_bytes or None, artifact_gzip_bytes=a.gzip_bytes or None,
                artifact_sha256=a.sha256 or None, param_count=m.get("param_count"), macs=m.get("macs"),
                sparsity=m.get("sparsity"), weight_rel_frobenius=m.get("weight_rel_frobenius"),
                compression_s=m.get("compression_s"), started_at=_now())


def _record(run: RunDir, row: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
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

    def lose_rest(category: str, message: str) -> None:
        while pending:
            cell = pending.pop(0)
            rows.append(_record(run, failed_row(run.run_id, cell, LOST, category, message)))
        progress(f"[{target.name}] device lost: {message}")

    try:
        transport = open_transport(target)
    except HarnessError as exc:
        run.write_device(target.name, device.unreachable_probe(target.name, exc))
        lose_rest("device_unreachable", str(exc))
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
        uploaded_inputs: Dict[str, str] = {}
        references: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        total = len(pending)
        while pending:
            cell = pending[0]
            try:
                row = _run_cell(job, cell, transport, agent_path, available, uploaded_inputs, references, run)
            except ConnectError as exc:
                lose_rest("device_lost", str(exc))
                break
            except TransportError as exc:
                lose_rest("device_lost", f"{type(exc).__name__}: {exc}")
                break
            pending.pop(0)
            rows.append(row)
            progress(f"[{target.name}] {total - len(pending)}/{total} {cell.artifact.model}/{cell.artifact.variant}/"
                     f"{cell.artifact.format}: {_describe(row)}")
    finally:
        transport.close()
    return rows


def _describe(row: Dict[str, Any]) -> str:
    if row["status"] != OK:
        return f"{row['status']} ({row['error_category']}): {row['error_message']}"
    acc = f"acc {row['accuracy']:.4f}, " if row.get("accuracy") is not None else ""
    return f"{acc}p50 {row['latency_p50_ms']:.3f} ms, p99 {row['latency_p99_ms']:.3f} ms, " \
           f"peak {row['peak_rss_bytes'] / 2**20:.0f} MiB"


def _run_cell(job: TargetJob, cell: Cell, transport, agent_path: str, available: set,
              uploaded_inputs: Dict[str, str], references: Dict[str, Tuple[np.ndarray, np.ndarray]],
              run: RunDir) -> Dict[str, Any]:
    target, settings, artifact = job.target, job.settings, cell.artifact
    run_id = run.run_id
    extra = {"interface": artifact.interface, "operators": artifact.operators}
    if artifact.error:
        category = artifact.metrics.get("error_category", "conversion_failed")
        return _record(run, failed_row(run_id, cell, INCOMPATIBLE if category == "unsupported_format" else FAILED,
                                       category, artifact.error), **extra)
    if artifact.problems:
        return _record(run, failed_row(run_id, cell, INCOMPATIBLE, "interface_mismatch",
                                       "; ".join(artifact.problems)), **extra)
    if artifact.format not in target.runtimes:
        return _record(run, failed_row(run_id, cell, SKIPPED, "unsupported_on_target",
                                       f"{target.name} does not list runtime {artifact.format!r} "
                                       f"(targets/{target.name}.yaml runtimes: {list(target.runtimes)})"), **extra)
    if artifact.format not in available:
        return _record(run, failed_row(run_id, cell, FAILED, "runtime_missing",
                                       f"{target.name} should have the {artifact.format} runtime but its probe "
                                       "found none importable; install it on the device"), **extra)
    started = time.perf_counter()
    evals = job.evals[artifact.model]
    try:
        if evals.eval_inputs_path not in uploaded_inputs:
            uploaded_inputs[evals.eval_inputs_path] = device.ensure_artifact(transport, Path(evals.eval_inputs_path))
        remote_files = [device.ensure_artifact(transport, Path(p), sha)
                        for p, sha in zip(artifact.files, artifact.file_sha256)]
    except ConnectError:
        raise  # the device is gone: the job marks this and the remaining cells lost
    except TransportError as exc:  # checksum mismatch twice, disk full, permission denied
        return _record(run, failed_row(run_id, cell, FAILED, "upload_failed", str(exc)), **extra)
    remote_dir = f"{transport.workdir}/runs/{run_id}/{cell.cell_id}"
    transport.mkdir(remote_dir)
    threads = settings.threads or target.threads
    argv = [device.device_python(target, transport), agent_path, "run", "--model", remote_files[0],
            "--format", artifact.format, "--inputs", uploaded_inputs[evals.eval_inputs_path],
            "--result", f"{remote_dir}/result.json", "--outputs", f"{remote_dir}/outputs.npz",
            "--warmup", str(settings.warmup), "--iterations", str(settings.iterations), "--threads", str(threads),
            "--max-samples", str(settings.max_samples), "--lock", device.lock_path(transport),
            "--lock-timeout", str(target.lock_timeout_s), "--holder", f"run {run_id}"]
    if artifact.format == "openvino" and len(remote_files) > 1:
        argv += ["--weights", remote_files[1]]
    if settings.ov_precision:
        argv += ["--ov-precision", settings.ov_precision]
    timeout = settings.cell_timeout_s or target.command_timeout_s
    try:
        result = transport.run(argv, timeout_s=timeout)
    except CommandTimeout as exc:
        return _record(run, failed_row(run_id, cell, FAILED, "timeout", str(exc)), **extra)
    local_result = run.root / "agent" / f"{cell.cell_id}.json"
    document: Optional[Dict[str, Any]] = None
    try:
        transport.get(f"{remote_dir}/result.json", local_result)
        document = json.loads(local_result.read_text())
    except ConnectError:
        raise  # the link dropped: the device is lost, whatever the agent's exit code was
    except (TransportError, ValueError):
        if result.ok:
            raise
    if document is None or result.exit_code in _SIGNAL_CATEGORIES and document.get("status") == "ok":
        category = _SIGNAL_CATEGORIES.get(result.exit_code, "agent_failed")
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        message = f"agent exited {result.exit_code}" + (f": {' | '.join(tail)}" if tail else " with no output")
        if category == "oom_killed":
            message += " (killed, most likely for memory: raise the device's memory limit or use a smaller variant)"
        return _record(run, failed_row(run_id, cell, FAILED, category, message), **extra)
    row = {**base_row(run_id, cell), **agent_metrics(document)}
    if document.get("status") != "ok":
        row.update(status=FAILED, error_category=document.get("error_category", "agent_failed"),
                   error_message=document.get("error_message", ""))
        return _record(run, {**row, "duration_s": time.perf_counter() - started}, **extra)
    local_outputs = run.outputs_path(cell.cell_id)
    transport.get(f"{remote_dir}/outputs.npz", local_outputs)
    with np.load(local_outputs) as outputs:
        out = outputs["output_0"]
    if artifact.model not in references:
        references[artifact.model] = (np.load(evals.reference_outputs_path), np.load(evals.labels_path))
    reference_outputs, labels = references[artifact.model]
    row.update(output_metrics(out, reference_outputs, labels, evals.reference_accuracy))
    row["fidelity"] = fidelity(row.get("kl_divergence"), row.get("weight_rel_frobenius"))
    row.update(status=OK, duration_s=time.perf_counter() - started)
    return _record(run, row, latencies_ms=document.get("latencies_ms", []), agent=document.get("interface"), **extra)


# ---------------------------------------------------------------- the whole run
def dispatch(jobs: Sequence[TargetJob], executor: Optional[Executor] = None,
             progress: Progress = SILENT) -> List[Dict[str, Any]]:
    """Run every target's job concurrently, one worker per device; a broken job never stops the others."""
    if not jobs:
        return []
    own = executor is None
    executor = executor or ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="device")
    rows: List[Dict[str, Any]] = []
    try:
        futures = {executor.submit(run_target_job, job, progress): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                rows.extend(future.result())
            except Exception as exc:  # a bug in one device's job: its unfinished cells are lost, others go on
                log.exception("job for %s crashed", job.target.name)
                run = RunDir(Path(job.run_root))
                for cell in job.cells:
                    if not run.cell_path(cell.cell_id).exists():
                        rows.append(_record(run, failed_row(run.run_id, cell, LOST, "harness_error",
                                                            f"{type(exc).__name__}: {exc}")))
    finally:
        if own:
            executor.shutdown(wait=True)
    return rows


def plan_cells(artifacts: Sequence[Artifact], targets: Sequence[TargetSpec]) -> List[Cell]:
    return [Cell(a, t.name) for t in targets for a in artifacts]


def run_profile(recipes: Sequence[Any], targets: Sequence[TargetSpec], variants: Optional[Dict[str, List[str]]] = None,
                settings: RunSettings = RunSettings(), run_id: Optional[str] = None,
                reports_dir: Path = REPORTS_DIR, cache: Optional[ContentCache] = None,
                progress: Progress = SILENT, executor: Optional[Executor] = None, resume: bool = False,
                write_report: bool = True) -> RunOutcome:
    """Build every (model, variant, format) artifact, profile it on every target, collate.

    variants maps a model name to the variant names to make (default: none, the reference only).
    With resume=True and an existing run_id, only cells without a result (or lost ones) run.
    """
    cache = cache or ContentCache()
    variants = variants or {}
    run_id = run_id or new_run_id()
    run = RunDir.create(run_id, reports_dir)
    artifacts: List[Artifact] = []
    evals: Dict[str, ModelEval] = {}
    for recipe in recipes:
        prepared, model_artifacts = build_model_artifacts(recipe, variants.get(recipe.name, []), cache, progress)
        artifacts += model_artifacts
        evals[recipe.name] = ModelEval(recipe.name, str(prepared.eval_inputs_path.resolve()),
                                       str(prepared.labels_path.resolve()),
                                       str(prepared.reference_outputs_path.resolve()), prepared.reference_accuracy)
    built = sum(1 for a in artifacts if not a.cached and not a.error)
    reused = sum(1 for a in artifacts if a.cached)
    if built == 0:
        progress(f"cache: all {reused} artifacts reused, nothing converted")
    else:
        progress(f"cache: {built} artifacts converted, {reused} reused")
    cells = plan_cells(artifacts, targets)
    if resume:
        done = {c["row"]["cell_id"] for c in run.iter_cells() if c["row"]["status"] != LOST}
        cells = [c for c in cells if c.cell_id not in done]
        progress(f"resume {run_id}: {len(done)} cells already done, {len(cells)} to run")
    manifest = {"run_id": run_id, "created_at": _now(), "models": [r.name for r in recipes],
                "model_sources": [r.source_path for r in recipes],
                "variants": {r.name: variants.get(r.name, []) for r in recipes},
                "targets": [t.name for t in targets], "target_sources": [t.source_path for t in targets],
                "settings": asdict(settings),
                "artifacts": [{k: v for k, v in asdict(a).items()} for a in artifacts],
                "planned_cells": [c.cell_id for c in plan_cells(artifacts, targets)]}
    if resume and run.manifest_path.exists():
        manifest["resumed_at"] = _now()
    run.write_manifest(manifest)
    progress(f"run {run_id}: {len(cells)} cells on {len(targets)} target(s)")
    jobs = []
    for target in targets:
        target_cells = tuple(c for c in cells if c.target == target.name)
        if target_cells:
            jobs.append(TargetJob(target, target_cells, evals, str(run.root.resolve()), settings))
    dispatch(jobs, executor, progress)
    return collate(run, targets, write_report=write_report, progress=progress, built=built, reused=reused)


def collate(run: RunDir, targets: Sequence[TargetSpec] = (), write_report: bool = True,
            progress: Progress = SILENT, built: int = 0, reused: int = 0) -> RunOutcome:
    """Collect every cell written so far into the results tables (and the report)."""
    frame = results_frame(run.rows())
    run.write_tables(frame)
    planned = set(run.read_manifest().get("planned_cells", [])) if run.manifest_path.exists() else set()
    missing = sorted(planned - set(frame["cell_id"])) + sorted(frame.loc[frame["status"] == LOST, "cell_id"])
    outcome = RunOutcome(run, frame, built, reused, missing)
    if write_report:
        _write_reports(run, targets, progress)
    return outcome


def _write_reports(run: RunDir, targets: Sequence[TargetSpec], progress: Progress) -> None:
    """Report and history are derived data: their failure must never lose the measured results."""
    try:
        from .report import write_report
        path = write_report(run, {t.name: t for t in targets})
        progress(f"report: {path}")
    except Exception as exc:
        log.exception("report failed")
        progress(f"report could not be written ({type(exc).__name__}: {exc}); results tables are complete")
    try:
        from .history import record_run
        record_run(run)
    except Exception as exc:
        log.exception("history failed")
        progress(f"history not updated ({type(exc).__name__}: {exc})")

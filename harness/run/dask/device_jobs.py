"""Device jobs on dask workers: a target's job runs on a worker (one with the resource `site-<site>` where the
target names a site), with its files sent as bytes; each record it writes streams home as a dask event."""
from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Sequence, Set

from harness.core.files import atomic_write_bytes
from harness.core.progress import SILENT, Progress
from harness.run.device_job import run_target_job
from harness.run.plan import TargetJob
from harness.run.rows import failed_row, record_cell
from harness.schema.results import LOST, Category
from harness.schema.rundir import RunDir
from harness.run.dask.workers import (Bundle, EventProgress, SITE_SHARE, client_address, as_finished, emit_event,
                                      scheduler_of, this_worker, worker_name, worker_scratch)

log = logging.getLogger("harness.run.dask")

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
    """On a worker: one target's job, as harness.run.device_job.run_target_job runs it, streaming each record home."""
    import shutil

    from distributed import Event

    from harness.schema.rundir import watch_writes

    me = worker_name()
    # dask reschedules a task whose worker died; a device job must not run twice (its first cells are recorded)
    started = Event(f"harness-job-{remote.token}")
    if started.is_set():
        return JobResult(remote.token, me, {}, 0, refused="the job had started on a worker that died")
    started.set()
    worker = this_worker()
    emit_event(remote.topic, {"type": "started", "job": remote.token, "name": me,
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
        emit_event(remote.topic, message)

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
            for future in as_finished(self.client, submitted, self.strand):
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
                    f"with `dask worker {client_address(self.client)} --resources \"{need}=1\"`")
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
        address = scheduler_of(self.client)
        for cell in lost:
            record_cell(run, failed_row(run.run_id, cell, LOST, Category.WORKER_LOST.value,
                                        f"{reason}; `harness run --resume {run.run_id} --scheduler {address}` "
                                        "runs it on the remaining workers"))
        if lost:
            self.progress(f"[{state.job.target.name}] {len(lost)} cell(s) lost: {reason}")

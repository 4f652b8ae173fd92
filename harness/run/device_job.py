"""One device's job: open the transport, probe the device, pin its storage, run each cell in order, then the
repeats round by round. Never raises for a device problem: an unreachable device or one lost mid-run turns the
remaining cells into 'lost' rows that say why."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from harness.agent.agent import Doc, STATUS_OK
from harness.core.errors import ConnectError, DeviceTimeout, HarnessError, HostDiskFull, TransportError
from harness.core.progress import SILENT, Progress
from harness.judge.verdict import device_failure
from harness.run import probe as device
from harness.run.cell_steps import (PushedCell, check_agent, describe_row, measure_while_slow, run_agent, run_cell,
                                     storage_trouble)
from harness.run.measurement import combine_repeats
from harness.run.plan import TargetJob
from harness.run.rows import CellEnded, failed_row, record_cell
from harness.run.storage import DeviceCache, DeviceStorage
from harness.run.transport import open_transport
from harness.schema.results import FAILED, LOST, Category, make_row
from harness.schema.rundir import RunDir


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

    target_file = target.source_path or f"targets/{target.name}.yaml"

    def lost_to_storage(exc: BaseException) -> bool:
        """The device answers but its workdir is full or cannot be written: a fix on the device, named, not a
        lost device. Returns True when it was that (the cells are recorded)."""
        category = storage_trouble(str(exc))
        if category == Category.DEVICE_STORAGE_READONLY:
            lose_rest(category.value, f"the device's workdir cannot be written ({exc}); remount it read-write, fix "
                      f"its permissions, or set `workdir:` in {target_file} to a writable directory, then "
                      f"`harness run --resume {run.run_id}`", status=FAILED)
        elif category == Category.DEVICE_DISK_FULL:
            lose_rest(category.value, f"the device's disk is full ({exc}); free space in its workdir or set "
                      f"`workdir:` in {target_file} to a larger disk, then `harness run --resume {run.run_id}`",
                      status=FAILED)
        return category is not None

    try:
        transport = open_transport(target)
    except HarnessError as exc:
        run.write_device(target.name, device.unreachable_probe(target.name, exc))
        if not lost_to_storage(exc):
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
            if not lost_to_storage(exc):
                lose_rest(Category.DEVICE_UNREACHABLE.value, f"health probe failed: {exc}")
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
        lost = False
        cannot_cool: Optional[str] = None
        while pending:
            cell = pending[0]
            try:
                row = run_cell(job, cell, transport, agent_path, available, uploaded_inputs, references, run,
                               measured, storage)
            except DeviceTimeout as exc:
                lose_rest(Category.DEVICE_TIMEOUT.value, f"{exc}. `harness run --resume {run.run_id}` measures "
                          "these cells once the device answers", running=True)
                lost = True
            except ConnectError as exc:
                lose_rest(Category.DEVICE_LOST.value, str(exc), running=True)
                lost = True
            except TransportError as exc:
                lose_rest(Category.DEVICE_LOST.value, f"{type(exc).__name__}: {exc}", running=True)
                lost = True
            except HostDiskFull as exc:  # nothing more can be recorded here: the cells left are missing, resumable
                progress(f"[{target.name}] stopped: {exc}")
                lost = True
            if lost:
                break
            pending.pop(0)
            rows.append(row)
            config = "" if cell.runtime_config.is_default else f"@{cell.runtime_config.name}"
            progress(f"[{target.name}] {total - len(pending)}/{total} {cell.artifact.model}/{cell.artifact.variant}/"
                     f"{cell.artifact.format}{config}: {describe_row(row)}")
            if cannot_cool is None and target.quiet.cooldown_below_c is not None and row.get("cooled") is None \
                    and str(row.get("temperature_method") or "").startswith("not measured"):
                cannot_cool = f"[{target.name}] quiet.cooldown_below_c is set but the device has no temperature " \
                              f"to cool by ({row['temperature_method']}): its cells do not wait"
                progress(cannot_cool)  # said once per device, not per cell
        if lost:
            return rows  # nothing more is asked of a device that stopped answering; its pin expires by itself
        if settings.repeats > 1 and measured:
            rows = repeat_timings(job, transport, agent_path, run, measured, rows, progress)
        storage.unpin()  # also removes the run's folder on the device: its results are all here
    finally:
        transport.close()
    return rows

def repeat_timings(job: TargetJob, transport, agent_path: str, run: RunDir,
                   measured: Dict[str, Tuple[PushedCell, List[Dict[str, Any]]]], rows: List[Dict[str, Any]],
                   progress: Progress = SILENT) -> List[Dict[str, Any]]:
    """repeats 2..n: the measured cells timed again, round by round across the device's cells (A B C A B C),
    so drift on the device hits every cell alike; then each cell's row and record carry all its repeats.
    A repeat that fails is left out (the cell keeps the ones it has); a lost device ends the rounds."""
    target, settings = job.target, job.settings
    cells = {c.cell_id: c for c in job.cells}
    remeasured: Dict[str, List[Dict[str, Any]]] = {cell_id: [] for cell_id in measured}
    try:
        for k in range(2, settings.repeats + 1):
            for cell_id, (pushed, documents) in measured.items():
                def timing_run(again: int, cell_id: str = cell_id, pushed: PushedCell = pushed,
                               k: int = k) -> Dict[str, Any]:
                    return check_agent(run_agent(transport, job, cells[cell_id], pushed, agent_path, run,
                                                 repeat=k, again=again))
                try:
                    document = timing_run(0)
                except CellEnded as ended:
                    progress(f"[{target.name}] repeat {k} of {cell_id} left out: {ended.message}")
                    continue
                if document.get(Doc.STATUS) == STATUS_OK:
                    # a repeat measured on a slow device (its speed reference past quiet.max_reference_drift)
                    # is measured again, right away, in a fresh agent process
                    document, notes = measure_while_slow(timing_run, document, target.quiet, repeat=k)
                    remeasured[cell_id] += notes
                    if notes:
                        progress(f"[{target.name}] repeat {k} of {cell_id} measured {len(notes)} more time(s): "
                                 f"{notes[-1]['reason']}")
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
        fields, extras = combine_repeats(documents, target.quiet, threads,
                                         (record.get("remeasured") or []) + remeasured.get(cell_id, []))
        record["row"] = make_row(**{**record["row"], **fields})
        record.update(extras)
        run.write_cell(record)
        updated[cell_id] = record["row"]
    return [updated.get(str(r.get("cell_id")), r) for r in rows]

def lose_unfinished(job: TargetJob, message: str) -> None:
    """Each cell of the job without a record yet, recorded lost (harness_error) with message."""
    run = RunDir(Path(job.run_root))
    for cell in job.cells:
        if not run.cell_path(cell.cell_id).exists():
            record_cell(run, failed_row(run.run_id, cell, LOST, Category.HARNESS_ERROR.value, message))

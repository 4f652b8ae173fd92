"""The CI contract: what a run's cells mean as an exit code, and how a device error becomes a row.

Pure: statuses and error categories in, numbers and strings out.

    harness profile / harness farm run
        0  every planned cell was measured (ok) or deliberately skipped
        1  cells failed for model reasons: the artifact was incompatible, or it
           ran and broke (load_failed, inference_failed, crashed, oom_killed, ...)
        2  infrastructure failed: a device was lost, unreachable, busy, its host
           key changed, an upload failed, or a planned cell has no row at all

    harness gate
        0  pass   1  fail   2  could not judge (cells noisy or not measured)

Infrastructure outranks model failures: an exit 2 run is incomplete, and what
it did not measure may hide more failures, so it must be re-run before anyone
reads its failures as the whole story. The CLI's own errors keep their codes
(2 for a harness error before the run, 3 for a configuration error).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple

from harness.core.errors import DeviceBusy, HostKeyChanged
from harness.schema.results import FAILED, INCOMPATIBLE, LOST, OK, SKIPPED, Category

EXIT_PASS, EXIT_CELLS_FAILED, EXIT_INFRASTRUCTURE = 0, 1, 2
#: `harness gate`: the gate passed / found violations / could not judge
GATE_PASS, GATE_FAIL, GATE_NOT_JUDGED = 0, 1, 2

#: error categories that say the device or the link broke, not the model
INFRASTRUCTURE_CATEGORIES = frozenset(c.value for c in (
    Category.DEVICE_UNREACHABLE, Category.DEVICE_LOST, Category.WORKER_LOST, Category.DEVICE_BUSY,
    Category.HOST_KEY_CHANGED, Category.UPLOAD_FAILED, Category.HARNESS_ERROR, Category.RUNTIME_MISSING,
    Category.CACHE_CORRUPTED, Category.DEVICE_DISK_FULL, Category.DEVICE_TIMEOUT, Category.DEVICE_STORAGE_READONLY,
    Category.HOST_DISK_FULL))
#: a changed host key: a security event, never a routine 'lost' device
HOST_KEY_CHANGED = Category.HOST_KEY_CHANGED.value


@dataclass(frozen=True)
class RunVerdict:
    exit_code: int
    #: one line for a terminal or the top of a CI summary
    summary: str
    n_cells: int
    n_measured: int
    n_skipped: int
    #: cell ids that failed for model reasons
    model_failures: Tuple[str, ...]
    #: cell ids that failed for infrastructure reasons, and planned cells with no row
    infrastructure_failures: Tuple[str, ...]


def is_infrastructure_failure(status: Any, category: Any) -> bool:
    """True when a row's status and error_category blame the device or the link, not the model."""
    if status == LOST:
        return True
    return status == FAILED and str(category or "") in INFRASTRUCTURE_CATEGORIES


def run_verdict(rows: Iterable[Mapping[str, Any]], missing: Sequence[str] = ()) -> RunVerdict:
    """The exit code of `harness profile` / `farm run` for a run's rows.

    `missing` lists planned cells with no row (or lost ones: counting them
    twice does no harm, each cell is counted once).
    """
    measured, skipped, model, infra = [], [], [], []
    seen = set()
    for row in rows:
        cell = str(row.get("cell_id"))
        seen.add(cell)
        status, category = row.get("status"), row.get("error_category")
        if status == OK:
            measured.append(cell)
        elif status == SKIPPED:
            skipped.append(cell)
        elif is_infrastructure_failure(status, category):
            infra.append(cell)
        elif status in (FAILED, INCOMPATIBLE):
            model.append(cell)
        else:  # an unknown status is not a pass
            infra.append(cell)
    infra += [c for c in missing if c not in seen and c not in infra]
    n_cells = len(seen) + len([c for c in missing if c not in seen])
    if infra:
        code = EXIT_INFRASTRUCTURE
        summary = (f"INCOMPLETE: {len(infra)} of {n_cells} cell(s) not measured for infrastructure reasons "
                   f"(lost, unreachable, timed out, busy, full or read-only storage, host key, upload)" +
                   (f"; {len(model)} failed for model reasons" if model else "") + "; re-run them")
    elif model:
        code = EXIT_CELLS_FAILED
        summary = f"CELLS FAILED: {len(model)} of {n_cells} cell(s) failed or are incompatible"
    else:
        code = EXIT_PASS
        summary = f"OK: {len(measured)} of {n_cells} cell(s) measured" + (
            f", {len(skipped)} skipped by design" if skipped else "")
    return RunVerdict(code, summary, n_cells, len(measured), len(skipped), tuple(model), tuple(infra))


def run_exit_code(frame: Any, missing: Sequence[str] = ()) -> int:
    """`run_verdict(...).exit_code` for a results DataFrame (or a list of rows)."""
    rows: List[Mapping[str, Any]] = frame.to_dict(orient="records") if hasattr(frame, "to_dict") else list(frame)
    return run_verdict(rows, missing).exit_code


def device_failure(exc: BaseException) -> Tuple[str, str]:
    """(status, error_category) for a device that could not be opened (connecting or the health probe).

    A changed host key is ('failed', 'host_key_changed'), never lost; a held device lock is ('failed',
    'device_busy'); any other failure is ('lost', 'device_unreachable'). A device lost while a cell ran is
    the device job's own 'device_lost'.
    """
    if isinstance(exc, HostKeyChanged):
        return FAILED, HOST_KEY_CHANGED
    if isinstance(exc, DeviceBusy):
        return FAILED, Category.DEVICE_BUSY.value
    return LOST, Category.DEVICE_UNREACHABLE.value


def gate_exit_code(passed: bool, n_not_judged: int = 0, n_judged: Optional[int] = None) -> int:
    """`harness gate`: 1 on any violation; otherwise 2 if anything was left unjudged, else 0.

    A violation is a verdict even when other cells could not be judged, so
    it wins; 'could not judge' is returned only where nothing failed but
    something needs a re-run (noisy cells, too few samples) or nothing was
    judged at all.
    """
    if not passed:
        return GATE_FAIL
    if n_not_judged or n_judged == 0:
        return GATE_NOT_JUDGED
    return GATE_PASS

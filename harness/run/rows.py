"""How a cell ends: its result row (measured, or failed with a category and message), written into the run
the moment the cell finishes, so nothing measured is ever lost."""
from __future__ import annotations

from typing import Any, Dict

from harness.run.plan import Cell, _now
from harness.schema.results import Category, make_row
from harness.schema.rundir import RunDir


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

class CellEnded(Exception):
    """A step ended the cell early; the row says how."""

    def __init__(self, status: str, category: Category, message: str):
        super().__init__(message)
        self.status, self.category, self.message = status, category, message

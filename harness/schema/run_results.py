"""One run's results, read once: its manifest, every cell record, the results table and the device probes.

Collation builds it from the cells the devices wrote (and writes the tables once); `harness gate`,
`harness report` and `harness history` load it once from a run directory. The summary, the report, the
history store and the gate are all handed the same object, so no reader opens the run's files again.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from harness.schema.pairing import MANIFEST_KEY as PAIRED_KEY
from harness.schema.results import needs_rerun, results_frame
from harness.schema.rundir import RunDir

log = logging.getLogger("harness.schema.run_results")


@dataclass
class RunResults:
    """A run as data. `frame` is the results table (harness.schema.results.COLUMNS, a pandas DataFrame);
    `cells` the full cell records (row, latency samples, interface, outputs summary, diagnostics)."""

    run_dir: RunDir
    manifest: Dict[str, Any]
    cells: List[Dict[str, Any]]
    frame: Any
    devices: Dict[str, Dict[str, Any]]
    #: artifacts this run's build converted / found in the cache (only known to the command that built them)
    built: int = 0
    reused: int = 0
    #: what happened to the run beyond its cells, for the summary and the report (e.g. history not recorded)
    notes: List[str] = field(default_factory=list)
    _rows: Optional[List[Dict[str, Any]]] = field(default=None, repr=False)

    @classmethod
    def load(cls, run_dir: RunDir, manifest: Optional[Mapping[str, Any]] = None) -> "RunResults":
        """Read a run directory: the manifest once (unless the caller, who wrote it, hands it in), each cell record
        once, the device probes once. The table is made from the cell records (the authority; results.parquet is
        their copy for other tools)."""
        manifest = dict(manifest) if manifest is not None else _read_manifest(run_dir)
        cells = list(run_dir.iter_cells()) if (run_dir.root / "cells").is_dir() else []
        devices = run_dir.devices() if (run_dir.root / "devices").is_dir() else {}
        frame = results_frame(c["row"] for c in cells)
        return cls(run_dir, manifest, cells, frame, devices)

    @property
    def run_id(self) -> str:
        return self.run_dir.run_id

    @property
    def root(self):
        return self.run_dir.root

    @property
    def rows(self) -> List[Dict[str, Any]]:
        """The table's rows as plain dicts (made once)."""
        if self._rows is None:
            self._rows = [dict(r) for r in self.frame.to_dict(orient="records")]
        return self._rows

    @property
    def targets(self) -> List[str]:
        return sorted({str(t) for t in self.frame["target"]})

    @property
    def pairs(self) -> Dict[str, str]:
        """A paired run's baseline twins: twin model -> candidate model (harness.schema.pairing)."""
        return dict(self.manifest.get(PAIRED_KEY) or {})

    @property
    def started_at(self) -> Optional[str]:
        value = self.manifest.get("started_at") or self.manifest.get("created_at")
        return str(value) if value else None

    @property
    def missing(self) -> List[str]:
        """Cells a resume would run: planned but without a record, then lost or failed busy ones."""
        planned = set(self.manifest.get("planned_cells", []))
        rerun = [str(r["cell_id"]) for r in self.rows if needs_rerun(r)]
        return sorted(planned - {str(c) for c in self.frame["cell_id"]}) + sorted(rerun)

    @property
    def diagnostics(self) -> Dict[str, str]:
        """A converter's whole text per failed cell (the row's message is its most specific line)."""
        return {str(c["row"]["cell_id"]): str(c["diagnostic"]) for c in self.cells if c.get("diagnostic")}

    def latency_samples(self) -> Dict[str, Any]:
        """Latency samples (ms) by cell_id: one array, or one per repeat.

        A cell measured in several repeats keeps them apart (`repeat_latencies_ms`, a list of lists), because
        the regression judge needs each repeat's median; a cell of one repeat has the flat `latencies_ms`.
        """
        samples: Dict[str, Any] = {}
        for cell in self.cells:
            repeats = cell.get("repeat_latencies_ms")
            values = cell.get("latencies_ms")
            if repeats and len(repeats) > 1:
                samples[str(cell["row"]["cell_id"])] = [np.asarray(r, dtype=np.float64) for r in repeats]
            elif values:
                samples[str(cell["row"]["cell_id"])] = np.asarray(values, dtype=np.float64)
        return samples

    def write_tables(self) -> None:
        """results.csv, results.parquet and results.json, from the table in memory."""
        self.run_dir.write_tables(self.frame)


def _read_manifest(run_dir: RunDir) -> Dict[str, Any]:
    if not run_dir.manifest_path.exists():
        return {}
    try:
        manifest = run_dir.read_manifest()
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", run_dir.manifest_path, exc)
        return {}
    return manifest if isinstance(manifest, Mapping) else {}


"""Collation: every cell the devices wrote, read once into the run's results (harness.schema.run_results) and
written out once as results.csv, results.parquet and results.json. The report and the history store are handed
the same object by the command that wires them (harness.commands.publish)."""
from __future__ import annotations

from typing import Any, Mapping, Optional

from harness.schema.run_results import RunResults
from harness.schema.rundir import RunDir


def collate(run: RunDir, manifest: Optional[Mapping[str, Any]] = None, built: int = 0, reused: int = 0) -> RunResults:
    """The run's results, with its tables written. `manifest`: the one the run just wrote (not read back);
    `built`/`reused`: artifacts the build converted / found in the cache."""
    results = RunResults.load(run, manifest)
    results.built, results.reused = built, reused
    results.write_tables()
    return results

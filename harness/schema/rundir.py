"""Layout of one run's directory, `reports/<run-id>/`, and its incremental writes.

    manifest.json          what the run planned: models, variants, formats, targets, settings
    cells/<cell_id>.json   one per finished cell, written the moment it finishes:
                           {"row": {results columns}, "latencies_ms": [...], "interface": {...}}
    outputs/<cell_id>.npz  the cell's outputs for every evaluation sample
    devices/<target>.json  the health probe of each device
    results.csv / results.parquet / results.json   the collated table (harness.schema.results.COLUMNS)

Writes are atomic (temporary name, then rename), so a killed host controller
loses nothing that was measured and never leaves half a file.
"""
from __future__ import annotations

import datetime as _dt
import json
import uuid
from harness.core.names import is_valid_name
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional
from harness.core.files import atomic_write_text, raise_if_disk_full

REPORTS_DIR = Path("reports")
#: the run reference that means the newest run with a results table
LATEST = "latest"

#: callbacks that see every cell and device record a RunDir writes under a root, by the written path. A dask
#: worker's device job writes into its own scratch copy of the run and streams each record to the host this way
#: (harness.run.dask); nothing is registered in an ordinary run.
_WATCHERS: Dict[str, Callable[[Path], None]] = {}


@contextmanager
def watch_writes(root: Path, callback: Callable[[Path], None]) -> Iterator[None]:
    """Call callback(path) after each cell or device record written under root, while the block runs."""
    key = str(Path(root).resolve())
    _WATCHERS[key] = callback
    try:
        yield
    finally:
        _WATCHERS.pop(key, None)


def _notify(root: Path, path: Path) -> None:
    if _WATCHERS:
        callback = _WATCHERS.get(str(Path(root).resolve()))
        if callback is not None:
            callback(path)


def new_run_id(now: Optional[_dt.datetime] = None) -> str:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_json_atomic(path: Path, document: Any) -> None:
    atomic_write_text(path, json.dumps(document, indent=1, default=_json_default, allow_nan=True))


class RunDir:
    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def create(cls, run_id: str, reports_dir: Path = REPORTS_DIR) -> "RunDir":
        if not is_valid_name(run_id):
            raise ValueError(f"run id {run_id!r} must be letters, digits, '_', '-' or '.'")
        run = cls(Path(reports_dir) / run_id)
        for sub in ("cells", "outputs", "devices"):
            try:
                (run.root / sub).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise_if_disk_full(exc, run.root / sub)
                raise
        return run

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def cell_path(self, cell_id: str) -> Path:
        return self.root / "cells" / f"{cell_id}.json"

    def outputs_path(self, cell_id: str) -> Path:
        return self.root / "outputs" / f"{cell_id}.npz"

    def device_path(self, target: str) -> Path:
        return self.root / "devices" / f"{target}.json"

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        write_json_atomic(self.manifest_path, manifest)

    def read_manifest(self) -> Dict[str, Any]:
        return json.loads(self.manifest_path.read_text())

    def write_cell(self, record: Mapping[str, Any]) -> None:
        write_json_atomic(self.cell_path(record["row"]["cell_id"]), record)
        _notify(self.root, self.cell_path(record["row"]["cell_id"]))

    def iter_cells(self) -> Iterator[Dict[str, Any]]:
        for path in sorted((self.root / "cells").glob("*.json")):
            yield json.loads(path.read_text())

    def rows(self) -> List[Dict[str, Any]]:
        return [cell["row"] for cell in self.iter_cells()]

    def write_device(self, target: str, probe: Mapping[str, Any]) -> None:
        write_json_atomic(self.device_path(target), probe)
        _notify(self.root, self.device_path(target))

    def devices(self) -> Dict[str, Dict[str, Any]]:
        return {p.stem: json.loads(p.read_text()) for p in sorted((self.root / "devices").glob("*.json"))}

    def write_tables(self, frame) -> Dict[str, Path]:
        """results.csv, results.parquet and results.json from the collated frame."""
        paths = {"csv": self.root / "results.csv", "parquet": self.root / "results.parquet",
                 "json": self.root / "results.json"}
        for kind, path in paths.items():
            try:
                if kind == "csv":
                    frame.to_csv(path, index=False)
                elif kind == "parquet":
                    frame.to_parquet(path, index=False)
                else:
                    frame.to_json(path, orient="records", indent=1)
            except OSError as exc:
                raise_if_disk_full(exc, path)
                raise
        return paths


def resolve_run(ref: str, reports_dir: Path = REPORTS_DIR) -> RunDir:
    """`reports/<ref>/`, or with ref 'latest' the newest run that has a results.parquet. A run that does not
    exist is a ConfigError (the user named it: exit 3) listing the recent ones."""
    from harness.core.errors import ConfigError
    reports_dir = Path(reports_dir)
    if ref == LATEST:
        runs = [p.parent for p in reports_dir.glob("*/results.parquet")]
        if not runs:
            raise ConfigError(reports_dir, "holds no run with a results.parquet; run `harness profile` first")
        return RunDir(max(runs, key=lambda p: ((p / "results.parquet").stat().st_mtime, p.name)))
    candidate = Path(ref)
    if candidate.is_dir() and (candidate / "cells").is_dir():
        return RunDir(candidate)
    path = reports_dir / ref
    if not path.is_dir():
        known = sorted(p.name for p in reports_dir.iterdir() if p.is_dir())[-5:] if reports_dir.is_dir() else []
        raise ConfigError(path, f"no such run directory; recent runs: {', '.join(known) or 'none'} "
                          "(or pass 'latest')")
    return RunDir(path)

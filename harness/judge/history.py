"""Run history in a local SQLite file, so nightly runs build a series.

The embedded default store is `.harness/history.sqlite` (git-ignored). Every
run is appended with its result rows, every numeric column in long form
(metric, value) for series queries, and each cell's per-iteration latency
samples for regression tests against a later run. Recording a run again
replaces its cells but keeps its place in the order and its gate verdict.

Also here: finding a run directory by id (or `latest`) and reading its table
and latency samples, since recording is the first thing that needs them.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np

from harness.core.errors import HarnessError
from harness.schema.results import COLUMNS, FAILED, LOST, OK, results_frame
from harness.schema.rundir import REPORTS_DIR, RunDir
from harness.schema.results import records

DEFAULT_DB_PATH = Path(".harness/history.sqlite")
LATEST = "latest"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    started_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    n_cells INTEGER NOT NULL,
    n_ok INTEGER NOT NULL,
    n_failed INTEGER NOT NULL,
    gate_passed INTEGER            -- NULL: never gated; 1 passed; 0 failed
);
CREATE TABLE IF NOT EXISTS cells (
    run_id TEXT NOT NULL, cell_id TEXT NOT NULL,
    model TEXT, variant TEXT, format TEXT, target TEXT, status TEXT,
    row_json TEXT NOT NULL,
    PRIMARY KEY (run_id, cell_id)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, cell_id TEXT NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (run_id, cell_id, metric)
);
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL, cell_id TEXT NOT NULL, latencies_ms TEXT NOT NULL,
    PRIMARY KEY (run_id, cell_id)
);
CREATE INDEX IF NOT EXISTS cells_by_model_target ON cells (model, target);
"""


# ---------------------------------------------------------------- reading run directories
def resolve_run(ref: str, reports_dir: Path = REPORTS_DIR) -> RunDir:
    """`reports/<ref>/`, or with ref 'latest' the newest run that has a results.parquet."""
    reports_dir = Path(reports_dir)
    if ref == LATEST:
        runs = [p.parent for p in reports_dir.glob("*/results.parquet")]
        if not runs:
            raise HarnessError(f"no run with a results.parquet under {reports_dir}/; run `harness profile` first")
        return RunDir(max(runs, key=lambda p: ((p / "results.parquet").stat().st_mtime, p.name)))
    candidate = Path(ref)
    if candidate.is_dir() and (candidate / "cells").is_dir():
        return RunDir(candidate)
    path = reports_dir / ref
    if not path.is_dir():
        known = sorted(p.name for p in reports_dir.iterdir() if p.is_dir())[-5:] if reports_dir.is_dir() else []
        raise HarnessError(f"no run directory {path}; recent runs: {', '.join(known) or 'none'} "
                           f"(or pass 'latest')")
    return RunDir(path)


def load_run_table(run_dir: RunDir):
    """The run's collated table: results.parquet, else the rows of cells/*.json."""
    parquet = run_dir.root / "results.parquet"
    if parquet.exists():
        import pandas as pd
        return pd.read_parquet(parquet)
    return results_frame(run_dir.rows())


def load_latency_samples(run_dir: RunDir) -> Dict[str, Any]:
    """Latency samples (ms) by cell_id, from cells/*.json: one array, or one per repeat.

    A cell measured in several repeats keeps them apart (`repeat_latencies_ms`,
    a list of lists), because the regression judge needs each repeat's median;
    a cell of one repeat has the flat `latencies_ms`.
    """
    samples: Dict[str, Any] = {}
    for cell in run_dir.iter_cells():
        repeats = cell.get("repeat_latencies_ms")
        values = cell.get("latencies_ms")
        if repeats and len(repeats) > 1:
            samples[str(cell["row"]["cell_id"])] = [np.asarray(r, dtype=np.float64) for r in repeats]
        elif values:
            samples[str(cell["row"]["cell_id"])] = np.asarray(values, dtype=np.float64)
    return samples


def _samples_json(values: Any) -> Optional[str]:
    """One repeat as a flat list, several as a list of lists; None when there is nothing."""
    from harness.judge.regression import as_repeats
    repeats = [r for r in as_repeats(values) if len(r)]
    if not repeats:
        return None
    if len(repeats) == 1:
        return json.dumps([float(v) for v in repeats[0]])
    return json.dumps([[float(v) for v in r] for r in repeats])


def _samples_from_json(text: str) -> Any:
    data = json.loads(text)
    if data and isinstance(data[0], list):
        return [np.asarray(r, dtype=np.float64) for r in data]
    return np.asarray(data, dtype=np.float64)


def _plain(value: Any) -> Any:
    """A JSON-safe scalar: numpy to Python, NaN/NA to None."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        import pandas as pd
        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    return value


def _records(frame: Any) -> List[Dict[str, Any]]:
    return [{k: _plain(v) for k, v in r.items()} for r in records(frame)]


# ---------------------------------------------------------------- the store
@dataclass(frozen=True)
class RunInfo:
    seq: int
    run_id: str
    started_at: str
    recorded_at: str
    n_cells: int
    n_ok: int
    n_failed: int
    gate_passed: Optional[bool]


@dataclass(frozen=True)
class SeriesPoint:
    run_id: str
    started_at: str
    variant: str
    format: str
    status: str
    value: Optional[float]
    gate_passed: Optional[bool]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _gate(value: Any) -> Optional[bool]:
    return None if value is None else bool(value)


class History:
    """The SQLite store at `path` (created with its tables on first use)."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path is not None else DEFAULT_DB_PATH

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=30.0)
        except sqlite3.Error as exc:
            raise HarnessError(f"cannot open history store {self.path}: {exc}") from None
        try:
            conn.row_factory = sqlite3.Row
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            with conn:
                yield conn
        except sqlite3.DatabaseError as exc:
            raise HarnessError(f"history store {self.path} is unusable ({exc}); move it aside to start afresh") \
                from None
        finally:
            conn.close()

    # -------------------------------------------------------- writing
    def record(self, run_id: str, rows: Sequence[Mapping[str, Any]], samples: Mapping[str, Sequence[float]],
               started_at: Optional[str] = None, gate_passed: Optional[bool] = None) -> RunInfo:
        """Append (or replace) one run's rows and samples; returns what was stored."""
        rows = [{k: _plain(v) for k, v in r.items()} for r in rows]
        starts = sorted(str(r["started_at"]) for r in rows if r.get("started_at"))
        started = started_at or (starts[0] if starts else _now())
        statuses = [r.get("status") for r in rows]
        n_ok, n_failed = statuses.count(OK), statuses.count(FAILED) + statuses.count(LOST)
        numeric = [c for c in COLUMNS if c not in ("run_id", "cell_id")]
        with self.connect() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, started_at, recorded_at, n_cells, n_ok, n_failed, gate_passed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET started_at=excluded.started_at, "
                "recorded_at=excluded.recorded_at, n_cells=excluded.n_cells, n_ok=excluded.n_ok, "
                "n_failed=excluded.n_failed, gate_passed=COALESCE(excluded.gate_passed, runs.gate_passed)",
                (run_id, started, _now(), len(rows), n_ok, n_failed,
                 None if gate_passed is None else int(gate_passed)))
            for table in ("cells", "metrics", "samples"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            for row in rows:
                cell = str(row["cell_id"])
                conn.execute("INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (run_id, cell, row.get("model"), row.get("variant"), row.get("format"),
                              row.get("target"), row.get("status"), json.dumps(row, default=str)))
                conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)",
                                 [(run_id, cell, c, float(row[c])) for c in numeric
                                  if isinstance(row.get(c), (int, float)) and not isinstance(row.get(c), bool)])
                stored = _samples_json(samples.get(cell))
                if stored is not None:
                    conn.execute("INSERT INTO samples VALUES (?, ?, ?)", (run_id, cell, stored))
        info = self.run(run_id)
        assert info is not None
        return info

    def mark_gate(self, run_id: str, passed: bool) -> None:
        with self.connect() as conn:
            if conn.execute("UPDATE runs SET gate_passed = ? WHERE run_id = ?",
                            (int(passed), run_id)).rowcount == 0:
                raise HarnessError(f"run {run_id!r} is not in the history store {self.path}; record it first")

    # -------------------------------------------------------- reading
    def run(self, run_id: str) -> Optional[RunInfo]:
        with self.connect() as conn:
            r = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if r is None else RunInfo(r["seq"], r["run_id"], r["started_at"], r["recorded_at"],
                                              r["n_cells"], r["n_ok"], r["n_failed"], _gate(r["gate_passed"]))

    def runs(self) -> List[RunInfo]:
        with self.connect() as conn:
            found = conn.execute("SELECT * FROM runs ORDER BY seq").fetchall()
        return [RunInfo(r["seq"], r["run_id"], r["started_at"], r["recorded_at"], r["n_cells"], r["n_ok"],
                        r["n_failed"], _gate(r["gate_passed"])) for r in found]

    def rows(self, run_id: str) -> List[Dict[str, Any]]:
        with self.connect() as conn:
            found = conn.execute("SELECT row_json FROM cells WHERE run_id = ? ORDER BY cell_id", (run_id,)).fetchall()
        return [json.loads(r["row_json"]) for r in found]

    def samples(self, run_id: str) -> Dict[str, Any]:
        """Latency samples by cell_id: one array, or one array per repeat."""
        with self.connect() as conn:
            found = conn.execute("SELECT cell_id, latencies_ms FROM samples WHERE run_id = ?", (run_id,)).fetchall()
        return {r["cell_id"]: _samples_from_json(r["latencies_ms"]) for r in found}

    def run_level_medians(self, key: Sequence[str], before_run: Optional[str] = None) -> List[float]:
        """The run-level median (ms) of one cell key in every recorded run, oldest first (run_level_figures)."""
        return self.run_level_figures(key, before_run, "median")

    def run_level_figures(self, key: Sequence[str], before_run: Optional[str] = None,
                          figure: str = "median") -> List[float]:
        """The run-level `figure` (median, mean or p90, ms) of one cell key in every recorded run, oldest first.

        key is regression.history_key(row): (model, variant, format, target,
        runtime config...). Only ok cells not marked noisy count. The figure is
        exp(mean over repeats of log(repeat figure)) from the stored samples,
        or the row's latency_p50_ms / latency_mean_ms / latency_p90_ms where no
        samples were kept. With before_run, only runs recorded before that one
        (or all others, if it is not recorded) are used.
        """
        from harness.judge.regression import FIGURE_COLUMNS, history_key, run_level_figure
        model, variant, fmt, target = key[:4]
        current = self.run(before_run) if before_run else None
        with self.connect() as conn:
            found = conn.execute(
                "SELECT r.seq, c.run_id, c.row_json, s.latencies_ms FROM cells c JOIN runs r ON r.run_id = c.run_id "
                "LEFT JOIN samples s ON s.run_id = c.run_id AND s.cell_id = c.cell_id "
                "WHERE c.model = ? AND c.variant = ? AND c.format = ? AND c.target = ? AND c.status = ? "
                "ORDER BY r.seq", (model, variant, fmt, target, OK)).fetchall()
        values: List[float] = []
        for r in found:
            if r["run_id"] == before_run or (current is not None and r["seq"] >= current.seq):
                continue
            row = json.loads(r["row_json"])
            if tuple(history_key(row)) != tuple(key) or str(row.get("noisy")).lower() in ("true", "1", "1.0"):
                continue
            value = run_level_figure(_samples_from_json(r["latencies_ms"]), figure) if r["latencies_ms"] else None
            column = row.get(FIGURE_COLUMNS[figure])
            if value is None and isinstance(column, (int, float)) and column > 0:
                value = float(column)
            if value is not None:
                values.append(value)
        return values

    def run_spreads(self, rows: Sequence[Mapping[str, Any]], run_id: Optional[str] = None,
                    figure: str = "median") -> Dict[tuple, Any]:
        """regression.RunSpread of `figure` by history key for each ok row, from the runs before `run_id`."""
        from harness.judge.regression import between_run_spread, history_key
        spreads: Dict[tuple, Any] = {}
        for row in rows:
            if row.get("status") != OK:
                continue
            key = history_key(row)
            if key not in spreads:
                spreads[key] = between_run_spread(self.run_level_figures(key, before_run=run_id, figure=figure))
        return {k: v for k, v in spreads.items() if v is not None}

    def metrics(self) -> List[str]:
        with self.connect() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT metric FROM metrics ORDER BY metric")]

    def series(self, model: str, target: str, metric: str, variant: Optional[str] = None,
               fmt: Optional[str] = None) -> List[SeriesPoint]:
        """`metric` of every recorded cell of model on target, oldest run first.

        Cells that did not measure the metric (a failed cell) appear with value None.
        """
        if metric not in COLUMNS:
            raise HarnessError(f"unknown metric {metric!r}; numeric metrics: {', '.join(self.metrics()) or 'none yet'}")
        query = ("SELECT r.run_id, r.started_at, r.gate_passed, c.variant, c.format, c.status, m.value "
                 "FROM cells c JOIN runs r ON r.run_id = c.run_id "
                 "LEFT JOIN metrics m ON m.run_id = c.run_id AND m.cell_id = c.cell_id AND m.metric = ? "
                 "WHERE c.model = ? AND c.target = ?")
        params: List[Any] = [metric, model, target]
        if variant is not None:
            query += " AND c.variant = ?"
            params.append(variant)
        if fmt is not None:
            query += " AND c.format = ?"
            params.append(fmt)
        with self.connect() as conn:
            found = conn.execute(query + " ORDER BY r.seq, c.variant, c.format", params).fetchall()
        return [SeriesPoint(r["run_id"], r["started_at"], r["variant"], r["format"], r["status"], r["value"],
                            _gate(r["gate_passed"])) for r in found]

    def find_baseline(self, run_id: str, named: Optional[str] = None) -> Optional[str]:
        """The run to compare `run_id` with.

        `named` if given (it must be recorded); otherwise the newest run
        recorded before `run_id` that passed the gate; if no run was ever
        gated, the newest earlier run with no failed or lost cell. None when
        there is no such run.
        """
        if named:
            if self.run(named) is None:
                recent = ", ".join(r.run_id for r in self.runs()[-5:]) or "none"
                raise HarnessError(f"baseline run {named!r} is not in the history store {self.path}; "
                                   f"recent runs: {recent}")
            return named
        current = self.run(run_id)
        earlier = [r for r in self.runs() if r.run_id != run_id and (current is None or r.seq < current.seq)]
        passed = [r for r in earlier if r.gate_passed]
        if passed:
            return passed[-1].run_id
        if any(r.gate_passed is not None for r in earlier):
            return None
        clean = [r for r in earlier if r.n_failed == 0 and r.n_cells > 0]
        return clean[-1].run_id if clean else None


def _manifest_started_at(run_dir: RunDir) -> Optional[str]:
    try:
        manifest = run_dir.read_manifest()
    except (OSError, ValueError):
        return None
    value = manifest.get("started_at") or manifest.get("created_at")
    return str(value) if value else None


def record_run(run_dir: RunDir, db_path: Path | str | None = None,
               gate_passed: Optional[bool] = None) -> RunInfo:
    """Append a finished run (its table and latency samples) to the history store."""
    frame = load_run_table(run_dir)
    return History(db_path).record(run_dir.run_id, _records(frame), load_latency_samples(run_dir),
                                   started_at=_manifest_started_at(run_dir), gate_passed=gate_passed)

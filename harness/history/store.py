"""Run history, so nightly runs build a series: a local SQLite file, or a shared PostgreSQL database.

The embedded default store is `.harness/history.sqlite` (git-ignored); a
`postgresql://` URL (`--history`, or HARNESS_HISTORY) records into a server
that several recorders share, with the same tables and migrations. Every
run is appended with its result rows, every numeric column in long form
(metric, value) for series queries, and each cell's per-iteration latency
samples for regression tests against a later run. Recording a run again
replaces its cells but keeps its place in the order and its gate verdict.

A run is handed in as one RunResults (harness.schema.run_results), read once by its command.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence


from harness.core.errors import ConfigError, HarnessError
from harness.judge.regression import CellBaseline
from harness.judge.trends import cell_figure, latency_figures
from harness.schema.results import COLUMNS, FAILED, LOST, OK
from harness.history.tables import (GATE_FAILED, GATE_NOT_JUDGED, GATE_PASSED, IN_TIME, MIGRATIONS,
                                    PG_LOCK_TIMEOUT_MS, PG_MIGRATION_LOCK, PG_STATEMENT_TIMEOUT_MS, Connection,
                                    RunInfo, SeriesPoint, default_history_location, gate_status_of, gate_verdict,
                                    insert_trend_figures, is_postgres_url, now_iso, ok_cells_filter, places_in_time,
                                    plain_value, redact_url, run_info, runtime_config_words, samples_from_json,
                                    samples_json, stored_records, utc_iso)
from harness.schema.run_results import RunResults


class History:
    """The history store: a SQLite file (the default), or a PostgreSQL database given by a postgresql:// URL.

    Both hold the same tables (see MIGRATIONS), created and brought up to date on first use.
    """

    def __init__(self, path: Path | str | None = None):
        location = path if path is not None else default_history_location()
        if "://" in str(location) and not is_postgres_url(str(location)):
            raise ConfigError(redact_url(str(location)), "unknown kind of URL for a history store; give a SQLite "
                              "file path or postgresql://USER@HOST:PORT/DATABASE")
        self.url: Optional[str] = str(location) if is_postgres_url(str(location)) else None
        self.path = Path(location) if self.url is None else None
        self._migrated = False

    @property
    def where(self) -> str:
        """The store, fit to print: a path, or the URL without its password."""
        return redact_url(self.url) if self.url else str(self.path)

    def __str__(self) -> str:
        return self.where

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        if self.url:
            with self._connect_postgres() as conn:
                yield conn
            return
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            raw = sqlite3.connect(self.path, timeout=60.0)
        except sqlite3.Error as exc:
            raise HarnessError(f"cannot open history store {self.path}: {exc}") from None
        try:
            raw.row_factory = sqlite3.Row
            conn = Connection(raw, postgres=False)
            if not self._migrated:
                self._migrate(conn)
            with raw:
                yield conn
        except sqlite3.DatabaseError as exc:
            raise HarnessError(f"history store {self.path} is unusable ({exc}); move it aside to start afresh") \
                from None
        finally:
            raw.close()

    @contextlib.contextmanager
    def _connect_postgres(self) -> Iterator[Connection]:
        from harness.core.optional import require
        psycopg = require("psycopg", "a PostgreSQL history store")
        from psycopg.rows import dict_row
        assert self.url is not None
        try:
            # never wait without a word: a lock another connection holds, or a statement that hangs, ends with
            # an error that says what was waited for (PostgreSQL's lock_timeout / statement_timeout)
            raw = psycopg.connect(self.url, row_factory=dict_row, connect_timeout=10,
                                  options=f"-c lock_timeout={PG_LOCK_TIMEOUT_MS} "
                                          f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}")
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise HarnessError(f"history store {self.where} unreachable: {redact_url(reason)[:300]}") from None
        try:
            conn = Connection(raw, postgres=True)
            if not self._migrated:
                self._migrate(conn)
            with raw.transaction():
                yield conn
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            if "lock timeout" in reason:
                reason = (f"waited {PG_LOCK_TIMEOUT_MS / 1000:.0f} s for a table lock that another connection to "
                          f"the database holds ({reason}); find it in pg_stat_activity, then record the run again "
                          f"with `harness history --record RUN_ID`")
            elif "statement timeout" in reason:
                reason = f"a statement ran past {PG_STATEMENT_TIMEOUT_MS / 1000:.0f} s ({reason})"
            raise HarnessError(f"history store {self.where} failed: {redact_url(reason)[:400]}") from None
        finally:
            raw.close()

    def _migrate(self, conn: Connection) -> None:
        """Apply the migrations this store lacks, one recorder at a time."""
        dialect = "postgresql" if conn.postgres else "sqlite"
        if conn.postgres:
            with conn.raw.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(?)", (PG_MIGRATION_LOCK,))
                self._apply_migrations(conn, dialect)
        else:
            conn.raw.execute("BEGIN IMMEDIATE")  # the write lock: a second recorder waits here
            try:
                self._apply_migrations(conn, dialect)
                conn.raw.commit()
            except BaseException:
                conn.raw.rollback()
                raise
        self._migrated = True

    @staticmethod
    def _apply_migrations(conn: Connection, dialect: str) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                     "applied_at TEXT NOT NULL)")
        done = {int(r["version"]) for r in conn.execute("SELECT version FROM schema_version").fetchall()}
        for version in sorted(MIGRATIONS):
            if version in done:
                continue
            steps = MIGRATIONS[version]
            for statement in steps.get(dialect, []) + steps.get("common", []):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, now_iso()))

    def schema_version(self) -> int:
        with self.connect() as conn:
            return int(conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()["v"])

    # -------------------------------------------------------- writing
    def record(self, run_id: str, rows: Sequence[Mapping[str, Any]], samples: Mapping[str, Sequence[float]],
               started_at: Optional[str] = None, gate_passed: Optional[bool] = None,
               gate_status: Optional[str] = None) -> RunInfo:
        """Append (or replace) one run's rows and samples; returns what was stored.

        gate_status 'not_judged' records that the gate ran and could not judge the run (gate_passed stays
        NULL): such a run is listed with its status and never taken for a baseline.
        """
        gate_status = gate_status or gate_status_of(gate_passed)
        rows = [{k: plain_value(v) for k, v in r.items()} for r in rows]
        starts = sorted(str(r["started_at"]) for r in rows if r.get("started_at"))
        started = utc_iso(started_at or (starts[0] if starts else now_iso()))
        statuses = [r.get("status") for r in rows]
        n_ok, n_failed = statuses.count(OK), statuses.count(FAILED) + statuses.count(LOST)
        numeric = [c for c in COLUMNS if c not in ("run_id", "cell_id")]
        with self.connect() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, started_at, recorded_at, n_cells, n_ok, n_failed, gate_passed, "
                "gate_status) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET "
                "started_at=excluded.started_at, recorded_at=excluded.recorded_at, n_cells=excluded.n_cells, "
                "n_ok=excluded.n_ok, n_failed=excluded.n_failed, "
                "gate_passed=CASE WHEN excluded.gate_status IS NULL THEN runs.gate_passed "
                "ELSE excluded.gate_passed END, gate_status=COALESCE(excluded.gate_status, runs.gate_status)",
                (run_id, started, now_iso(), len(rows), n_ok, n_failed,
                 None if gate_passed is None or gate_status == GATE_NOT_JUDGED else int(gate_passed),
                 gate_status))
            for table in ("cells", "metrics", "samples", "trend_figures"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            for row in rows:
                cell = str(row["cell_id"])
                conn.execute("INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (run_id, cell, row.get("model"), row.get("variant"), row.get("format"),
                              row.get("target"), row.get("status"), json.dumps(row, default=str)))
                conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)",
                                 [(run_id, cell, c, float(row[c])) for c in numeric
                                  if isinstance(row.get(c), (int, float)) and not isinstance(row.get(c), bool)])
                stored = samples_json(samples.get(cell))
                if stored is not None:
                    conn.execute("INSERT INTO samples VALUES (?, ?, ?)", (run_id, cell, stored))
                if row.get("status") == OK:
                    insert_trend_figures(conn, run_id, cell, latency_figures(row, samples.get(cell)))
        info = self.run(run_id)
        assert info is not None
        return info

    def mark_gate(self, run_id: str, passed: Optional[bool], judged: bool = True) -> None:
        status = gate_status_of(passed, judged)
        with self.connect() as conn:
            if conn.execute("UPDATE runs SET gate_passed = ?, gate_status = ? WHERE run_id = ?",
                            (None if passed is None or not judged else int(passed), status, run_id)).rowcount == 0:
                raise HarnessError(f"run {run_id!r} is not in the history store {self.where}; record it first")

    # -------------------------------------------------------- reading
    def run(self, run_id: str) -> Optional[RunInfo]:
        with self.connect() as conn:
            r = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            return None if r is None else run_info(r, places_in_time(conn)[run_id])

    def runs(self) -> List[RunInfo]:
        """Every run in time order (when it started, not when it was recorded)."""
        with self.connect() as conn:
            found = conn.execute(f"SELECT * FROM runs r ORDER BY {IN_TIME}").fetchall()
        return [run_info(r, i + 1) for i, r in enumerate(found)]

    def rows(self, run_id: str) -> List[Dict[str, Any]]:
        with self.connect() as conn:
            found = conn.execute("SELECT row_json FROM cells WHERE run_id = ? ORDER BY cell_id", (run_id,)).fetchall()
        return [json.loads(r["row_json"]) for r in found]

    def samples(self, run_id: str) -> Dict[str, Any]:
        """Latency samples by cell_id: one array, or one array per repeat."""
        with self.connect() as conn:
            found = conn.execute("SELECT cell_id, latencies_ms FROM samples WHERE run_id = ?", (run_id,)).fetchall()
        return {r["cell_id"]: samples_from_json(r["latencies_ms"]) for r in found}

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
                f"ORDER BY {IN_TIME}", (model, variant, fmt, target, OK)).fetchall()
            places = places_in_time(conn)
        values: List[float] = []
        for r in found:
            if r["run_id"] == before_run or (current is not None and places[r["run_id"]] >= current.seq):
                continue
            row = json.loads(r["row_json"])
            if tuple(history_key(row)) != tuple(key) or str(row.get("noisy")).lower() in ("true", "1", "1.0"):
                continue
            value = run_level_figure(samples_from_json(r["latencies_ms"]), figure) if r["latencies_ms"] else None
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

    def trend_cells(self, model: Optional[str] = None, target: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every recorded ok cell, oldest run first, for the series of harness.judge.trends: each as
        {seq, run_id, gate_status, row, samples} (samples None where none were kept)."""
        where, params = ok_cells_filter(model, target)
        with self.connect() as conn:
            found = conn.execute(
                "SELECT r.seq, r.run_id, r.gate_status, c.row_json, s.latencies_ms FROM cells c "
                "JOIN runs r ON r.run_id = c.run_id "
                f"LEFT JOIN samples s ON s.run_id = c.run_id AND s.cell_id = c.cell_id WHERE {where} "
                f"ORDER BY {IN_TIME}, c.cell_id", params).fetchall()
            places = places_in_time(conn)
        return [{"seq": places[r["run_id"]], "run_id": r["run_id"], "gate_status": r["gate_status"],
                 "row": json.loads(r["row_json"]),
                 "samples": samples_from_json(r["latencies_ms"]) if r["latencies_ms"] else None} for r in found]

    def trend_figure_cells(self, model: Optional[str] = None, target: Optional[str] = None) -> List[Dict[str, Any]]:
        """trend_cells without the samples: each cell as {seq, run_id, gate_status, row, figures}, figures its
        run-level latency figures as kept when it was recorded. A cell recorded before they were kept has them
        computed from its samples now, and stored, so it costs that once."""
        where, params = ok_cells_filter(model, target)
        with self.connect() as conn:
            found = conn.execute(
                "SELECT r.seq, r.run_id, r.gate_status, c.cell_id, c.row_json FROM cells c "
                f"JOIN runs r ON r.run_id = c.run_id WHERE {where} ORDER BY {IN_TIME}, c.cell_id", params).fetchall()
            places = places_in_time(conn)
            figures: Dict[tuple, Dict[str, Optional[float]]] = {}
            for r in conn.execute("SELECT f.run_id, f.cell_id, f.figure, f.value FROM trend_figures f "
                                  "JOIN cells c ON c.run_id = f.run_id AND c.cell_id = f.cell_id "
                                  f"WHERE {where}", params).fetchall():
                figures.setdefault((r["run_id"], r["cell_id"]), {})[r["figure"]] = \
                    None if r["value"] is None else float(r["value"])
            cells = []
            for r in found:
                row = json.loads(r["row_json"])
                stored = figures.get((r["run_id"], r["cell_id"]))
                if stored is None:
                    stored = latency_figures(row, self._cell_samples(conn, r["run_id"], r["cell_id"]))
                    insert_trend_figures(conn, r["run_id"], r["cell_id"], stored)
                cells.append({"seq": places[r["run_id"]], "run_id": r["run_id"], "gate_status": r["gate_status"],
                              "row": row, "figures": stored})
        return cells

    @staticmethod
    def _cell_samples(conn: Connection, run_id: str, cell_id: str) -> Any:
        found = conn.execute("SELECT latencies_ms FROM samples WHERE run_id = ? AND cell_id = ?",
                             (run_id, cell_id)).fetchone()
        return samples_from_json(found["latencies_ms"]) if found is not None else None

    def metrics(self) -> List[str]:
        with self.connect() as conn:
            return [r["metric"] for r in conn.execute("SELECT DISTINCT metric FROM metrics ORDER BY metric")]

    def series(self, model: str, target: str, metric: str, variant: Optional[str] = None,
               fmt: Optional[str] = None) -> List[SeriesPoint]:
        """`metric` of every recorded cell of model on target, oldest run first.

        Cells that did not measure the metric (a failed cell) appear with value None.
        """
        if metric not in COLUMNS:
            raise ConfigError("--metric", f"unknown metric {metric!r}; numeric metrics: {', '.join(self.metrics()) or 'none yet'}")
        query = ("SELECT r.run_id, r.started_at, r.gate_passed, c.variant, c.format, c.status, m.value, c.row_json "
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
            found = conn.execute(query + f" ORDER BY {IN_TIME}, c.variant, c.format", params).fetchall()
        return [SeriesPoint(r["run_id"], r["started_at"], r["variant"], r["format"], r["status"], r["value"],
                            gate_verdict(r["gate_passed"]), runtime_config_words(json.loads(r["row_json"]))) for r in found]

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
                raise ConfigError(self.where, f"baseline run {named!r} is not in the history store; "
                                  f"recent runs: {recent}")
            return named
        current = self.run(run_id)
        earlier = [r for r in self.runs() if r.run_id != run_id and (current is None or r.seq < current.seq)]
        passed = [r for r in earlier if r.gate_passed]
        if passed:
            return passed[-1].run_id
        if any(r.gate_passed is not None for r in earlier):
            # once runs are gated, only a verdict makes a baseline (a run not judged never does)
            return None
        clean = [r for r in earlier if r.n_failed == 0 and r.n_cells > 0 and r.gate_status != GATE_NOT_JUDGED]
        return clean[-1].run_id if clean else None

    def cell_baselines(self, run_id: str, rows: Sequence[Mapping[str, Any]]) -> Dict[tuple, CellBaseline]:
        """Each ok row's cell key (regression.history_key) -> its newest ok, quiet measurement in a run before
        `run_id` whose gate passed, wherever it was recorded (before any run was gated: in a run without failed
        cells). No entry: the key's first run. Its energy baseline is the newest such measurement that measured
        energy (CellBaseline.energy), so a run whose sensor gave no figure does not leave energy unjudged. A farm
        gating each model in its own job makes the newest passing run another model's; a per-run baseline then
        compares the cell with nothing."""
        from harness.judge.regression import history_key
        wanted = {tuple(history_key(r)) for r in rows if r.get("status") == OK}
        if not wanted:
            return {}
        current = self.run(run_id)
        gated = any(r.gate_status in (GATE_PASSED, GATE_FAILED) for r in self.runs()
                    if r.run_id != run_id and (current is None or r.seq < current.seq))
        pairs = sorted({(k[0], k[3]) for k in wanted})
        where = " OR ".join("(c.model = ? AND c.target = ?)" for _ in pairs)
        params: List[Any] = [OK] + [v for pair in pairs for v in pair]
        with self.connect() as conn:
            found = conn.execute(
                "SELECT r.seq, r.run_id, r.gate_status, r.n_failed, c.cell_id, c.row_json FROM cells c "
                f"JOIN runs r ON r.run_id = c.run_id WHERE c.status = ? AND ({where}) "
                "ORDER BY r.started_at DESC, r.seq DESC, c.cell_id", params).fetchall()
            places = places_in_time(conn)
            chosen: Dict[tuple, tuple] = {}
            energy: Dict[tuple, tuple] = {}
            for r in found:
                earlier = r["run_id"] != run_id and (current is None or places[r["run_id"]] < current.seq)
                passing = r["gate_status"] == GATE_PASSED if gated else \
                    (int(r["n_failed"]) == 0 and r["gate_status"] != GATE_NOT_JUDGED)
                row = json.loads(r["row_json"]) if earlier and passing else {}
                key = tuple(history_key(row)) if row else None
                if key not in wanted or str(row.get("noisy")).lower() in ("true", "1", "1.0"):
                    continue
                if key not in chosen:
                    chosen[key] = (r["run_id"], r["cell_id"], row)
                mj = cell_figure(row, None, "energy")
                if key not in energy and mj is not None:
                    energy[key] = (r["run_id"], mj)  # newest first: the newest that measured it
            return {key: CellBaseline(run, row, self._cell_samples(conn, run, cell), energy.get(key))
                    for key, (run, cell, row) in chosen.items()}


def record_run(results: RunResults, db_path: Path | str | None = None,
               gate_passed: Optional[bool] = None, gate_status: Optional[str] = None) -> RunInfo:
    """Append a finished run (its table and latency samples) to the history store (a path or a URL)."""
    return History(db_path).record(results.run_id, stored_records(results.frame), results.latency_samples(),
                                   started_at=results.started_at, gate_passed=gate_passed,
                                   gate_status=gate_status)

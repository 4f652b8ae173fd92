"""The shared history store on a real PostgreSQL server: same schema as SQLite, concurrent recorders lose nothing,
an unreachable server is one line (no password) and the run's own tables are still written."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from harness.history.store import History, record_run
from harness.history.tables import SCHEMA_VERSION, redact_url
from harness.schema.run_results import RunResults
from harness.schema.rundir import RunDir
from postgres_server import PG_BIN, free_port, postgres_server
from test_history import write_run

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (PG_BIN / "pg_ctl").exists(),
                                reason="PostgreSQL 15 is not installed: make system-deps installs postgresql-15")


@pytest.fixture(scope="module")
def server():
    yield from postgres_server()


@pytest.fixture
def pg_url(server):
    return server.url(server.new_database())


def cli(*argv: str, env_extra=None, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "harness.cli", *argv], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=300)


def test_postgres_store_holds_what_the_sqlite_store_holds(tmp_path, pg_url):
    reports = tmp_path / "reports"
    runs = [write_run(reports, f"night{i}", p99=5.0 + i, seed=i, failed=(i == 1)) for i in range(3)]
    lite, pg = History(tmp_path / "h.sqlite"), History(pg_url)
    for run in runs:
        record_run(RunResults.load(run), lite.path)
        record_run(RunResults.load(run), pg_url)
    pg.mark_gate("night0", True)
    lite.mark_gate("night0", True)
    pg.mark_gate("night2", None, judged=False)
    lite.mark_gate("night2", None, judged=False)
    assert pg.schema_version() == lite.schema_version() == SCHEMA_VERSION
    strip = lambda infos: [(r.run_id, r.n_cells, r.n_ok, r.n_failed, r.gate_passed, r.gate_status) for r in infos]
    assert strip(pg.runs()) == strip(lite.runs())
    assert [r.gate_status for r in pg.runs()] == ["passed", None, "not_judged"]
    for run in runs:
        assert pg.rows(run.run_id) == lite.rows(run.run_id)
        assert {k: list(v) for k, v in pg.samples(run.run_id).items()} == \
            {k: list(v) for k, v in lite.samples(run.run_id).items()}
    assert pg.series("m", "local", "latency_p99_ms") == lite.series("m", "local", "latency_p99_ms")
    key = ("m", "reference", "onnx", "local", "", "")
    assert pg.run_level_figures(key, figure="p90") == pytest.approx(lite.run_level_figures(key, figure="p90"))
    # the nightly series read the same from both
    strip_cells = lambda cells: [(c["run_id"], c["gate_status"], c["row"]["cell_id"],
                                  None if c["samples"] is None else list(c["samples"])) for c in cells]
    assert strip_cells(pg.trend_cells("m", "local")) == strip_cells(lite.trend_cells("m", "local"))
    # a run the gate could not judge is never a baseline
    assert pg.find_baseline("night3") == lite.find_baseline("night3") == "night0"


def test_two_recorders_at_once_lose_nothing(tmp_path, pg_url):
    """Two processes each record 15 runs into the same store at the same time (also the same run twice)."""
    reports = tmp_path / "reports"
    for i in range(30):
        write_run(reports, f"r{i:02d}", p99=4.0, seed=i)
    script = tmp_path / "recorder.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from harness.history.store import record_run
        from harness.schema.run_results import RunResults
        from harness.schema.rundir import RunDir
        store, parity = sys.argv[1], int(sys.argv[2])
        for i in range(30):
            if i % 2 == parity or i == 7:   # run r07 is recorded by both at once
                record_run(RunResults.load(RunDir(Path({str(reports)!r}) / f"r{{i:02d}}")), store)
    """))
    for store in (pg_url, str(tmp_path / "shared.sqlite")):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs = [subprocess.Popen([sys.executable, str(script), store, str(p)], env=env, stderr=subprocess.PIPE,
                                  text=True) for p in (0, 1)]
        errors = [p.communicate(timeout=300)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errors
        history = History(store)
        assert sorted(r.run_id for r in history.runs()) == [f"r{i:02d}" for i in range(30)]
        assert all(len(history.rows(f"r{i:02d}")) == 2 and len(history.samples(f"r{i:02d}")) == 2
                   for i in range(30))


def test_an_unreachable_server_is_one_line_without_the_password(tmp_path):
    url = f"postgresql://nightly:s3cret-pw@127.0.0.1:{free_port()}/farm"
    assert redact_url(url) == url.replace("s3cret-pw", "***")
    assert "s3cret" not in redact_url("postgresql://h/db?user=a&password=s3cret&x=1")
    done = cli("history", "--history", url)
    assert done.returncode != 0
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and "unreachable" in err and "Traceback" not in err, done.stderr
    assert "s3cret" not in done.stdout + done.stderr and "nightly:***@127.0.0.1" in err
    # the same from the environment, as a nightly job sets it
    other = cli("history", "--history", "mysql://u:s3cret@db/x")
    assert other.returncode != 0 and "unknown kind of URL" in other.stderr and "s3cret" not in other.stderr
    by_env = cli("history", env_extra={"HARNESS_HISTORY": url})
    assert by_env.returncode == done.returncode and "s3cret" not in by_env.stderr and "unreachable" in by_env.stderr


def test_a_run_whose_history_server_is_down_still_has_its_tables(tmp_path):
    from harness.commands.publish import publish
    from harness.run.collate import collate
    run = write_run(tmp_path / "reports", "night-down", tables=False)
    said = []
    url = f"postgresql://nightly:s3cret-pw@127.0.0.1:{free_port()}/farm"
    published = publish(collate(run), history=url, progress=said.append)  # what `harness profile` does after a run
    assert "unreachable" in published.history_error and "s3cret" not in published.history_error
    assert (run.root / "results.parquet").exists() and (run.root / "results.csv").exists()
    summary = (run.root / "summary.md").read_text()  # the report says the run is in no history
    assert "History not recorded" in summary and "unreachable" in summary and "s3cret" not in summary
    assert not any("trends:" in s for s in said), "no trend page drawn from a history this run is not in"


def test_an_old_sqlite_store_is_migrated_in_place(tmp_path):
    """A store written before schema_version existed: runs without gate_status, verdicts kept."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE runs (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL UNIQUE,
                started_at TEXT NOT NULL, recorded_at TEXT NOT NULL, n_cells INTEGER NOT NULL,
                n_ok INTEGER NOT NULL, n_failed INTEGER NOT NULL, gate_passed INTEGER);
            INSERT INTO runs (run_id, started_at, recorded_at, n_cells, n_ok, n_failed, gate_passed)
                VALUES ('old1', 't', 't', 1, 1, 0, 1), ('old2', 't', 't', 1, 1, 0, 0);
        """)
    history = History(path)
    assert history.schema_version() == SCHEMA_VERSION
    assert [(r.run_id, r.gate_passed, r.gate_status) for r in history.runs()] == \
        [("old1", True, "passed"), ("old2", False, "failed")]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_store_from_before_the_first_use_columns_calls_compile_ms_load_cold_ms(tmp_path, dialect, request,
                                                                                  monkeypatch):
    """Migration 4: rows and long-form figures recorded as compile_ms (the cold compile) read as load_cold_ms."""
    import harness.history.store as store
    from harness.history.tables import MIGRATIONS
    location = str(tmp_path / "v3.sqlite") if dialect == "sqlite" else \
        request.getfixturevalue("server").url(request.getfixturevalue("server").new_database())
    monkeypatch.setattr(store, "MIGRATIONS", {v: m for v, m in MIGRATIONS.items() if v <= 3})
    old = History(location)
    row = {"run_id": "old", "cell_id": "m__reference__openvino@ov__dev", "model": "m", "variant": "reference",
           "format": "openvino", "target": "dev", "status": "ok", "compile_ms": 812.5, "load_ms": 40.0}
    old.record("old", [row], {})
    with old.connect() as conn:
        conn.execute("INSERT INTO metrics VALUES (?, ?, ?, ?)", ("old", row["cell_id"], "compile_ms", 812.5))
    assert old.schema_version() == 3
    monkeypatch.setattr(store, "MIGRATIONS", MIGRATIONS)
    new = History(location)
    assert new.schema_version() == SCHEMA_VERSION == 4
    stored, = new.rows("old")
    assert stored["load_cold_ms"] == 812.5 and "compile_ms" not in stored and stored["load_ms"] == 40.0
    assert "load_cold_ms" in new.metrics() and "compile_ms" not in new.metrics()
    assert [p.value for p in new.series("m", "dev", "load_cold_ms")] == [812.5]


def test_a_table_lock_held_elsewhere_ends_recording_with_what_it_waited_for(tmp_path, pg_url, monkeypatch):
    import psycopg

    import harness.history.store as store
    monkeypatch.setattr(store, "PG_LOCK_TIMEOUT_MS", 1000)
    run = write_run(tmp_path / "reports", "locked")
    History(pg_url).runs()  # the tables exist
    holder = psycopg.connect(pg_url)
    try:
        holder.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")  # another job's long transaction
        started = __import__("time").monotonic()
        with pytest.raises(store.HarnessError, match="waited 1 s for a table lock that another connection"):
            record_run(RunResults.load(run), pg_url)
        assert __import__("time").monotonic() - started < 20
    finally:
        holder.close()
    assert record_run(RunResults.load(run), pg_url).run_id == "locked"  # once it is released, recording works


def _energy_run(reports: Path, run_id: str, day: int, mj, method: str = "rapl /sys/class/powercap") -> RunDir:
    """One ok onnx cell measured at `mj` mJ per inference (None: its sensor gave no figure, with the reason)."""
    from harness.schema.results import make_row, results_frame
    run = RunDir.create(run_id, reports)
    rng = np.random.default_rng(day)
    row = make_row(run_id=run_id, cell_id="m__reference__onnx__dev", model="m", variant="reference", format="onnx",
                   target="dev", status="ok", accuracy=0.95, latency_p99_ms=5.0, latency_p50_ms=4.0,
                   peak_rss_bytes=100e6, started_at=f"2026-11-{day:02d}T00:00:00Z",
                   energy_mj_per_inference=mj, energy_total_mj=None if mj is None else mj * 200,
                   power_active_w=None if mj is None else 6.5, power_idle_w=None if mj is None else 4.5,
                   energy_method=method if mj is not None else f"{method}; not measured: too few samples",
                   energy_rails="package-0", power_sampling_hz=None if mj is None else 19.5)
    run.write_cell({"row": row, "latencies_ms": (4.0 * rng.lognormal(0, 0.03, 60)).tolist()})
    run.write_tables(results_frame(run.rows()))
    return run


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_energy_is_kept_per_cell_and_judged_against_the_cells_own_history(tmp_path, dialect, request):
    """Every energy column comes back from the store (SQLite and PostgreSQL); `harness history` follows energy per
    inference; and max_energy_regression compares a cell with its own newest passing run that measured energy,
    past a passing run whose sensor gave no figure."""
    from harness.judge.gate import GateInputs, Policy, TargetPolicy, evaluate
    from harness.judge.trends import build_trends, find_change_points
    location = str(tmp_path / "h.sqlite") if dialect == "sqlite" else \
        request.getfixturevalue("server").url(request.getfixturevalue("server").new_database())
    reports = tmp_path / "reports"
    store = History(location)
    for day, mj in ((1, 1.00), (2, 1.04), (3, 0.98), (4, None)):  # day 4: passing, but its sensor gave nothing
        record_run(RunResults.load(_energy_run(reports, f"night{day}", day, mj)), location, gate_passed=True)
    stored, = store.rows("night1")
    assert (stored["energy_mj_per_inference"], stored["energy_total_mj"], stored["power_active_w"],
            stored["power_idle_w"], stored["energy_method"], stored["energy_rails"], stored["power_sampling_hz"]) == \
        (1.0, 200.0, 6.5, 4.5, "rapl /sys/class/powercap", "package-0", 19.5)
    assert store.rows("night4")[0]["energy_method"].endswith("not measured: too few samples")
    series = store.series("m", "dev", "energy_mj_per_inference")
    assert [p.value for p in series] == [1.0, 1.04, 0.98, None]
    energy, = build_trends(store.trend_figure_cells("m", "dev"), ("energy",))
    assert [p.value for p in energy.points] == [1.0, 1.04, 0.98], "a run without a figure is no point"

    now = RunResults.load(_energy_run(reports, "night5", 5, 1.40))
    baselines = store.cell_baselines("night5", now.rows)
    base, = baselines.values()
    assert base.run_id == "night4" and base.energy == ("night3", 0.98)
    result = evaluate(Policy(defaults=TargetPolicy(max_energy_regression=0.2)), now.frame,
                      GateInputs(run_id="night5", samples=now.latency_samples(), cell_baselines=baselines))
    check, = [c for c in result.checks if c.rule == "max_energy_regression"]
    assert not check.passed and "0.98 -> 1.4 mJ (+42.9%" in check.message and "baseline run night3" in check.message
    # the nightly rule: a baseline is the segment since the last change point, its energy the segment's median
    history_cells = [c for c in store.trend_cells() if c["run_id"] != "night5"]
    nightly = evaluate(Policy(defaults=TargetPolicy(max_energy_regression=0.2, nightly_window_runs=3)), now.frame,
                       GateInputs(run_id="night5", samples=now.latency_samples(), history_cells=history_cells))
    check, = [c for c in nightly.checks if c.rule == "max_energy_regression"]
    assert not check.passed and "1 -> 1.4 mJ (+40.0%" in check.message, check.message
    assert find_change_points(energy).change_points == ()

"""A farm bigger than one host (harness.run.dask), on a real dask.distributed cluster.

Every worker has its own working directory and its own cache, apart from the host's, so nothing here works by
sharing the host's disk: builds come back as bytes, device jobs get their artifacts as bytes and stream their
records home. Workers are `dask worker` processes (as the README starts them on lab machines) or the processes of
a LocalCluster(processes=True).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from helpers import ROOT

distributed = pytest.importorskip("distributed", reason="the `distributed` extra is part of the test venv")

DASK = Path(sys.executable).with_name("dask")
QUICK = dict(min_duration_s=0.0, iterations=5, warmup=1)


def chdir_to_local_directory(dask_worker) -> str:
    """Each LocalCluster worker works in its own directory, not the host's."""
    os.chdir(dask_worker.local_directory)
    return os.getcwd()


class Lines:
    """A progress callable that keeps every line (workers' lines arrive on the client's thread)."""

    def __init__(self, on_line=None):
        self.lines, self.on_line = [], on_line
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)
        if self.on_line:
            self.on_line(line)

    def having(self, text: str):
        return [line for line in self.lines if text in line]


@pytest.fixture
def scheduler(tmp_path):
    """A LocalCluster(processes=True) with no workers of its own: its scheduler, for `dask worker` processes."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=0, processes=True, dashboard_address=None,
                      local_directory=str(tmp_path / "scheduler")) as cluster, Client(cluster) as client:
        workers = []

        def start_worker(name: str, resources: str = "", nanny: bool = False) -> subprocess.Popen:
            workdir = tmp_path / f"worker-{name}"
            workdir.mkdir()
            argv = [str(DASK), "worker", cluster.scheduler_address, "--name", name, "--nthreads", "2",
                    "--local-directory", str(workdir), "--no-dashboard", "--nanny" if nanny else "--no-nanny"]
            if resources:
                argv += ["--resources", resources]
            env = {k: v for k, v in os.environ.items() if k != "HARNESS_CACHE_DIR"}
            proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                                    stderr=open(workdir / "worker.log", "wb"), start_new_session=True)
            workers.append(proc)
            client.wait_for_workers(len(workers), timeout=120)
            return proc

        try:
            yield client, start_worker
        finally:
            for proc in workers:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------- without a cluster
def test_embedded_run_never_imports_dask():
    code = ("import sys, harness.cli, harness.run.pipeline, harness.run.dask, harness.commands.profile\n"
            "harness.cli.build_parser()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_unreachable_scheduler_is_one_error_naming_it(capsys):
    from harness.cli import main

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    assert main(["profile", "--scheduler", address, "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and address in err[0] and "dask scheduler" in err[0]


def test_site_must_be_a_plain_name():
    from harness.core.errors import ConfigError
    from harness.schema.targets import TargetSpec

    assert TargetSpec(name="pi", site="lab-a").site == "lab-a"
    with pytest.raises(ConfigError, match="site"):
        TargetSpec(name="pi", site="lab a; rm -rf /")


def test_bench_report_shows_the_build_ratio_and_dispatch_cost_with_the_cluster_commands():
    from harness.bench.report import distributed_table

    def build(n, wall):
        return {"workers": n, "wall_s": wall, "artifacts": 15, "failed": [], "variants": ["prune50"],
                "progress_lines_by_worker": {}, "commands": ["dask scheduler --port 1", "dask worker tcp://x:1"],
                "load_average_before": 0.5}
    mode = lambda ms: {"per_cell_ms": ms, "fixed_s": 2.0}  # noqa: E731
    text = "\n".join(distributed_table({
        "build": {"one_worker": build(1, 30.0), "two_workers": build(2, 18.0), "ratio": 0.6, "wall_s": {1: [30.0]}},
        "dispatch": {"threads": mode(0.5), "dask": mode(2.0), "extra_per_cell_ms": 1.5, "extra_fixed_s": 0.1,
                     "sizes": [20, 600], "rounds": 3, "commands": ["dask scheduler --port 2"]}}))
    assert "**0.60x**" in text and "| dask | 2.00 | 2.00 |" in text and "dask adds 1.50 ms per cell" in text
    assert "`dask worker tcp://x:1`" in text and "`dask scheduler --port 2`" in text


# ---------------------------------------------------------------- builds
@pytest.mark.slow
def test_build_of_eight_artifacts_spreads_over_two_workers_and_comes_back_as_bytes(tmp_path):
    from distributed import Client, LocalCluster

    from harness.prepare.cache import ContentCache
    from harness.run.dask.prepare_on_workers import build_on_workers
    from harness.schema.recipes import load_recipe

    recipe = load_recipe("digits_cnn", ROOT / "models")
    variants = {"digits_cnn": ["prune50", "tflite_int8", "ort_int8"]}
    host_cache = ContentCache(tmp_path / "host-cache")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      local_directory=str(tmp_path / "workers")) as cluster, Client(cluster) as client:
        workdirs = client.run(chdir_to_local_directory)
        assert len(set(workdirs.values())) == 2 and all(str(tmp_path / "workers") in d for d in workdirs.values())
        lines = Lines()
        ((prepared, artifacts),) = build_on_workers([recipe], variants, host_cache, client, lines)

        assert len(artifacts) == 8
        assert [(a.error, a.problems) for a in artifacts] == [("", ())] * 8  # every one built and compatible
        assert not any(a.cached for a in artifacts)
        # on the host, in the host's cache: they came back as bytes, not through a shared disk
        for a in artifacts:
            assert Path(a.path).is_relative_to(host_cache.root) and Path(a.path).exists()
        assert Path(prepared.reference_outputs_path).is_relative_to(host_cache.root)
        # each step ran once, and on both workers
        converting = [line.split(" (worker")[0] for line in lines.having(": converting ")]
        assert len(converting) == len(set(converting)) == 6  # reference x3, prune50 x3 (int8 ones are made whole)
        assert len(lines.having("compressed in ")) == 3 and len(lines.having("building reference model")) == 1
        workers = {line.rsplit("(worker ", 1)[1] for line in lines.lines if "(worker " in line}
        assert len(workers) == 2, lines.lines
        # the workers kept their own caches, in their own directories
        worker_caches = client.run(lambda dask_worker: sorted(p.name for p in
                                   (Path(dask_worker.local_directory) / "harness-cache").iterdir()))
        assert all(worker_caches.values())

        # built once: a second build finds everything in the host's cache and submits nothing
        again = Lines()
        ((_, rebuilt),) = build_on_workers([recipe], variants, host_cache, client, again)
        assert all(a.cached for a in rebuilt) and [a.sha256 for a in rebuilt] == [a.sha256 for a in artifacts]
        assert not again.having("(worker ") and not again.having("step(s) ran on the workers")


# ---------------------------------------------------------------- device jobs
def _host_built_digits():
    """The digits reference artifacts, already in the host's (session) cache: the run builds nothing."""
    from harness.prepare.cache import ContentCache
    from harness.schema.recipes import load_recipe
    from helpers import digits_build, session_cache_dir

    digits_build()
    return load_recipe("digits_cnn", ROOT / "models"), ContentCache(session_cache_dir())


@pytest.mark.ssh
@pytest.mark.slow
def test_farm_run_on_three_devices_pinned_to_workers_by_site(farm, sim_target, scheduler, tmp_path):
    from harness.run.dask import DaskDispatcher
    from harness.run.pipeline import run_profile
    from harness.run.plan import RunSettings

    client, start_worker = scheduler
    start_worker("lab-a-worker", "site-lab-a=1")
    start_worker("lab-b-worker", "site-lab-b=1")
    recipe, cache = _host_built_digits()
    targets = [sim_target("sim-pi4", site="lab-a"), sim_target("sim-jetson", site="lab-a"),
               sim_target("sim-x86", site="lab-b"),
               dataclasses.replace(sim_target("sim-x86"), name="sim-x86-lab-z", site="lab-z")]
    lines = Lines()
    outcome = run_profile([recipe], targets, {}, RunSettings(**QUICK), reports_dir=tmp_path / "reports",
                          cache=cache, progress=lines, dispatcher=DaskDispatcher(client))

    rows = {r["cell_id"]: r for r in outcome.frame.to_dict(orient="records")}
    assert len(rows) == 12
    status = lambda target: {r["format"]: r["status"] for r in rows.values() if r["target"] == target}  # noqa
    assert status("sim-pi4") == {"tflite": "ok", "onnx": "skipped", "openvino": "skipped"}
    assert status("sim-jetson") == {"tflite": "ok", "onnx": "ok", "openvino": "skipped"}
    assert status("sim-x86") == {"tflite": "ok", "onnx": "ok", "openvino": "ok"}
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert all(r["accuracy"] > 0.9 and r["latency_p50_ms"] > 0 for r in ok)
    # each job ran on its site's worker
    assert lines.having("[sim-pi4] job on worker lab-a-worker"), lines.lines
    assert lines.having("[sim-jetson] job on worker lab-a-worker")
    assert lines.having("[sim-x86] job on worker lab-b-worker")
    # a site no worker serves: its cells are lost with the command that would serve it
    lab_z = [r for r in rows.values() if r["target"] == "sim-x86-lab-z"]
    assert {r["status"] for r in lab_z} == {"lost"} and all('--resources "site-lab-z=1"' in r["error_message"]
                                                          for r in lab_z)
    # the host wrote the run directory: probes, cells with their samples, outputs, agent documents
    run = outcome.run_dir
    assert {p.stem for p in (run.root / "devices").glob("*.json")} == {"sim-pi4", "sim-jetson", "sim-x86"}
    for r in ok:
        record = json.loads(run.cell_path(r["cell_id"]).read_text())
        assert record["row"]["status"] == "ok"
        assert run.outputs_path(r["cell_id"]).exists() and (run.root / "agent" / f"{r['cell_id']}.json").exists()
    # the workers' progress lines reached the host, as the threads' do
    assert len(lines.having("[sim-x86] ")) >= 4 and lines.having("[sim-pi4] reachable: Python 3.11")


@pytest.mark.ssh
@pytest.mark.slow
def test_worker_killed_mid_run_loses_its_cells_and_resume_finishes_on_the_others(farm, sim_target, scheduler,
                                                                                 tmp_path):
    from harness.run.dask import DaskDispatcher
    from harness.run.pipeline import run_profile
    from harness.run.plan import RunSettings

    client, start_worker = scheduler
    procs = {"w1": start_worker("w1", "site-lab-a=1"), "w2": start_worker("w2", "site-lab-a=1")}
    recipe, cache = _host_built_digits()
    target = sim_target("sim-x86", site="lab-a")
    killed = []

    def kill_on_first_cell(line: str) -> None:
        if "[sim-x86] 1/3 " in line and not killed:
            worker = next(l for l in lines.lines if "[sim-x86] job on worker " in l).rsplit(" ", 1)[1]
            killed.append(worker)
            os.killpg(procs[worker].pid, signal.SIGKILL)

    lines = Lines(kill_on_first_cell)
    settings = RunSettings(**{**QUICK, "min_duration_s": 0.5})
    first = run_profile([recipe], [target], {}, settings, reports_dir=tmp_path / "reports", cache=cache,
                        progress=lines, dispatcher=DaskDispatcher(client))

    assert killed, lines.lines
    rows = first.frame.to_dict(orient="records")
    assert len(rows) == 3
    kept = [r for r in rows if r["status"] == "ok"]
    lost = [r for r in rows if r["status"] == "lost"]
    assert kept and lost and len(kept) + len(lost) == 3
    assert all(r["error_category"] == "worker_lost" and "died mid-run" in r["error_message"]
               and "--resume" in r["error_message"] and "--scheduler tcp://" in r["error_message"] for r in lost)
    assert sorted(first.missing) == sorted(r["cell_id"] for r in lost)
    kept_record = first.run_dir.cell_path(kept[0]["cell_id"]).read_text()

    survivor = "w2" if killed[0] == "w1" else "w1"
    resumed_lines = Lines()
    second = run_profile([recipe], [target], {}, settings, run_id=first.run_dir.run_id,
                         reports_dir=tmp_path / "reports", cache=cache, progress=resumed_lines,
                         dispatcher=DaskDispatcher(client), resume=True)
    assert set(second.frame["status"]) == {"ok"} and len(second.frame) == 3 and not second.missing
    assert resumed_lines.having(f"[sim-x86] job on worker {survivor}")
    assert resumed_lines.having(f"{len(kept)} cells already done, {len(lost)} to run")
    # the measured cell was kept as it was, not measured again
    assert first.run_dir.cell_path(kept[0]["cell_id"]).read_text() == kept_record


@pytest.mark.slow
def test_harness_profile_with_scheduler_flag_runs_on_a_worker_and_resumes(scheduler, tmp_path):
    from helpers import session_cache_dir

    client, start_worker = scheduler
    start_worker("any")
    _host_built_digits()
    env = {**os.environ, "HARNESS_CACHE_DIR": str(session_cache_dir())}
    argv = [str(Path(sys.executable).with_name("harness")), "profile", "-t", "local", "--warmup", "1",
            "--iterations", "5", "--run-id", "via-dask", "--reports-dir", str(tmp_path / "reports"), "--no-report",
            "--scheduler", client.scheduler.address]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dask scheduler tcp://" in done.stderr and "[local] job on worker any" in done.stderr
    assert "[local] 3/3 digits_cnn/reference/" in done.stderr  # the worker's progress lines, on the host
    results = json.loads((tmp_path / "reports" / "via-dask" / "results.json").read_text())
    assert [r["status"] for r in results] == ["ok"] * 3
    # DASK_SCHEDULER_ADDRESS names it too; a resume with nothing missing runs nothing
    resumed = subprocess.run([str(Path(sys.executable).with_name("harness")), "run", "--resume", "via-dask",
                              "--reports-dir", str(tmp_path / "reports"), "--no-report"], capture_output=True,
                             text=True, cwd=ROOT, env={**env, "DASK_SCHEDULER_ADDRESS": client.scheduler.address},
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "3 cells already done, 0 to run" in resumed.stderr and "dask scheduler tcp://" in resumed.stderr

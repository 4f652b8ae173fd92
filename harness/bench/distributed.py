"""Distributed: a build on 1 dask worker against 2, and the per-cell cost of dispatching through dask.

The cluster is started as a lab would start it (`dask scheduler`, `dask worker tcp://...`), each worker in its
own empty working directory with its own cache, one thread each; the commands are recorded with the figures.

* **Build.** One model with all its variants (digits_cnn: 8 variants, 17 artifacts), from empty caches (host
  and workers), on a fresh cluster of 1 worker and then of 2. The workers import their frameworks before the
  clock starts (long-lived lab workers have them loaded); training, compression, conversion, inspection and
  the bytes' round trips are all inside the figure.
* **Dispatch.** The same device job (the local target, N cells that end at once as `skipped`, so no agent runs
  and what is left is the harness's own per-cell path: the record, and through dask the event that streams it
  home and the host's write) through threads and through one dask worker, at two sizes; the per-cell cost is
  the slope of wall time over cells, the fixed cost (probe, scatter, submit, result) the rest.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence

RECIPE = "digits_cnn"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _warm_imports() -> str:
    """On a worker: load the frameworks a build uses, so the clock measures building, not importing."""
    from harness.zoo import keras_util  # noqa: F401 (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
    import onnxruntime  # noqa: F401
    import openvino  # noqa: F401
    import tensorflow  # noqa: F401
    import tf_keras  # noqa: F401
    return "ok"


@contextmanager
def cluster(root: Path, n_workers: int, log: Callable[[str], None]) -> Iterator[Any]:
    """A scheduler and n `dask worker` processes, each in its own directory; yields (client, commands)."""
    from distributed import Client

    dask = str(Path(sys.executable).with_name("dask"))
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    commands = [f"dask scheduler --host 127.0.0.1 --port {port} --no-dashboard"]
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              cwd=root, stdout=subprocess.DEVNULL, stderr=open(root / "scheduler.log", "wb"),
                              start_new_session=True)]
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_CACHE_DIR"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dask scheduler did not start: {(root / 'scheduler.log').read_text()[-500:]}")
                time.sleep(0.2)
        cpus = sorted(os.sched_getaffinity(0))
        # Each worker stands in for a machine of its own: pinned to one CPU (and its libraries to one thread),
        # the 1-worker run too, so 1 against 2 workers is 1 CPU against 2, not 2 against 2.
        pin = shutil.which("taskset") is not None and len(cpus) >= n_workers
        for i in range(n_workers):
            workdir = root / f"worker-{i + 1}"
            workdir.mkdir()
            argv = ["worker", address, "--name", f"w{i + 1}", "--nthreads", "1", "--local-directory", str(workdir),
                    "--no-dashboard"]
            prefix = ["taskset", "-c", str(cpus[i])] if pin else []
            worker_env = {**env, "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
                          "TF_NUM_INTEROP_THREADS": "1"} if pin else env
            commands.append(f"cd {workdir.name} && " + ("OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 "
                            f"TF_NUM_INTEROP_THREADS=1 taskset -c {cpus[i]} " if pin else "") + "dask " + " ".join(argv))
            procs.append(subprocess.Popen([*prefix, dask, *argv], cwd=workdir, env=worker_env,
                                          stdout=subprocess.DEVNULL, stderr=open(workdir / "worker.log", "wb"),
                                          start_new_session=True))
        client = Client(address, timeout="30s", set_as_default=False)
        try:
            client.wait_for_workers(n_workers, timeout=120)
            started = time.perf_counter()
            client.run(_warm_imports)
            log(f"  {n_workers} worker(s) up, frameworks loaded in {time.perf_counter() - started:.1f}s")
            yield client, commands
        finally:
            client.close()
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def build_time(root: Path, n_workers: int, log: Callable[[str], None]) -> Dict[str, Any]:
    """Wall time of build_on_workers for RECIPE with all its variants, from empty caches."""
    from harness.prepare.cache import ContentCache
    from harness.run.dask.prepare_on_workers import build_on_workers
    from harness.schema.recipes import load_recipe

    root.mkdir(parents=True)
    recipe = load_recipe(RECIPE)
    variants = {RECIPE: [v.name for v in recipe.variants]}
    lines: List[str] = []
    steps: List[Dict[str, Any]] = []
    with cluster(root, n_workers, log) as (client, commands):
        load_before = os.getloadavg()[0]
        cpu_started = time.process_time()
        started = time.perf_counter()
        ((_, artifacts),) = build_on_workers([recipe], variants, ContentCache(root / "host-cache"), client,
                                             lines.append, steps)
        wall = time.perf_counter() - started
        host_cpu = time.process_time() - cpu_started
    by_worker: Dict[str, int] = {}
    for line in lines:
        if "(worker " in line:
            name = line.rsplit("(worker ", 1)[1].rstrip(")")
            by_worker[name] = by_worker.get(name, 0) + 1
    failed = [f"{a.variant}/{a.format}: {a.error}" for a in artifacts if a.error]
    busy = sum(s["seconds"] for s in steps)
    log(f"  build of {RECIPE} with {len(variants[RECIPE])} variants on {n_workers} worker(s): {wall:.1f}s "
        f"({len(artifacts)} artifacts, {len(failed)} failed; {len(steps)} steps, {busy:.1f}s of step time, "
        f"host CPU {host_cpu:.1f}s, load average {load_before:.1f} before)")
    return {"workers": n_workers, "wall_s": wall, "artifacts": len(artifacts), "failed": failed,
            "variants": variants[RECIPE], "progress_lines_by_worker": by_worker, "commands": commands,
            "steps": steps, "step_seconds": busy, "load_average_before": load_before, "host_cpu_s": host_cpu}


def dispatch_cost(root: Path, sizes: Sequence[int], rounds: int, log: Callable[[str], None]) -> Dict[str, Any]:
    """Wall time of the same local-target job (cells ending skipped) through threads and through one worker."""
    from harness.prepare.steps import build_model_artifacts
    from harness.prepare.cache import ContentCache
    from harness.run.dask import DaskDispatcher
    from harness.run.dispatch import ThreadDispatcher
    from harness.run.plan import Cell, ModelEval, RunSettings, TargetJob
    from harness.schema.recipes import load_recipe
    from harness.schema.rundir import RunDir
    from harness.schema.targets import TargetSpec

    root.mkdir(parents=True)
    recipe = load_recipe(RECIPE)
    prepared, artifacts = build_model_artifacts(recipe, [], ContentCache())  # the harness cache: usually warm
    tflite = next(a for a in artifacts if a.format == "tflite")
    target = TargetSpec(name="bench-local", transport="local", python="", workdir=str(root / "device"),
                        runtimes=("onnx",))
    evals = {recipe.name: ModelEval.of(prepared)}
    settings = RunSettings(warmup=1, iterations=5, min_duration_s=0.0)

    def job(n: int, run: RunDir) -> TargetJob:
        cells = tuple(Cell(dataclasses.replace(tflite, variant=f"copy{i:04d}"), target.name) for i in range(n))
        return TargetJob(target, cells, evals, str(run.root.resolve()), settings)

    samples: Dict[str, Dict[int, List[float]]] = {"threads": {n: [] for n in sizes}, "dask": {n: [] for n in sizes}}
    with cluster(root / "cluster", 1, log) as (client, commands):
        dispatchers = {"threads": ThreadDispatcher(), "dask": DaskDispatcher(client)}
        for r in range(rounds):
            for n in sizes:
                for mode in ("threads", "dask"):
                    run = RunDir.create(f"{mode}-{n}-{r}", root / "runs")
                    jobs = [job(n, run)]
                    started = time.perf_counter()
                    dispatchers[mode].run_jobs(jobs, run)
                    samples[mode][n].append(time.perf_counter() - started)
                    written = len(list((run.root / "cells").glob("*.json")))
                    if written != n:
                        raise RuntimeError(f"{mode}: {written} of {n} cells written")
    import statistics
    out: Dict[str, Any] = {"sizes": list(sizes), "rounds": rounds, "commands": commands, "wall_s": samples}
    lo, hi = min(sizes), max(sizes)
    for mode in ("threads", "dask"):
        med = {n: statistics.median(samples[mode][n]) for n in sizes}
        per_cell = (med[hi] - med[lo]) / (hi - lo)
        out[mode] = {"median_wall_s": med, "per_cell_ms": per_cell * 1000, "fixed_s": med[lo] - per_cell * lo}
        log(f"  {mode}: {per_cell * 1000:.2f} ms per cell, {out[mode]['fixed_s']:.2f}s fixed per job "
            f"(median of {rounds}; {lo} and {hi} cells)")
    out["extra_per_cell_ms"] = out["dask"]["per_cell_ms"] - out["threads"]["per_cell_ms"]
    out["extra_fixed_s"] = out["dask"]["fixed_s"] - out["threads"]["fixed_s"]
    return out


def distributed_bench(work: Path, log: Callable[[str], None], quick: bool = False,
                      build_rounds: int = 3) -> Dict[str, Any]:
    """Both figures; `quick` skips the 1-vs-2 build (minutes) and takes fewer dispatch rounds."""
    work.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="distributed-", dir=work)).resolve()
    doc: Dict[str, Any] = {}
    try:
        log("distributed: per-cell dispatch, threads against one dask worker")
        doc["dispatch"] = dispatch_cost(root / "dispatch", (10, 200) if quick else (20, 600), 2 if quick else 3,
                                        log)
        if not quick:
            log(f"distributed: build of {RECIPE} with all its variants on 1 worker against 2, alternating, "
                f"{build_rounds} round(s), empty caches each time")
            runs: Dict[int, List[Dict[str, Any]]] = {1: [], 2: []}
            for r in range(build_rounds):
                for n in (1, 2):
                    runs[n].append(build_time(root / f"build-{n}-{r}", n, log))
            import statistics
            median = {n: statistics.median(b["wall_s"] for b in runs[n]) for n in runs}
            # the fastest run of each: the one the machine's other load disturbed least
            one, two = (min(runs[n], key=lambda b: b["wall_s"]) for n in (1, 2))
            doc["build"] = {"one_worker": one, "two_workers": two, "ratio": median[2] / median[1],
                            "best_ratio": two["wall_s"] / one["wall_s"], "median_wall_s": median,
                            "rounds": build_rounds, "wall_s": {n: [b["wall_s"] for b in runs[n]] for n in runs},
                            "step_seconds": {n: [b["step_seconds"] for b in runs[n]] for n in runs}}
            log(f"  2 workers / 1 worker: {doc['build']['ratio']:.2f}x (medians), "
                f"{doc['build']['best_ratio']:.2f}x (fastest runs)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return doc

"""Harness overhead: a full profile's wall time against the time the agent itself measured.

A cold profile starts with an empty HARNESS_CACHE_DIR and an empty device
working directory (train, convert, inspect, upload, run, collate, report);
warm reruns reuse both (nothing to train, convert or upload). The local
target's `python` is a small wrapper script that logs each agent process's
start and end, so the agent processes' wall time is measured too, not only
what the agent timed inside itself.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List

import yaml

from harness.bench.memory import ControllerRun, run_controller

WRAPPER = """#!/bin/sh
# Written by harness.bench.overhead: runs the agent and logs its process wall time.
start=$(date +%s.%N)
"{python}" "$@"
rc=$?
end=$(date +%s.%N)
echo "$start $end $2" >> "{log}"
exit $rc
"""


@dataclass
class ProfileTiming:
    """One `harness profile` of one model on the local target, and what its agents measured."""

    label: str
    run: Dict[str, Any]
    cells: int = 0
    #: Σ over cells of load_ms + first_inference_ms + the timed iterations (what the agent timed)
    agent_timed_s: float = 0.0
    #: warm-up and the output pass are not timed by the agent; estimated as iterations x the cell's median
    agent_estimated_untimed_s: float = 0.0
    #: Σ wall time of the agent processes (`agent.py run`), from the wrapper's log: includes interpreter
    #: start-up, runtime imports, reading inputs and writing outputs
    agent_process_wall_s: float = 0.0
    probe_process_wall_s: float = 0.0
    #: Σ of the pipeline's per-cell duration_s (upload + agent + download + scoring)
    cell_duration_s: float = 0.0
    #: status -> cells (a failed cell makes the timing incomparable, so it is shown)
    statuses: Dict[str, int] = field(default_factory=dict)

    @property
    def agent_own_s(self) -> float:
        return self.agent_timed_s + self.agent_estimated_untimed_s

    def to_dict(self) -> Dict[str, Any]:
        doc = asdict(self)
        doc["agent_own_s"] = self.agent_own_s
        wall = self.run["wall_s"]
        doc["wall_over_agent_own"] = wall / self.agent_own_s if self.agent_own_s else None
        doc["wall_over_agent_process"] = wall / self.agent_process_wall_s if self.agent_process_wall_s else None
        return doc


def agent_time_from_documents(documents: List[Dict[str, Any]]) -> tuple:
    """(timed_s, estimated_untimed_s) summed over the agents' JSON results (pure)."""
    timed = untimed = 0.0
    for doc in documents:
        if doc.get("status") != "ok":
            continue
        latencies = doc.get("latencies_ms") or []
        timed += (doc.get("load_ms") or 0.0) + (doc.get("first_inference_ms") or 0.0) + sum(latencies)
        median = statistics.median(latencies) if latencies else 0.0
        untimed += median * ((doc.get("warmup_iterations") or 0) + (doc.get("n_output_samples") or 0))
    return timed / 1e3, untimed / 1e3


def process_wall_from_log(text: str) -> Dict[str, float]:
    """Σ wall seconds per agent command ('run', 'probe') from the wrapper's log lines `start end command` (pure)."""
    totals: Dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            totals[parts[2]] = totals.get(parts[2], 0.0) + float(parts[1]) - float(parts[0])
    return totals


@dataclass
class Workspace:
    """A private cache, device directory, target file and reports directory for the bench's profiles."""

    root: Path
    cache_dir: Path = field(init=False)
    reports_dir: Path = field(init=False)
    target_file: Path = field(init=False)
    agent_log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.cache_dir = self.root / "cache"
        self.reports_dir = self.root / "reports"
        self.target_file = self.root / "targets" / "local.yaml"
        self.agent_log = self.root / "agent-wall.log"

    def create(self, template: Path = Path("targets/local.yaml")) -> "Workspace":
        self.target_file.parent.mkdir(parents=True, exist_ok=True)
        wrapper = self.root / "timed-python"
        wrapper.write_text(WRAPPER.format(python=os.path.abspath(sys.executable), log=self.agent_log))
        wrapper.chmod(0o755)
        target = yaml.safe_load(template.read_text())
        target.update(workdir=str(self.root / "device-local"), python=str(wrapper))
        self.target_file.write_text(yaml.safe_dump(target, sort_keys=False))
        return self

    @property
    def history(self) -> Path:
        return self.root / "history.sqlite"

    def env(self) -> Dict[str, str]:
        return {**os.environ, "HARNESS_CACHE_DIR": str(self.cache_dir), "TF_CPP_MIN_LOG_LEVEL": "3",
                "HARNESS_HISTORY": str(self.history)}


def seed_history(ws: Workspace, run_label: str, n_runs: int) -> int:
    """`n_runs` earlier nights of the cold run's cells in the workspace's history store, each cell's samples
    scaled by a few per cent as quiet nights vary, so the warm profiles draw a trend page over that history as a
    farm's nightly job does. Returns the runs the store then holds."""
    import numpy as np
    from harness.history.store import History
    from harness.schema.run_results import RunResults
    from harness.schema.rundir import RunDir
    results = RunResults.load(RunDir(ws.reports_dir / run_label))
    store, rng = History(ws.history), np.random.default_rng(0)
    rows, samples = results.rows, results.latency_samples()
    for night in range(n_runs):
        scale = float(rng.normal(1.0, 0.02))
        run_id = f"night-{night:03d}"
        store.record(run_id, [{**r, "run_id": run_id} for r in rows],
                     {c: np.asarray(v) * scale for c, v in samples.items() if not isinstance(v, list)},
                     started_at=f"2026-01-01T00:{night // 60:02d}:{night % 60:02d}+00:00")
    return len(store.runs())


def timed_profile(ws: Workspace, label: str, model: str = "digits_cnn", extra: tuple = ()) -> ProfileTiming:
    ws.agent_log.write_text("")
    run: ControllerRun = run_controller(["profile", "--model", model, "--target", str(ws.target_file),
                                         "--reports-dir", str(ws.reports_dir), "--run-id", label, "-q", *extra],
                                        env=ws.env())
    timing = ProfileTiming(label, run.to_dict())
    run_dir = ws.reports_dir / label
    documents = [json.loads(p.read_text()) for p in sorted((run_dir / "agent").glob("*.json"))]
    timing.cells = len(documents)
    timing.agent_timed_s, timing.agent_estimated_untimed_s = agent_time_from_documents(documents)
    walls = process_wall_from_log(ws.agent_log.read_text())
    timing.agent_process_wall_s, timing.probe_process_wall_s = walls.get("run", 0.0), walls.get("probe", 0.0)
    results = run_dir / "results.json"
    if results.exists():
        rows = json.loads(results.read_text())
        timing.cell_duration_s = sum(r.get("duration_s") or 0.0 for r in rows)
        for row in rows:
            timing.statuses[row.get("status")] = timing.statuses.get(row.get("status"), 0) + 1
    return timing


def overhead(ws: Workspace, warm_runs: int = 3, log: Callable[[str], None] = lambda s: None,
             history_runs: int = 100) -> Dict[str, Any]:
    """A cold profile, then `warm_runs` warm reruns over a history of `history_runs` earlier runs; figures for
    bench.json."""
    cold = timed_profile(ws, "cold")
    log(f"  cold profile: {cold.run['wall_s']:.1f}s wall, agents timed {cold.agent_timed_s:.2f}s "
        f"(+{cold.agent_estimated_untimed_s:.2f}s untimed), agent processes {cold.agent_process_wall_s:.2f}s")
    in_history = seed_history(ws, "cold", history_runs) if history_runs else 1
    log(f"  history: {in_history} runs before the warm profiles")
    warm = []
    for i in range(warm_runs):
        warm.append(timed_profile(ws, f"warm{i + 1}"))
        log(f"  warm profile {i + 1}: {warm[-1].run['wall_s']:.1f}s wall")
    warm_walls = [w.run["wall_s"] for w in warm]
    warm_median = statistics.median(warm_walls) if warm_walls else None
    representative = min(warm, key=lambda w: abs(w.run["wall_s"] - warm_median)) if warm else None
    return {
        "model": "digits_cnn", "target": "local (fresh workdir)", "history_runs": in_history,
        "cold": cold.to_dict(),
        "warm": [w.to_dict() for w in warm],
        "warm_median_wall_s": warm_median,
        "warm_over_cold": warm_median / cold.run["wall_s"] if warm_median else None,
        "warm_wall_over_agent_own": (warm_median / representative.agent_own_s
                                     if representative and representative.agent_own_s else None),
        "warm_wall_over_agent_process": (warm_median / representative.agent_process_wall_s
                                         if representative and representative.agent_process_wall_s else None),
        "ok": all(t.run["exit_code"] == 0 and set(t.statuses) == {"ok"} for t in [cold, *warm]),
    }

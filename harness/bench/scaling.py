"""Scaling: the wall time of a nightly run (`harness farm run`) over 1, 3 and 6 simulated devices.

Each size gets a fresh simulated farm (`harness.farm.farm_up` into a private
state and targets directory, so a farm the user runs is left alone): real
sshd per device on loopback, its own keys, CPU pinning and quotas, and an
empty device working directory, so every size uploads its artifacts. The
host cache is the overhead step's warm one: nothing is trained or converted,
the time is dispatch, upload, the agents and collation.

Devices cycle through the classes sim-pi4, sim-jetson, sim-x86, so more
devices also means more cells (a pi4 runs only TFLite). On a machine where
the farm cannot start (no sshd), N copies of the local target stand in, and
the result says so.
"""
from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import yaml

from harness.bench.memory import run_controller
from harness.bench.overhead import Workspace

#: the transport registry loads its plugins lazily on first lookup, and `farm run` looks it up from one worker
#: thread per device at once; preloading it in the controller keeps that race out of the timing (see docs/bench.md)
PRELOAD_REGISTRIES = True


def _results(run_dir: Path) -> List[Dict[str, Any]]:
    import json
    path = run_dir / "results.json"
    return json.loads(path.read_text()) if path.exists() else []


def local_copies(root: Path, n: int, template: Path = Path("targets/local.yaml")) -> List[Path]:
    """N local targets with distinct names and working directories (the fallback when no farm can start)."""
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        target = yaml.safe_load(template.read_text())
        target.update(name=f"local-{i + 1}", workdir=str(root / f"device-{i + 1}"))
        path = root / f"local-{i + 1}.yaml"
        path.write_text(yaml.safe_dump(target, sort_keys=False))
        files.append(path)
    return files


def nightly(ws: Workspace, n: int, preload: bool = PRELOAD_REGISTRIES, log: Callable[[str], None] = lambda s: None,
            model: str = "digits_cnn") -> Dict[str, Any]:
    """One nightly run over n fresh simulated devices; falls back to n local copies when the farm cannot start."""
    from harness.farm import FarmError, farm_down, farm_up
    state_dir, targets_dir = ws.root / f"farm-{n}", ws.root / f"farm-{n}-targets"
    mode, note = "ssh-farm", ""
    try:
        farm = farm_up(n, state_dir, targets_dir)
        target_files = [Path(d.target_file) for d in farm.devices]
        devices = [f"{d.name} ({d.device_class})" for d in farm.devices]
    except (FarmError, OSError) as exc:
        mode, note = "local-copies", f"simulated SSH farm unavailable ({exc}); ran {n} copies of the local target"
        log(f"  {note}")
        target_files = local_copies(ws.root / f"local-{n}", n)
        devices = [p.stem for p in target_files]
    label = f"nightly-{n}"
    args = ["farm", "run", "--model", model, "--reports-dir", str(ws.reports_dir), "--run-id", label, "-q"]
    for path in target_files:
        args += ["-t", str(path)]
    try:
        run = run_controller(args, env=ws.env(), preload_registries=preload)
    finally:
        if mode == "ssh-farm":
            farm_down(state_dir)
    rows = _results(ws.reports_dir / label)
    statuses = Counter(r.get("status") for r in rows)
    errors = sorted({f"{r.get('error_category')}: {r.get('error_message')}" for r in rows
                     if r.get("status") in ("failed", "lost")})
    ran = [r for r in rows if r.get("status") == "ok"]
    log(f"  {n} device(s): {run.wall_s:.1f}s wall, {dict(statuses)}")
    return {"devices": n, "mode": mode, "device_names": devices, "wall_s": run.wall_s, "exit_code": run.exit_code,
            "cells": len(rows), "cells_ok": len(ran), "statuses": dict(statuses), "errors": errors[:5],
            "agent_p50_ms_median": statistics.median([r["latency_p50_ms"] for r in ran]) if ran else None,
            "controller_peak_rss_bytes": run.controller_peak_rss_bytes,
            "sampled_peak_rss_bytes": run.sampled_peak_rss_bytes, "tree_max_rss_bytes": run.tree_max_rss_bytes,
            "preloaded_registries": preload, "note": note}


def scaling(ws: Workspace, sizes: Sequence[int] = (1, 3, 6), preload: bool = PRELOAD_REGISTRIES,
            log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    runs = [nightly(ws, n, preload, log) for n in sizes]
    base = runs[0]["wall_s"] if runs else None
    for run in runs:
        run["wall_over_smallest"] = run["wall_s"] / base if base else None
        run["wall_per_ok_cell_s"] = run["wall_s"] / run["cells_ok"] if run["cells_ok"] else None
    return {"model": "digits_cnn", "runs": runs,
            "mode": "ssh-farm" if all(r["mode"] == "ssh-farm" for r in runs) else "local-copies (see notes)"}

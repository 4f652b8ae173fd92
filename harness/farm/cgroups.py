"""CPU quota and memory limit for a simulated device's sshd (and every session it forks).

Works with cgroup v1 (separate cpu and memory hierarchies) and v2 (one
unified tree). Where the hierarchy is missing or not writable (an
unprivileged container), the limit is skipped and the reason returned, so
the farm still starts; pinning CPUs with sched_setaffinity needs no cgroup.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import List, Optional, Tuple

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
log = logging.getLogger("harness.farm.cgroups")


def detect(root: Path = ROOT) -> Optional[str]:
    """'v2', 'v1' or None (no usable cgroup filesystem)."""
    if (root / "cgroup.controllers").exists():
        return "v2"
    if (root / "cpu").is_dir() or (root / "memory").is_dir():
        return "v1"
    return None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def apply_limits(group: str, pid: int, cpu_quota: Optional[float], memory_bytes: Optional[int],
                 root: Path = ROOT) -> Tuple[List[str], List[str]]:
    """Put pid into cgroup(s) named `harness-farm/<group>` with these limits.

    Returns (cgroup directories created, notes about limits that could not be applied).
    """
    created: List[str] = []
    notes: List[str] = []
    if cpu_quota is None and memory_bytes is None:
        return created, notes
    version = detect(root)
    if version is None:
        return created, [f"no cgroup filesystem at {root}: CPU quota and memory limit not applied"]
    wanted = []
    if cpu_quota is not None:
        value = f"{int(cpu_quota * PERIOD_US)} {PERIOD_US}"
        wanted.append(("cpu", [("cpu.cfs_period_us", str(PERIOD_US)), ("cpu.cfs_quota_us", str(int(cpu_quota * PERIOD_US)))]
                       if version == "v1" else [("cpu.max", value)]))
    if memory_bytes is not None:
        wanted.append(("memory", [("memory.limit_in_bytes", str(memory_bytes))] if version == "v1"
                       else [("memory.max", str(memory_bytes))]))
    if version == "v2":
        base = root / "harness-farm"
        try:
            base.mkdir(exist_ok=True)
            controllers = " ".join(f"+{c}" for c, _ in wanted)
            for parent in (root, base):
                _write(parent / "cgroup.subtree_control", controllers)
            directory = base / group
            directory.mkdir(exist_ok=True)
            created.append(str(directory))
            for _, settings in wanted:
                for name, value in settings:
                    _write(directory / name, value)
            _write(directory / "cgroup.procs", str(pid))
        except OSError as exc:
            notes.append(f"cgroup v2 limits not applied ({exc.strerror or exc}: {getattr(exc, 'filename', '')})")
        return created, notes
    for controller, settings in wanted:
        hierarchy = root / controller
        if not hierarchy.is_dir():
            notes.append(f"no cgroup v1 '{controller}' hierarchy at {hierarchy}: {controller} limit not applied")
            continue
        directory = hierarchy / "harness-farm" / group
        try:
            directory.mkdir(parents=True, exist_ok=True)
            created.append(str(directory))
            for name, value in settings:
                _write(directory / name, value)
            _write(directory / "cgroup.procs", str(pid))
        except OSError as exc:
            notes.append(f"cgroup v1 {controller} limit not applied ({exc.strerror or exc}: "
                         f"{getattr(exc, 'filename', '')})")
    return created, notes


def usage_group(group: str, pid: int, root: Path = ROOT) -> Tuple[Optional[str], List[str], List[str]]:
    """Put pid into a group whose CPU time can be read (v1: `cpuacct/harness-farm/<group>`, v2: the group of
    apply_limits), for the simulated power sensor's model. Returns (the usage file, directories created, notes)."""
    version = detect(root)
    if version is None:
        return None, [], [f"no cgroup filesystem at {root}: no CPU usage for the simulated power sensor"]
    if version == "v2":
        directory = root / "harness-farm" / group
        usage = directory / "cpu.stat"
    else:
        directory = root / "cpuacct" / "harness-farm" / group
        usage = directory / "cpuacct.usage"
    created = [] if directory.is_dir() else [str(directory)]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write(directory / "cgroup.procs", str(pid))
    except OSError as exc:
        return None, created, [f"cgroup CPU usage not available ({exc.strerror or exc}: {getattr(exc, 'filename', '')})"
                               f": the simulated power sensor is off"]
    return (str(usage) if usage.exists() else None), created, []


def _pids(directory: Path) -> List[int]:
    try:
        return [int(p) for p in (directory / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def remove(directories: List[str], timeout_s: float = 5.0) -> List[str]:
    """Kill what is left in these cgroups (device sessions) and remove them; returns notes on failures."""
    notes = []
    for name in directories:
        directory = Path(name)
        if not directory.is_dir():
            continue
        for pid in _pids(directory):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                directory.rmdir()
                break
            except OSError as exc:
                # A killed process leaves the cgroup only once it has exited; rmdir says EBUSY till then.
                if time.monotonic() > deadline:
                    notes.append(f"could not remove {directory}: {exc.strerror or exc}")
                    break
                time.sleep(0.05)
    return notes

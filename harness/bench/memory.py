"""The host controller's peak memory during a run.

`run_controller` starts the harness CLI as a child through
harness.bench.controller, which records the controller process's own VmHWM
when it exits (agents are separate processes, so they are not in it). While
it runs, VmRSS is sampled from /proc as a cross-check, and wait4's rusage
gives the largest process anywhere in the controller's tree (agents included).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

SAMPLE_INTERVAL_S = 0.02


@dataclass(frozen=True)
class ControllerRun:
    """One run of the `harness` CLI as a child process."""

    args: List[str]
    exit_code: int
    wall_s: float
    #: the controller's own VmHWM at exit (exact; agents excluded)
    controller_peak_rss_bytes: Optional[int]
    #: the highest VmRSS seen while sampling every 20 ms (a cross-check: at most the true peak)
    sampled_peak_rss_bytes: Optional[int]
    #: wait4's ru_maxrss: the largest single process in the controller's tree, agents included
    tree_max_rss_bytes: Optional[int]
    stdout_tail: str = ""

    def to_dict(self) -> Dict:
        return asdict(self)


def _rss_kib(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def run_controller(harness_args: List[str], env: Optional[Dict[str, str]] = None, timeout_s: float = 900.0,
                   preload_registries: bool = False, cwd: Optional[Path] = None) -> ControllerRun:
    """Run `harness <harness_args>` as a child; wall time and memory as above."""
    with tempfile.TemporaryDirectory(prefix="bench-controller-") as tmp:
        peak_file, log_file = Path(tmp) / "peak.json", Path(tmp) / "output.txt"
        own = [str(peak_file)] + (["--preload-registries"] if preload_registries else [])
        argv = [sys.executable, "-m", "harness.bench.controller", *own, "--", *harness_args]
        samples: List[int] = []
        done = threading.Event()
        with open(log_file, "wb") as log:
            started = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)

            def sample() -> None:
                while not done.wait(SAMPLE_INTERVAL_S):
                    kib = _rss_kib(proc.pid)
                    if kib is not None:
                        samples.append(kib)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            killer = threading.Timer(timeout_s, proc.kill)  # a run past its time still ends, as a failure
            killer.start()
            try:
                _, status, rusage = os.wait4(proc.pid, 0)
            finally:
                killer.cancel()
            wall = time.perf_counter() - started
            proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
            done.set()
            sampler.join()
        peak = json.loads(peak_file.read_text()) if peak_file.exists() else {}
        output = log_file.read_text(errors="replace")
    return ControllerRun(list(harness_args), proc.returncode, wall, peak.get("peak_rss_bytes"),
                         max(samples) * 1024 if samples else None,
                         rusage.ru_maxrss * 1024 if rusage else None, "\n".join(output.strip().splitlines()[-15:]))

"""A farm bigger than one host: build steps and device jobs on dask.distributed workers.

Only used when a scheduler is named (`--scheduler tcp://HOST:PORT`, DASK_SCHEDULER_ADDRESS, or a
DaskDispatcher(distributed.Client(...)) passed to run_profile as its dispatcher); otherwise nothing here runs
and dask is never imported. Nothing assumes a shared disk:

* **Builds.** Each build step (prepare a reference, compress a variant, convert and inspect one format) is one
  dask task. The host first runs the step against its own content cache in read-only mode
  (:class:`TrackingCache`): if every entry the step needs is there, nothing is submitted. Otherwise the step
  runs on a worker, in the worker's own cache (seeded with the entries it depends on, sent as bytes), and the
  cache entries it made come back as bytes into the host's cache; the host then runs the step again, which is
  now a pure cache hit and gives the same objects a host-only build would. An artifact already built is never
  rebuilt, on any worker, and each step runs once.
* **Device jobs.** A target's job runs on a worker (one with the resource `site-<site>` where the target says
  `site:`), with its artifacts and evaluation files sent as bytes. It writes into a scratch copy of the run on
  the worker; each record it writes (cell, its outputs and agent documents, device probe) is streamed to the
  host as a dask event, and the host writes the run directory the moment it arrives. The job's result carries
  every file again, so nothing streamed and lost in flight is missing at the end.
* **Faults.** A worker that dies mid-job leaves the job's unrecorded cells `lost` / `worker_lost` with the
  worker's address; a job is never run twice (a rerun that dask schedules after a worker died refuses, since
  cells it measured are already recorded), so `harness run --resume` finishes the rest on the remaining workers.

Everything submitted is module-level functions and plain frozen data.
"""
from __future__ import annotations

import logging
import os
import re
import socket
from typing import Any, Dict, List, Optional, Sequence, Tuple

from harness.core.errors import HarnessError, LibraryMissing
from harness.core.progress import SILENT, Progress
from harness.prepare.cache import ContentCache
from harness.run.dispatch import Dispatcher
from harness.run.plan import TargetJob
from harness.schema.rundir import RunDir
from harness.run.dask.workers import CONNECT_TIMEOUT_S, SCHEDULER_ENV
from harness.run.dask.prepare_on_workers import build_on_workers
from harness.run.dask.device_jobs import dispatch_on_workers

log = logging.getLogger("harness.run.dask")

# ---------------------------------------------------------------- connecting
def scheduler_address(flag: Optional[str] = None) -> str:
    """The scheduler named by --scheduler, else by DASK_SCHEDULER_ADDRESS; '' for an embedded run."""
    return (flag or os.environ.get(SCHEDULER_ENV, "")).strip()

def connect(address: str, timeout_s: float = CONNECT_TIMEOUT_S):
    """A distributed.Client for the scheduler at address, or one HarnessError that names the address."""
    try:
        from distributed import Client
    except ImportError:
        raise LibraryMissing(f"scheduler {address} given but dask.distributed is not installed: pip install -e "
                             "'.[distributed]' (or make venv EXTRAS=distributed)", "distributed") from None
    def unreachable(why: str) -> HarnessError:
        return HarnessError(f"cannot reach the dask scheduler at {address} ({why}); start one with `dask scheduler` "
                            f"on that host, or check the address (--scheduler, {SCHEDULER_ENV})")

    # A plain TCP connect first: it fails at once and plainly, where a Client retries and leaves a half object.
    scheme = address.split("://", 1)[0] if "://" in address else "tcp"
    if scheme not in ("tcp", "tls", "ws", "wss", "ucx"):
        raise unreachable(f"unknown address scheme {scheme!r}: give tcp://HOST:PORT")
    match = re.match(r"^(?:tcp://)?\[?([^\]/]+?)\]?:(\d+)/?$", address)
    if address.startswith("tcp://") or match:
        if not match:
            raise unreachable("expected tcp://HOST:PORT")
        try:
            socket.create_connection((match.group(1), int(match.group(2))), timeout=timeout_s).close()
        except OSError as exc:
            raise unreachable(exc.strerror or type(exc).__name__) from None
    try:
        return Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise unreachable(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None

# ---------------------------------------------------------------- the dispatcher
class DaskDispatcher(Dispatcher):
    """A run's build steps and device jobs on the workers of `client`'s cluster (harness profile --scheduler);
    whoever made the client closes it."""

    def __init__(self, client):
        self.client = client

    def build(self, recipes: Sequence[Any], variants: Dict[str, List[str]], cache: ContentCache,
              progress: Progress = SILENT, inspector: Any = None) -> List[Tuple[Any, List[Any]]]:
        return build_on_workers(recipes, variants, cache, self.client, progress, inspector=inspector)

    def run_jobs(self, jobs: Sequence[TargetJob], run: RunDir, progress: Progress = SILENT) -> None:
        dispatch_on_workers(jobs, self.client, run, progress)

"""Where the work runs: the Dispatcher protocol and ThreadDispatcher (everything on this host, one thread per
device). harness.run.dask.DaskDispatcher spreads the same plain-data jobs over a dask cluster's workers."""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from concurrent.futures import Executor, ThreadPoolExecutor, as_completed
from typing import Any, Dict, List, Optional, Sequence, Tuple

from harness.core.progress import SILENT, Progress
from harness.prepare.cache import ContentCache
from harness.prepare.steps import Artifact, PreparedModel, build_model_artifacts
from harness.run.device_job import lose_unfinished, run_target_job
from harness.run.plan import TargetJob
from harness.schema.rundir import RunDir

log = logging.getLogger("harness.run.dispatch")


class Dispatcher(ABC):
    """Where a run's work happens: the build steps of its models, and one job per target.

    ThreadDispatcher does both on this host; harness.run.dask.DaskDispatcher spreads them over a dask cluster's
    workers (harness profile --scheduler). The caller picks one, so this module never imports dask.
    """

    @abstractmethod
    def build(self, recipes: Sequence[Any], variants: Dict[str, List[str]], cache: ContentCache,
              progress: Progress = SILENT) -> List[Tuple[PreparedModel, List[Artifact]]]:
        """(prepared, artifacts) per recipe, in the recipes' order, as build_model_artifacts gives them, with
        every artifact in `cache`."""

    @abstractmethod
    def run_jobs(self, jobs: Sequence[TargetJob], run: RunDir, progress: Progress = SILENT) -> None:
        """Every target's job, each finished cell recorded in `run`; a broken job never stops the others."""

class ThreadDispatcher(Dispatcher):
    """Everything on this host: the models built one after another, then one thread per device (or `executor`,
    a concurrent.futures.Executor, runs the jobs)."""

    def __init__(self, executor: Optional[Executor] = None):
        self.executor = executor

    def build(self, recipes: Sequence[Any], variants: Dict[str, List[str]], cache: ContentCache,
              progress: Progress = SILENT) -> List[Tuple[PreparedModel, List[Artifact]]]:
        return [build_model_artifacts(recipe, variants.get(recipe.name, []), cache, progress) for recipe in recipes]

    def run_jobs(self, jobs: Sequence[TargetJob], run: RunDir, progress: Progress = SILENT) -> None:
        if not jobs:
            return
        own = self.executor is None
        executor = self.executor or ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="device")
        try:
            futures = {executor.submit(run_target_job, job, progress): job for job in jobs}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    future.result()
                except Exception as exc:  # a bug in one device's job: its unfinished cells are lost, others go on
                    log.error("job for %s crashed", job.target.name, exc_info=True)  # the traceback: the run's log
                    progress(f"[{job.target.name}] the harness failed on this device's job ({type(exc).__name__}: "
                             f"{exc}); its unfinished cells are recorded lost, the traceback is in the run's log")
                    lose_unfinished(job, f"{type(exc).__name__}: {exc}")
        finally:
            if own:
                executor.shutdown(wait=True)

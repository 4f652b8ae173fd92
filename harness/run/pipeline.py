"""The run: prepare → plan → dispatch the device jobs → collate, as a matrix of independent cells.

A cell is (model, variant, format, target, runtime configuration). Every artifact is prepared first (cached by
content, harness.prepare), then one job per target runs its cells (harness.run.device_job, each cell through
harness.run.cell_steps). A Dispatcher says where both happen (harness.run.dispatch): threads on this host, or
dask workers for a farm too large for one host (harness.run.dask); the jobs are the same plain data either way.
Each cell ends as a result row written the moment it finishes, so nothing measured is ever lost; collation reads
them once into a RunResults (harness.run.collate). The run knows nothing of the report or the history: the
command hands the results to them (harness.commands.publish).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from harness.core.progress import SILENT, Progress
from harness.prepare.cache import ContentCache
from harness.run.collate import collate
from harness.run.dispatch import Dispatcher, ThreadDispatcher
from harness.run.plan import (BuiltModels, RunSettings, build_manifest, cells_to_run, pick_configs, plan_cells,
                              plan_jobs, validate_recipes)
from harness.schema.pairing import interleave
from harness.schema.run_results import RunResults
from harness.schema.rundir import REPORTS_DIR, RunDir, new_run_id
from harness.schema.targets import TargetSpec


def run_profile(recipes: Sequence[Any], targets: Sequence[TargetSpec], variants: Optional[Dict[str, List[str]]] = None,
                settings: RunSettings = RunSettings(), run_id: Optional[str] = None,
                reports_dir: Path = REPORTS_DIR, cache: Optional[ContentCache] = None,
                progress: Progress = SILENT, dispatcher: Optional[Dispatcher] = None, resume: bool = False,
                pairs: Optional[Dict[str, str]] = None,
                on_start: Optional[Callable[[RunDir], Any]] = None) -> RunResults:
    """Prepare every (model, variant, format) artifact, profile it on every target, collate.

    variants maps a model name to the variant names to make (default: none, the reference only).
    With resume=True and an existing run_id, only cells without a result (or lost ones) run.
    pairs maps a baseline twin's model name to its candidate's (harness.schema.pairing): each twin cell is measured
    right after its candidate's, round after round, and the manifest records the pairing for the gate.
    dispatcher says where the builds and device jobs run (default: ThreadDispatcher, all on this host).
    on_start is called with the run's directory once the recipes are valid and it exists (the command attaches the
    run's log there).
    """
    cache = cache or ContentCache()
    variants = variants or {}
    pairs = pairs or {}
    dispatcher = dispatcher or ThreadDispatcher()
    targets = pick_configs(targets, settings.runtime_configs)
    validate_recipes(recipes, variants)
    run_id = run_id or new_run_id()
    run = RunDir.create(run_id, reports_dir)
    if on_start is not None:
        on_start(run)
    models = BuiltModels.of(dispatcher.build(recipes, variants, cache, progress))
    models.tell_cache_use(progress)
    artifacts = interleave(models.artifacts, pairs)
    planned = plan_cells(artifacts, targets, settings.runtime_configs)
    cells = cells_to_run(run, planned, resume, progress)
    manifest = build_manifest(run_id, recipes, variants, targets, settings, models, artifacts, planned, pairs,
                              resumed=resume and run.manifest_path.exists())
    run.write_manifest(manifest)
    progress(f"run {run_id}: {len(cells)} cells on {len(targets)} target(s)")
    dispatcher.run_jobs(plan_jobs(targets, cells, models.evals, run, settings), run, progress)
    return collate(run, manifest, built=models.converted, reused=models.reused)

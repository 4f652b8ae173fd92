"""The plan of a run: its settings, the cells (model, variant, format, target, runtime configuration), one job
per target, and the manifest that records the whole plan so a resume and collation know it.

Plain, picklable data: a job crosses to a dask worker as it is.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from harness.core.progress import SILENT, Progress
from harness.judge.evaluate import ScoringSpec
from harness.prepare.artifact import Artifact, PreparedModel
from harness.schema.pairing import MANIFEST_KEY as PAIRED_KEY
from harness.schema.results import cell_id, needs_rerun
from harness.schema.rundir import RunDir
from harness.schema.runtime_configs import RuntimeConfig, default_config
from harness.schema.targets import TargetSpec


@dataclass(frozen=True)
class RunSettings:
    warmup: int = 10
    iterations: int = 100
    #: None: the target's own thread count
    threads: Optional[int] = None
    #: outputs for at most this many evaluation samples (0: all)
    max_samples: int = 0
    #: after each cell's timed run, a separate profiled session: per-layer times and where each node ran
    #: (reports/<run>/profiles/<cell>.json)
    profile: bool = True
    profile_runs: int = 10
    #: only the runtime configurations with these names (harness profile --runtime-config); empty: all
    runtime_configs: Tuple[str, ...] = ()
    #: the formats the user named (harness profile --formats): a missing library for one of them fails its
    #: cells instead of skipping them
    formats: Tuple[str, ...] = ()
    #: per-cell agent timeout; None: the target's command_timeout_s
    cell_timeout_s: Optional[float] = None
    #: each agent run times for at least this long (and at least `iterations`), at most max_duration_s
    min_duration_s: float = 1.0
    max_duration_s: float = 60.0
    #: independent agent runs per cell, interleaved across the device's cells (A B C A B C)
    repeats: int = 1

    @classmethod
    def from_manifest(cls, doc: Dict[str, Any]) -> "RunSettings":
        """A run's recorded settings; keys this version no longer has (ov_precision, now a runtime
        configuration) are left out."""
        known = {f for f in cls.__dataclass_fields__}
        kept = {k: v for k, v in doc.items() if k in known}
        for key in ("runtime_configs", "formats"):
            if key in kept:
                kept[key] = tuple(kept[key])
        return cls(**kept)

@dataclass(frozen=True)
class ModelEval:
    """What a device job needs to score a model's cells (plain paths and data: picklable)."""

    model: str
    eval_inputs_path: str
    #: '' without labels
    labels_path: str
    reference_outputs_path: str
    #: the reference's own figures (accuracy, metric_*), for retention
    reference_figures: Dict[str, Any]
    scoring: ScoringSpec
    #: the model keeps state between inferences: the agent starts it again before its outputs
    stateful: bool = False

    @classmethod
    def of(cls, prepared: Any) -> "ModelEval":
        """From a prepared model (harness.prepare.steps.PreparedModel)."""
        return cls(prepared.recipe.name, str(prepared.eval_inputs_path.resolve()),
                   str(prepared.labels_path.resolve()) if prepared.labels_path else "",
                   str(prepared.reference_outputs_path.resolve()), prepared.reference_figures,
                   replace(ScoringSpec.from_recipe(prepared.recipe), output_quantization=tuple(
                       (s.name, s.quantization) for s in prepared.interface.outputs)), prepared.interface.stateful)

@dataclass(frozen=True)
class Cell:
    artifact: Artifact
    target: str
    #: how the target runs the artifact's format (the runtime's default unless the target names others)
    runtime_config: RuntimeConfig = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.runtime_config is None:
            object.__setattr__(self, "runtime_config", default_config(self.artifact.format))

    @property
    def cell_id(self) -> str:
        config = self.runtime_config
        return cell_id(self.artifact.model, self.artifact.variant, self.artifact.format, self.target,
                       "" if config.is_default else config.name)

@dataclass(frozen=True)
class TargetJob:
    target: TargetSpec
    cells: Tuple[Cell, ...]
    evals: Dict[str, ModelEval]
    run_root: str
    settings: RunSettings

def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

#: an emulated device computes outputs for at most this many samples (qemu is ~200x slower than the board)
EMULATED_MAX_SAMPLES = 200

def settings_for(target: TargetSpec, settings: RunSettings) -> RunSettings:
    """An emulated device (qemu) checks that a model loads and what it outputs; its timing means nothing,
    so it times briefly and scores fewer samples."""
    if not target.emulated:
        return settings
    return replace(settings, warmup=min(settings.warmup, 1), iterations=min(settings.iterations, 5),
                   min_duration_s=min(settings.min_duration_s, 0.1), repeats=1,
                   max_samples=min(settings.max_samples or EMULATED_MAX_SAMPLES, EMULATED_MAX_SAMPLES))

def pick_configs(targets: Sequence[TargetSpec], names: Sequence[str]) -> List[TargetSpec]:
    """Each target with only the named runtime configurations (all when none are named); a name no target
    has is a ConfigError listing the ones they have."""
    from harness.schema.runtime_configs import check_picked, pick
    if not names:
        return list(targets)
    check_picked({t.name: t.runtime_configs for t in targets}, names)
    return [replace(t, runtimes=(), runtime_configs=pick(t.runtime_configs, names)) for t in targets]

def plan_cells(artifacts: Sequence[Artifact], targets: Sequence[TargetSpec], only: Sequence[str] = ()) -> List[Cell]:
    """A cell per (artifact, target, runtime configuration of the artifact's format on that target); a target
    without the format gets one cell with the runtime's default (it ends skipped, saying why). With `only`
    (configuration names: harness profile --runtime-config), just the cells of those configurations."""
    cells = []
    for t in targets:
        for a in artifacts:
            configs = [c for c in t.runtime_configs if c.runtime == a.format] or [default_config(a.format)]
            cells += [Cell(a, t.name, c) for c in configs if not only or c.name in only]
    return cells

@dataclass(frozen=True)
class BuiltModels:
    """What the build gave the run: every artifact, and per model what scoring and the manifest need."""

    artifacts: List[Artifact]
    evals: Dict[str, ModelEval]
    data_notes: Dict[str, List[str]]
    interfaces: Dict[str, Dict[str, Any]]

    @classmethod
    def of(cls, models: Sequence[Tuple[PreparedModel, List[Artifact]]]) -> "BuiltModels":
        built = cls([], {}, {}, {})
        for prepared, model_artifacts in models:
            name = prepared.recipe.name
            built.artifacts.extend(model_artifacts)
            built.evals[name] = ModelEval.of(prepared)
            built.data_notes[name] = list(prepared.data_notes)
            built.interfaces[name] = {"source_format": prepared.source_format, **prepared.interface.to_doc()}
        return built

    @property
    def converted(self) -> int:
        """Artifacts made by this run (not found in the cache): converted, or made ready by a compressor."""
        return sum(1 for a in self.artifacts if not a.cached and not a.error)

    @property
    def reused(self) -> int:
        return sum(1 for a in self.artifacts if a.cached)

    def tell_cache_use(self, progress: Progress) -> None:
        if self.converted == 0:
            progress(f"cache: all {self.reused} artifacts reused, nothing converted")
        else:
            progress(f"cache: {self.converted} artifacts built (converted or compressed), {self.reused} reused")

def validate_recipes(recipes: Sequence[Any], variants: Dict[str, List[str]]) -> None:
    """Before any work: a bad name, parameter or entry point names its file and field."""
    from harness.prepare.recipes import validate_recipe

    for recipe in recipes:
        validate_recipe(recipe, variants.get(recipe.name, []))

def cells_to_run(run: RunDir, planned: Sequence[Cell], resume: bool, progress: Progress = SILENT) -> List[Cell]:
    """The planned cells; on a resume, only those without a result yet (a lost or device_busy cell runs again)."""
    if not resume:
        return list(planned)
    done = {c["row"]["cell_id"] for c in run.iter_cells() if not needs_rerun(c["row"])}
    cells = [c for c in planned if c.cell_id not in done]
    progress(f"resume {run.run_id}: {len(done)} cells already done, {len(cells)} to run")
    return cells

def build_manifest(run_id: str, recipes: Sequence[Any], variants: Dict[str, List[str]],
                   targets: Sequence[TargetSpec], settings: RunSettings, models: BuiltModels,
                   artifacts: Sequence[Artifact], planned: Sequence[Cell], pairs: Dict[str, str],
                   resumed: bool = False) -> Dict[str, Any]:
    """The run's manifest: what it was asked (models, variants, targets, settings, pairs), what the build
    made (artifacts, data notes, interfaces) and every cell planned, so a resume and collate know the whole."""
    manifest = {"run_id": run_id, "created_at": _now(), "models": [r.name for r in recipes],
                "model_sources": [r.source_path for r in recipes],
                "variants": {r.name: variants.get(r.name, []) for r in recipes},
                "model_files": {r.name: str(r.resolve(r.source.path)) for r in recipes if r.source.path},
                "recipes": {r.name: asdict(r) for r in recipes if not r.source_path},
                "data": models.data_notes, "interfaces": models.interfaces,
                "targets": [t.name for t in targets], "target_sources": [t.source_path for t in targets],
                "target_specs": [asdict(t) for t in targets],
                "settings": asdict(settings),
                "artifacts": [asdict(a) for a in artifacts],
                "planned_cells": [c.cell_id for c in planned],
                PAIRED_KEY: dict(pairs)}
    if resumed:
        manifest["resumed_at"] = _now()
    return manifest

def plan_jobs(targets: Sequence[TargetSpec], cells: Sequence[Cell], evals: Dict[str, ModelEval], run: RunDir,
              settings: RunSettings) -> List[TargetJob]:
    """One job per target that has cells to run, with the settings for that target."""
    jobs = []
    for target in targets:
        target_cells = tuple(c for c in cells if c.target == target.name)
        if target_cells:
            jobs.append(TargetJob(target, target_cells, evals, str(run.root.resolve()), settings_for(target, settings)))
    return jobs

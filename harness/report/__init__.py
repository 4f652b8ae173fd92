"""The report a person reads: `reports/<run-id>/index.html` and `summary.md`.

    write_report(results, targets) -> path of index.html

`results` is the run read once (harness.schema.run_results.RunResults): nothing here opens the run's
manifest or cell records again.

The page is self-contained for offline use: inline CSS, a little inline script, and PNG
images written beside it under `plots/` (made with matplotlib's Agg renderer).
`summary.md` is the same content in short for CI logs. Both are written even
when some or all cells failed; the failures are part of the report.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from harness.core.errors import HarnessError
from harness.schema.results import OK
from harness.schema.rundir import RunDir
from harness.schema.run_results import RunResults
from harness.judge.scores import (
    Disagreement,
    PairParity,
    cross_arch_parity,
    disagreements,
    pairwise_parity,
    parity_table,
    portability_scores,
    recommend,
    score_cells,
)
from harness.schema.targets import TARGETS_DIR, Budgets, TargetSpec, load_target
from harness.report.context import TABLE_ENOUGH_CELLS, ImageRef, ReportContext
from harness.report.int8 import Int8Finding
from harness.core.files import atomic_write_text
from harness.core.optional import library_missing

log = logging.getLogger("harness.report")

PLOTS_DIR = "plots"
INDEX_NAME = "index.html"
SUMMARY_NAME = "summary.md"


def recorded_budgets(manifest: Mapping[str, Any]) -> Dict[str, Budgets]:
    """The budgets each target had when the run was made: the manifest's `target_specs`.

    Pure. A spec whose budgets cannot be read is left out (the caller falls
    back and says so); unknown budget fields of a newer harness are ignored.
    """
    known = {f.name for f in dataclasses.fields(Budgets)}
    optional = {f.name for f in dataclasses.fields(Budgets) if f.default is None}
    found: Dict[str, Budgets] = {}
    for spec in manifest.get("target_specs") or []:
        if not isinstance(spec, Mapping) or not isinstance(spec.get("budgets"), Mapping):
            continue
        try:
            # an optional budget left unset (energy_mj: null) stays unset; any other must be a number
            found[str(spec["name"])] = Budgets(**{k: None if v is None and k in optional else float(v)
                                                  for k, v in spec["budgets"].items() if k in known})
        except (KeyError, TypeError, ValueError):
            continue
    return found


def budgets_for(target_names: Sequence[str], targets: Mapping[str, TargetSpec] | None,
                targets_dir: Path = TARGETS_DIR, recorded: Mapping[str, Budgets] | None = None,
                ) -> Tuple[Dict[str, Budgets], List[str]]:
    """Each target's budgets: as recorded in the run's manifest, else `targets`, else today's
    targets/<name>.yaml (noted: the file may have changed since the run), else the defaults (noted)."""
    budgets: Dict[str, Budgets] = {}
    notes: List[str] = []
    for name in target_names:
        if recorded and name in recorded:
            budgets[name] = recorded[name]
            continue
        if targets and name in targets:
            budgets[name] = targets[name].budgets
            continue
        try:
            target = load_target(name, targets_dir)
            budgets[name] = target.budgets
            today = f"today's {Path(targets_dir) / (name + '.yaml')}" if target.source_path else \
                f"the built-in {name} target's"
            notes.append(f"{name}: the run did not record its budgets (made before target_specs were kept in "
                         f"manifest.json); {today} used")
        except HarnessError as exc:
            budgets[name] = Budgets()
            notes.append(f"{name}: default budgets used ({exc})")
    return budgets, notes


def run_budgets(results: RunResults, targets: Mapping[str, TargetSpec] | None = None,
                targets_dir: Path = TARGETS_DIR) -> Tuple[Dict[str, Budgets], List[str]]:
    """`budgets_for` the run's targets, with the budgets recorded in the run's own manifest first."""
    return budgets_for(results.targets, targets, targets_dir, recorded_budgets(results.manifest))


def side_by_side(all_outputs: Mapping[str, Mapping[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """Each cell's outputs as one (samples, values) matrix: every fixed-size output, flattened side by side
    in the order the cell wrote them, so pairwise parity covers all of a model's outputs."""
    outputs: Dict[str, np.ndarray] = {}
    for cell, arrays in all_outputs.items():
        n = min(len(a) for a in arrays.values())
        outputs[cell] = np.concatenate([np.asarray(a[:n], dtype=np.float64).reshape(n, -1)
                                        for a in arrays.values()], axis=1)
    return outputs


def dequantized_outputs(all_outputs: Mapping[str, Mapping[str, Any]], rows: Sequence[Mapping[str, Any]],
                        manifest: Mapping[str, Any]) -> Dict[str, Any]:
    """Each cell's integer outputs on the real scale of its model's quantized source outputs, as the cells were
    scored (harness.judge.evaluate.dequantize): a converted int8 file is compared with the others on reals."""
    from harness.judge.evaluate import dequantize
    model_of = {str(r["cell_id"]): str(r["model"]) for r in rows}
    interfaces = manifest.get("interfaces", {})
    out: Dict[str, Any] = {}
    for cell, arrays in all_outputs.items():
        outputs = (interfaces.get(model_of.get(cell, "")) or {}).get("outputs", [])
        quantization = tuple((o["name"], tuple(o["quantization"]) if o.get("quantization") else None)
                             for o in outputs)
        out[cell] = dequantize(dict(arrays), quantization)[0]  # type: ignore[arg-type]
    return out


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def build_context(results: RunResults, targets: Mapping[str, TargetSpec] | None = None,
                  targets_dir: Path = TARGETS_DIR, int8_findings: Optional[List[Int8Finding]] = None
                  ) -> ReportContext:
    """Scores, parity and recommendations for one run (no files written); `int8_findings`: run_int8_findings's,
    where the caller made them already (harness gate prints them too)."""
    from harness.report.crossarch import emulated_targets, load_all_outputs, target_arches
    from harness.report.findings import disagreement_groups
    from harness.report.profiles import load_profiles
    frame, rows, manifest, devices = results.frame, results.rows, results.manifest, results.devices
    profiles = load_profiles(results.root)
    target_names = results.targets
    budgets, notes = run_budgets(results, targets, targets_dir)
    parity = parity_table(frame)
    ok_ids = [str(r["cell_id"]) for r in rows if r.get("status") == OK]
    all_outputs = load_all_outputs(results.run_dir, ok_ids)  # read once: pairwise and cross-architecture parity
    all_outputs = dequantized_outputs(all_outputs, rows, manifest)
    outputs = side_by_side(all_outputs)
    groups = {str(r["cell_id"]): f"{r['model']}/{r['variant']}" for r in rows}
    pairs: Dict[str, List[PairParity]] = {}
    found: List[Disagreement] = []
    for model in sorted({str(m) for m in frame["model"]}):
        model_outputs = {c: o for c, o in outputs.items() if groups.get(c, "").startswith(model + "/")}
        pairs[model] = pairwise_parity(model_outputs)
        found += disagreements(pairs[model], groups)
    emulated = emulated_targets(target_names, manifest, targets, targets_dir)
    arches = target_arches(target_names, devices, manifest, targets, targets_dir)
    cross_arch = cross_arch_parity(frame, all_outputs, arches) if len(set(arches.values())) > 1 else []
    return ReportContext(
        run_id=results.run_id,
        generated_at=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        frame=frame, devices=devices,
        budgets=budgets, budget_notes=notes, cell_scores=score_cells(frame, budgets, emulated),
        portability=portability_scores(frame, budgets, emulated),
        recommendations=recommend(frame, budgets, emulated),
        parity=parity, pairs=pairs, disagreements=found, emulated=emulated, arches=arches, cross_arch=cross_arch,
        diagnostics=results.diagnostics,
        models={name: {**doc, "data": manifest.get("data", {}).get(name, []) + inspection_notes(manifest, name)}
                for name, doc in manifest.get("interfaces", {}).items()},
        profiles=profiles, disagreement_groups=disagreement_groups(found, pairs, rows),
        manifest=dict(manifest), run_notes=list(results.notes),
        int8_findings=run_int8_findings(results, profiles) if int8_findings is None else int8_findings)


def run_int8_findings(results: RunResults, profiles: Optional[Mapping[str, Any]] = None) -> List[Int8Finding]:
    """The run's quantized cells not faster than their float reference (harness.report.int8), with the run's
    per-layer profiles (read here unless given) and latency samples."""
    from harness.report.int8 import int8_slowdowns
    from harness.report.profiles import load_profiles
    return int8_slowdowns(results.rows, load_profiles(results.root) if profiles is None else profiles,
                          results.devices or {}, results.manifest, results.latency_samples())


def inspection_notes(manifest: Mapping[str, Any], model: str) -> List[str]:
    """Where a model's artifacts were inspected when that was not this host (it lacked the runtime): one note
    per place, naming the artifacts (the manifest's artifacts[].inspected_on)."""
    places: Dict[str, List[str]] = {}
    for artifact in manifest.get("artifacts") or []:
        where = artifact.get("inspected_on") or "host"
        if artifact.get("model") == model and where != "host":
            places.setdefault(where, []).append(f"{artifact.get('variant')}/{artifact.get('format')}")
    return [f"interface and operators of {', '.join(names)} read on {where}: this host has no runtime for them"
            for where, names in places.items()]


def draw_plots(ctx: ReportContext, run_dir: RunDir) -> None:
    """Write the PNGs the report shows under <run>/plots/ and list them in ctx.images."""
    from harness.report import plots
    from harness.report.energy import measured_targets
    out = run_dir.root / PLOTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.png"):
        stale.unlink()
    rows = ctx.rows
    images: Dict[str, List[ImageRef]] = {"parity": [], "pareto": [], "energy": [], "memory": []}
    configuration_at_target = {str(r["cell_id"]): f"{r.get('runtime_config') or r.get('format')}@{r.get('target')}"
                               for r in rows}
    for model in sorted({str(m) for m in ctx.frame["model"]}):
        if sum(1 for r in rows if str(r.get("model")) == model) <= TABLE_ENOUGH_CELLS:
            continue
        name = f"parity_{_safe(model)}.png"
        plots.parity_heatmap(ctx.parity, model, out / name)
        images["parity"].append(ImageRef(f"{PLOTS_DIR}/{name}", f"{model}: agreement with the reference"))
        model_cells = sorted({p.cell_a for p in ctx.pairs.get(model, [])} | {p.cell_b for p in ctx.pairs.get(model, [])})
        if len(model_cells) >= 2:
            name = f"pairwise_{_safe(model)}.png"
            plots.pairwise_heatmap(ctx.pairs[model], model_cells, out / name,
                                   f"{model}: top-1 agreement between cells", configuration_at_target)
            grouped = len(model_cells) > plots.MAX_PAIRWISE_CELLS
            images["parity"].append(ImageRef(f"{PLOTS_DIR}/{name}", f"{model}: agreement between cells" + (
                f" ({len(model_cells)} cells, shown by configuration and target: each square is the worst pair "
                f"of cells of the same variant between the two groups)" if grouped else "")))
    name = "pareto.png"
    plots.accuracy_vs_latency_by_target(rows, ctx.budgets, out / name, sorted(ctx.emulated))
    images["pareto"].append(ImageRef(f"{PLOTS_DIR}/{name}", "accuracy against p99 latency, one panel per target; "
                                     "the Pareto front's cells are named" + _budget_notes(ctx, rows)))
    energy_targets = measured_targets(rows)
    if energy_targets:  # the other targets' reasons are words, in the section (harness.report.html)
        plots.energy_vs_accuracy_by_target(rows, ctx.budgets, energy_targets, out / "energy.png")
        images["energy"].append(ImageRef(f"{PLOTS_DIR}/energy.png", "accuracy against energy per inference above "
                                         "idle, one panel per target that measured it; the Pareto front's cells "
                                         "are named"))
    if len(rows) <= TABLE_ENOUGH_CELLS:
        ctx.images = images
        return
    plots.memory_per_cell(rows, ctx.budgets, out / "memory.png")
    memory_mb = [float(r["peak_rss_bytes"]) / (1 << 20) for r in rows if r.get("status") == OK
                 and r.get("peak_rss_bytes") == r.get("peak_rss_bytes") and r.get("peak_rss_bytes") is not None]
    off_scale = [f"{t} {b.peak_memory_mb:g} MB" for t, b in sorted(ctx.budgets.items())
                 if memory_mb and not plots.budget_in_range(b.peak_memory_mb, memory_mb)]
    images["memory"].append(ImageRef(f"{PLOTS_DIR}/memory.png", "peak memory per cell" + (
        f"; budgets not drawn, far beyond the largest cell ({max(memory_mb):.0f} MB): {', '.join(off_scale)}"
        if off_scale else "")))
    ctx.images = images


def _budget_notes(ctx: ReportContext, rows: Sequence[Mapping[str, Any]]) -> str:
    """The caption's note on p99 budgets too far beyond a panel's data to draw (they would squash the data)."""
    from harness.report import plots
    notes = []
    for target, budget in sorted(ctx.budgets.items()):
        p99s = [float(r["latency_p99_ms"]) for r in rows if str(r.get("target")) == target and r.get("status") == OK
                and r.get("latency_p99_ms") is not None and r.get("latency_p99_ms") == r.get("latency_p99_ms")]
        if p99s and target not in ctx.emulated and not plots.budget_in_range(budget.latency_p99_ms, p99s):
            notes.append(f"{target} {budget.latency_p99_ms:g} ms (slowest cell {max(p99s):.3g} ms)")
    return f"; p99 budgets not drawn, far beyond the data: {', '.join(notes)}" if notes else ""


def write_summary(results: RunResults, gate: Any = None, targets_dir: Path = TARGETS_DIR,
                  int8_findings: Optional[List[Int8Finding]] = None) -> Path:
    """(Re)write <run>/summary.md with a gate verdict at its top (`harness gate` calls this), and index.html
    with the same verdict where the run has one."""
    from harness.report.markdown import render_markdown
    if (results.root / INDEX_NAME).exists():
        write_report(results, None, targets_dir, gate, int8_findings)
        return results.root / SUMMARY_NAME
    path = results.root / SUMMARY_NAME
    atomic_write_text(path, render_markdown(build_context(results, None, targets_dir, int8_findings), gate))
    return path


def write_report(results: RunResults, targets: Mapping[str, TargetSpec] | None = None,
                 targets_dir: Path = TARGETS_DIR, gate: Any = None,
                 int8_findings: Optional[List[Int8Finding]] = None) -> Path:
    """Write <run>/index.html, <run>/summary.md and <run>/plots/*.png; returns index.html's path.
    `gate` (a harness.judge.gate.GateResult) puts the gate's verdict at the top of both."""
    from harness.report.html import render_html
    from harness.report.markdown import render_markdown
    ctx = build_context(results, targets, targets_dir, int8_findings)
    ctx.gate = gate
    if len(ctx.frame):
        try:
            draw_plots(ctx, results.run_dir)
        except ImportError as exc:  # the tables and findings are the report; plots are what a library adds
            ctx.images = {}
            ctx.budget_notes.append(f"no plots: {library_missing(exc, 'drawing the plots')}")
    atomic_write_text(results.root / SUMMARY_NAME, render_markdown(ctx, gate))
    index = results.root / INDEX_NAME
    atomic_write_text(index, render_html(ctx))
    return index


__all__ = ["ImageRef", "ReportContext", "budgets_for", "build_context", "draw_plots", "side_by_side",
           "recorded_budgets", "run_budgets", "write_report", "write_summary", "INDEX_NAME", "SUMMARY_NAME"]

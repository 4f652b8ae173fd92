"""index.html: one offline page (inline CSS, no scripts, PNGs beside it)."""
from __future__ import annotations

import math
from typing import List, Mapping, Optional, Sequence

from harness.schema.results import SUMMARY_COLUMNS
from harness.report.profiles import section_html

from harness.report.context import ImageRef, ReportContext
from harness.report.elements import esc, fmt, table

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.ok td.status { color: #176d17; } tr.failed td.status, tr.lost td.status { color: #b00020; font-weight: bold; }
tr.incompatible td.status { color: #8a6d00; }
.fits { color: #176d17; } .nofit { color: #b00020; }
.emulated { background: #fff6d6; border-left: 4px solid #c9a000; padding: 4px 8px; font-size: 0.9em; }
.wrap { overflow-x: auto; } figure { display: inline-block; margin: 0.5em 1em 1em 0; }
figcaption { font-size: 0.85em; color: #555; } .note { color: #555; font-size: 0.9em; }
pre { white-space: pre-wrap; margin: 0; font-size: 0.95em; }
"""


def _figures(images: Sequence["ImageRef"]) -> str:
    return "".join(f'<figure><img src="{esc(i.src)}" alt="{esc(i.title)}"><figcaption>{esc(i.title)}</figcaption>'
                   f"</figure>" for i in images)


def _section_devices(ctx: "ReportContext") -> str:
    targets = sorted(set(ctx.devices) | set(ctx.budgets))
    if not targets:
        return "<p>No device was probed.</p>"
    parts: List[str] = []
    for target in targets:
        probe = ctx.devices.get(target)
        budget = ctx.budgets.get(target)
        head = f"<h3>{esc(target)}</h3>"
        if budget is not None:
            head += (f'<p class="note">budgets: p99 {budget.latency_p99_ms:g} ms, '
                     f"peak memory {budget.peak_memory_mb:g} MB</p>")
        if target in ctx.emulated:
            head += f'<p class="emulated">{esc(_emulated_text(ctx, target))}</p>'
        if not probe:
            parts.append(head + "<p>No health probe recorded for this device.</p>")
            continue
        rows = []
        for key in sorted(probe):
            value = probe[key]
            if key == "runtimes" and isinstance(value, Mapping):
                text = "; ".join(f"{fmt_name}: " + (f"{info.get('module')} {info.get('version')}"
                                                    + (f" [{', '.join(map(str, info['accelerators']))}]"
                                                       if info.get("accelerators") else "")
                                                    if isinstance(info, Mapping) and info.get("available")
                                                    else f"unavailable ({info.get('error') if isinstance(info, Mapping) else info})")
                                 for fmt_name, info in sorted(value.items()))
            elif isinstance(value, (dict, list)):
                text = str(value)
            else:
                text = fmt(value, key)
            rows.append((key, text))
        parts.append(head + table(["field", "value"], rows))
    return "".join(parts)


def _emulated_text(ctx: "ReportContext", target: str) -> str:
    arch = ctx.arches.get(target, "another architecture")
    return (f"Emulated: {target}'s Python ran {arch} code under qemu-user. Whether a model loads and runs there, "
            f"and what it outputs, is real; its latency and memory are recorded but not representative of the "
            f"board (emulation is about 200x slower), and scores, recommendations and the gate do not judge them.")


def _emulated_note(ctx: "ReportContext") -> str:
    if not ctx.emulated:
        return ""
    return (f'<p class="emulated">Latency and memory on emulated targets ({esc(", ".join(sorted(ctx.emulated)))}) '
            f"are not representative: recorded, not judged.</p>")


def _section_models(ctx: "ReportContext") -> str:
    """Each model's source, its inputs and outputs as profiled, and where its data came from."""
    if not ctx.models:
        return "<p>The run's manifest records no model interfaces (a run from before they were recorded).</p>"
    parts = []
    for name, doc in sorted(ctx.models.items()):
        tensors = [[kind, t.get("name"), "x".join(str(d) for d in t.get("shape") or []) or "scalar", t.get("dtype")]
                   for kind in ("inputs", "outputs") for t in doc.get(kind, [])]
        notes = "".join(f'<p class="note">{esc(n)}</p>' for n in doc.get("data", []))
        parts.append(f"<h3>{esc(name)} ({esc(doc.get('source_format', ''))})</h3>{notes}"
                     + table(["", "name", "shape", "dtype"], tensors))
    return "".join(parts)


def _section_results(ctx: "ReportContext") -> str:
    records = ctx.rows
    if not records:
        return "<p>The run has no cells.</p>"
    numeric = [c not in ("model", "variant", "format", "runtime_config", "target", "status") for c in SUMMARY_COLUMNS]
    rows = [[fmt(r.get(c), c) for c in SUMMARY_COLUMNS] for r in records]
    for row, record in zip(rows, records):
        if str(record.get("target")) in ctx.emulated and "target" in SUMMARY_COLUMNS:
            row[SUMMARY_COLUMNS.index("target")] += " (emulated)"
    return _emulated_note(ctx) + table(SUMMARY_COLUMNS, rows, numeric, [str(r.get("status")) for r in records],
                                       {SUMMARY_COLUMNS.index("status"): "status"})


def _part(value: Optional[float]) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _section_scores(ctx: "ReportContext") -> str:
    if not ctx.portability:
        return "<p>No scores: the run has no cells.</p>"
    rows = [[s.model, s.variant or "(best of all)", f"{s.score:.3f}",
             f"{len(s.deployed_targets)}/{len(s.targets)}", _part(s.accuracy), _part(s.latency), _part(s.memory),
             s.weakest, s.explain()] for s in ctx.portability]
    score_table = table(["model", "variant", "score", "deploys", "accuracy", "latency", "memory", "weakest", "why"],
                        rows, [False, False, True, True, True, True, True, False, False])
    cells = [[c.model, c.variant, c.format, c.target, c.status, f"{c.score:.3f}", _part(c.parts.accuracy),
              "not judged" if c.emulated else _part(c.parts.latency),
              "not judged" if c.emulated else _part(c.parts.memory), "; ".join(c.notes)] for c in ctx.cell_scores]
    cell_table = table(["model", "variant", "format", "target", "status", "score", "accuracy", "latency", "memory",
                        "notes"], cells, [False] * 5 + [True] * 4 + [False], [c.status for c in ctx.cell_scores],
                       {4: "status"})
    return ('<p class="note">score = deploys &times; accuracy &times; latency &times; memory per cell, each part in '
            "[0, 1]: deploys is 1 when the cell ran; accuracy is the retention of the primary figure "
            "(the recipe's metric, else accuracy, else top-1 agreement, else output SNR / 40 dB); latency is min(1, budget p99 / p99); memory is min(1, budget MB / peak MB). A model or variant "
            "takes its best cell per target and the mean over its targets; the parts shown are means over the "
            "targets where it deploys.</p>" + _emulated_note(ctx) + score_table + "<details><summary>every cell's score</summary>"
            + cell_table + "</details>")


def _section_recommendations(ctx: "ReportContext") -> str:
    if not ctx.recommendations:
        return "<p>No recommendations: the run has no cells.</p>"
    rows, classes = [], []
    for r in ctx.recommendations:
        rows.append([r.target, r.model, "yes" if r.fits else "NONE FITS",
                     r.choice, fmt(r.accuracy), fmt(r.latency_p99_ms),
                     fmt(r.peak_memory_mb), r.reason])
        classes.append("fits" if r.fits else "nofit")
    return table(["target", "model", "fits", "recommended", "accuracy", "p99 ms", "peak MB", "reason"], rows,
                 [False, False, False, False, True, True, True, False], classes)


def _section_parity(ctx: "ReportContext") -> str:
    out = [_figures(ctx.images.get("parity", []))]
    if len(ctx.parity):
        rows = [[r["model"], r["variant"], r["format"], r["target"], r["status"], fmt(r["top1_agreement"]),
                 fmt(r["max_abs_diff"]), fmt(r["cosine_similarity"])] for r in ctx.parity.to_dict(orient="records")]
        out.append("<details><summary>parity table</summary>" + table(
            ["model", "variant", "format", "target", "status", "top-1 agreement", "max abs diff", "cosine"], rows,
            [False] * 5 + [True] * 3, [str(r[4]) for r in rows], {4: "status"}) + "</details>")
    n_pairs = sum(len(p) for p in ctx.pairs.values())
    if ctx.disagreements:
        out.append("<h3>Cells that disagree with each other</h3>" + table(
            ["cell", "cell", "why"], [[d.cell_a, d.cell_b, d.reason] for d in ctx.disagreements]))
    elif n_pairs:
        out.append(f"<p>All {n_pairs} pairs of cells with the same model and variant agree.</p>")
    else:
        out.append('<p class="note">No cell kept its outputs (outputs/*.npz), so cells were compared only with '
                   "the reference.</p>")
    out.append(_cross_arch(ctx))
    return "".join(out)


def _cross_arch(ctx: "ReportContext") -> str:
    """Each cell on a non-x86_64 device against the same (model, variant, format) on x86_64 devices."""
    if not ctx.cross_arch:
        return ""
    from harness.judge.scores import CROSS_ARCH_ATOL, CROSS_ARCH_RTOL
    flagged = [c for c in ctx.cross_arch if not c.agrees and c.baseline_agrees and not c.verdict.startswith("not")]
    rows = [[c.model, c.variant, c.format, f"{c.target} ({c.arch})", ", ".join(c.baseline_targets),
             fmt(c.top1_agreement), fmt(c.max_abs_diff), str(c.n_samples), fmt(c.reference_top1),
             fmt(c.baseline_reference_top1), c.verdict] for c in ctx.cross_arch]
    classes = ["ok" if c.agrees else "failed" for c in ctx.cross_arch]
    head = ("<h3>Across architectures</h3>"
            f'<p class="note">Every output array of each cell on a device of another architecture against the same '
            f"model, variant and format on {esc(ctx.cross_arch[0].baseline_arch)} devices that ran the same runtime and "
            f"version where any did, else on all of them (worst over those devices and outputs). A cell differs when a top-1 prediction differs or |difference| &gt; {CROSS_ARCH_ATOL:g} + "
            f"{CROSS_ARCH_RTOL:g} &times; max |output|: float rounding from fused multiply-adds stays below that, "
            f"one int8 rounding step (a NEON/AVX kernel difference) does not.</p>")
    if flagged:
        head += ("<p><b>Agree on x86_64, differ on Arm:</b> "
                 + esc("; ".join(f"{c.model}/{c.variant}/{c.format} on {c.target} ({c.arch}): top-1 "
                                 f"{fmt(c.top1_agreement)}, max abs diff {fmt(c.max_abs_diff)}" for c in flagged))
                 + "</p>")
    else:
        head += (f"<p>No cell that agrees on {esc(ctx.cross_arch[0].baseline_arch)} differs on another architecture "
                 f"({len(ctx.cross_arch)} compared).</p>")
    return head + table(["model", "variant", "format", "device", "compared with", "top-1 agreement", "max abs diff",
                         "samples", "device vs reference (top-1)", "x86_64 vs reference (top-1)", "verdict"], rows,
                        [False] * 5 + [True] * 5 + [False], classes, {10: "status"})


def _section_failures(ctx: "ReportContext") -> str:
    failures = ctx.failures
    if not failures:
        return "<p>Every cell ran.</p>"
    rows = [[r.get("model"), r.get("variant"), r.get("format"), r.get("target"), r.get("status"),
             fmt(r.get("error_category")), fmt(r.get("error_message"))] for r in failures]
    return table(["model", "variant", "format", "target", "status", "category", "message"], rows,
                 row_classes=[str(r.get("status")) for r in failures], cell_classes={4: "status"})


def _section_layers(ctx: "ReportContext") -> str:
    return section_html(ctx.rows, ctx.profiles)


def render_html(ctx: "ReportContext") -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(ctx.status_counts.items())) or "no cells"
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in ctx.budget_notes)
    sections = [
        ("devices", "Devices", _section_devices(ctx)),
        ("models", "Models and data", _section_models(ctx)),
        ("results", "Results", _section_results(ctx)),
        ("scores", "Portability scores", _section_scores(ctx)),
        ("recommendations", "Recommendation per target", _section_recommendations(ctx)),
        ("parity", "Parity with the reference", _section_parity(ctx)),
        ("layers", "Layers and op placement", _section_layers(ctx)),
        ("pareto", "Accuracy against p99 latency", _figures(ctx.images.get("pareto", []))
         or "<p>No cell ran.</p>"),
        ("memory", "Memory per cell", _figures(ctx.images.get("memory", [])) or "<p>No cell ran.</p>"),
        ("failures", "Failures", _section_failures(ctx)),
    ]
    nav = " &middot; ".join(f'<a href="#{key}">{esc(title)}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{esc(title)}</h2>{content}</section>' for key, title, content in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Run {esc(ctx.run_id)}</title><style>{_CSS}</style></head><body>"
            f"<h1>Run {esc(ctx.run_id)}</h1><p>{esc(counts)} &middot; generated {esc(ctx.generated_at)}"
            f' &middot; <a href="../history/index.html" id="trends-link">nightly trends</a></p>'
            f"{notes}<nav>{nav}</nav>{body}</body></html>\n")

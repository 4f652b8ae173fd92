"""summary.md: the run in short, as GitHub-flavoured Markdown for CI logs."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from harness.report.elements import fmt
from harness.report.findings import timed_hot

from harness.report.context import ReportContext

_MAX_MESSAGE = 300


#: notes from "Models and data" that change what the figures mean, repeated in the summary: evaluation samples
#: moved to calibration, int8 variants made from an already-quantized source
SUMMARY_DATA_NOTES = ("calibration split:", "re-quantization:")


def _cell(value: Any) -> str:
    text = " ".join(str(value).split())
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE - 1] + "…"
    return text.replace("|", "\\|").replace("<", "&lt;")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return out


def _part(value: Any) -> str:
    return "" if value is None else f"{value:.3f}"


def _verdict_lines(ctx: "ReportContext", gate: Any) -> List[str]:
    """The first thing a CI job summary shows: can this run be trusted, and did it pass."""
    from harness.judge.verdict import run_verdict
    verdict = run_verdict(ctx.rows)
    icon = {0: "✅", 1: "❌", 2: "⚠️"}
    lines = [f"**Run: {icon[verdict.exit_code]} {verdict.summary}** (exit {verdict.exit_code})"]
    noisy = [r for r in ctx.rows if r.get("status") == "ok" and _is_true(r.get("noisy"))]
    if noisy:
        reasons = sorted({str(r.get("noise_reasons") or "").split(" (")[0] for r in noisy} - {""})
        lines[0] += "  "
        lines.append(f"**{icon[2]} {len(noisy)} cell(s) measured on a busy or throttling device**: the gate does not "
                     f"judge them; re-run on a quiet device ({'; '.join(reasons[:3]) or 'see noise_reasons'})")
    hot = timed_hot(ctx.rows)
    if hot:
        lines[-1] += "  "
        lines.append(f"**{icon[2]} {len(hot[1])} cell(s) timed hot** on {', '.join(sorted(hot[0]))}: {hot[2]}; "
                     "the gate does not judge them (column `cooled`)")
    if gate is not None:
        lines.insert(0, f"**Gate: {icon[gate.exit_code]} {gate.verdict}**: {len(gate.violations)} violation(s), "
                        f"{len(gate.not_judged)} not judged, "
                        + (f"{len(gate.without_baseline)} without a baseline, " if getattr(gate, "without_baseline", None)
                           else "")
                        + f"baseline {gate.baseline_id or 'none'} "
                        f"(exit {gate.exit_code})")
        lines[0] += "  "
    else:
        lines.append("")
        lines.append("Not gated yet: `harness gate --run " + ctx.run_id + "` adds its verdict and regressions here.")
    return lines + [""]


def _is_true(value: Any) -> bool:
    try:
        return bool(value) and value == value
    except (TypeError, ValueError):  # pandas NA
        return False


def _gate_lines(gate: Any) -> List[str]:
    lines: List[str] = []
    regressions = [c for c in gate.violations if c.rule.startswith("max_latency_regression")]
    lines += [f"### Latency regressions ({len(regressions)})", ""]
    if regressions:
        lines += md_table(["target", "cell", "change (95 % CI), noise"], [[c.target, c.subject, c.message]
                                                                         for c in regressions])
    else:
        lines.append("None." if any(c.rule.startswith("max_latency_regression") and not c.skipped for c in gate.checks)
                     else "Not checked (no baseline, or the policy sets no max_latency_regression).")
    lines.append("")
    others = [c for c in gate.violations if not c.rule.startswith("max_latency_regression")]
    if others:
        lines += [f"### Other violations ({len(others)})", ""]
        lines += md_table(["target", "rule", "subject", "why"], [[c.target, c.rule, c.subject, c.message]
                                                                 for c in others])
        lines.append("")
    # device changes and what each figure can judge (detectability) are the gate's notes
    judged_notes = [n for n in gate.notes if n.startswith("device change") or "detectab" in n
                    or "not judged at this threshold" in n]
    if judged_notes:
        lines += ["### What the gate could judge", ""] + [f"- {n}" for n in judged_notes] + [""]
    first = list(getattr(gate, "without_baseline", []))
    if first:
        lines += [f"### No baseline yet ({len(first)})", ""]
        lines += md_table(["target", "cell", "why"], [[c.target, c.subject, c.message] for c in first])
        lines.append("")
    if gate.not_judged:
        lines += [f"### Not judged: re-run ({len(gate.not_judged)})", ""]
        lines += md_table(["target", "rule", "subject", "why"], [[c.target, c.rule, c.subject, c.message]
                                                                 for c in gate.not_judged])
        lines.append("")
    return lines


def failure_groups(rows: Sequence[Dict[str, Any]]) -> Dict[str, List[Tuple[str, str, str, List[str]]]]:
    """Failures by device, cells with the same status, category and message together:
    {target: [(status, category, message, [cell, ...]), ...]}, most cells first."""
    by_target: Dict[str, Dict[Tuple[str, str, str], List[str]]] = {}
    for r in rows:
        key = (str(r.get("status")), fmt(r.get("error_category")), fmt(r.get("error_message")))
        cell = "/".join(str(r.get(c)) for c in ("model", "variant", "format"))
        by_target.setdefault(str(r.get("target")), {}).setdefault(key, []).append(cell)
    return {t: sorted(((k[0], k[1], k[2], sorted(cells)) for k, cells in groups.items()),
                      key=lambda g: (-len(g[3]), g[0], g[1]))
            for t, groups in sorted(by_target.items())}


def render_markdown(ctx: "ReportContext", gate: Any = None) -> str:
    """summary.md: the verdict first, then regressions with their intervals (when gated), then failures by
    device, then the scores. `gate` is a harness.judge.gate.GateResult (written by `harness gate`)."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(ctx.status_counts.items())) or "no cells"
    lines = [f"## Run {ctx.run_id}", ""]
    lines += _verdict_lines(ctx, gate)
    lines += [f"{len(ctx.frame)} cells: {counts}.", ""]
    lines += [f"> **{n}**" for n in ctx.run_notes] + ([""] if ctx.run_notes else [])
    lines += [f"> {n}" for n in ctx.budget_notes] + ([""] if ctx.budget_notes else [])
    data_notes = [f"> {name}: {n}" for name, doc in sorted(ctx.models.items()) for n in doc.get("data", [])
                  if any(n.startswith(prefix) for prefix in SUMMARY_DATA_NOTES)]
    lines += data_notes + ([""] if data_notes else [])
    if ctx.emulated:
        lines += [f"> Emulated (qemu-user): {', '.join(sorted(ctx.emulated))}. Their latency and memory are recorded "
                  f"but not representative, and are not judged.", ""]
    if gate is not None:
        lines += _gate_lines(gate)
    for error, cells in ctx.metric_errors.items():
        lines += [f"> **The metric failed** on {len(cells)} cell(s) ({', '.join(cells)}): {error}. Their primary "
                  "figure is unavailable.", ""]
    failures = ctx.failures
    lines += [f"### Failures ({len(failures)})", ""]
    if failures:
        for target, groups in failure_groups(failures).items():
            n = sum(len(g[3]) for g in groups)
            lines += [f"**{target}**: {n} cell(s)", ""]
            lines += md_table(["cells", "status", "category", "message"],
                              [[f"{len(cells)}: {', '.join(cells)}", status, category, message]
                               for status, category, message, cells in groups])
            lines.append("")
    else:
        lines += ["Every cell ran.", ""]
    if ctx.portability:
        lines += ["### Portability scores", "",
                  "score = deploys × accuracy × latency × memory (each in [0, 1]); mean over targets.", ""]
        lines += md_table(["model", "variant", "score", "deploys", "accuracy", "latency", "memory", "weakest"],
                          [[s.model, s.variant or "(best of all)", f"{s.score:.3f}",
                            f"{len(s.deployed_targets)}/{len(s.targets)}", _part(s.accuracy), _part(s.latency),
                            _part(s.memory), s.weakest or "-"] for s in ctx.portability])
        lines.append("")
    if ctx.recommendations:
        lines += ["### Recommendation per target", ""]
        lines += md_table(["target", "model", "recommended", "reason"],
                          [[r.target, r.model, r.choice if r.fits else "**none fits**", r.reason]
                           for r in ctx.recommendations])
        lines.append("")
    if ctx.int8_findings:
        lines += ["### Quantized cells not faster than the reference", ""]
        lines += [f"- {finding.text}" for finding in ctx.int8_findings] + [""]
    if ctx.disagreements:
        lines += ["### Cells that disagree with each other", ""]
        lines += md_table(["cell", "cell", "why"], [[d.cell_a, d.cell_b, d.reason] for d in ctx.disagreements])
        lines.append("")
    if ctx.cross_arch:
        lines += ["### Across architectures", ""]
        lines += md_table(["cell", "device", "compared with", "top-1", "max abs diff", "verdict"],
                          [[f"{c.model}/{c.variant}/{c.format}", f"{c.target} ({c.arch})", ", ".join(c.baseline_targets),
                            fmt(c.top1_agreement), fmt(c.max_abs_diff), c.verdict] for c in ctx.cross_arch])
        lines.append("")
    lines += [f"Full report: `reports/{ctx.run_id}/index.html`", ""]
    return "\n".join(lines)

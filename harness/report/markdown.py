"""summary.md: the run in short, as GitHub-flavoured Markdown for CI logs."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Sequence

from .html import fmt

if TYPE_CHECKING:
    from . import ReportContext

_MAX_MESSAGE = 160


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


def render_markdown(ctx: "ReportContext") -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(ctx.status_counts.items())) or "no cells"
    lines = [f"## Run {ctx.run_id}", "", f"{len(ctx.frame)} cells: {counts}.", ""]
    lines += [f"> {n}" for n in ctx.budget_notes] + ([""] if ctx.budget_notes else [])
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
                          [[r.target, r.model, f"{r.variant}/{r.format}" if r.fits else "**none fits**", r.reason]
                           for r in ctx.recommendations])
        lines.append("")
    if ctx.disagreements:
        lines += ["### Cells that disagree with each other", ""]
        lines += md_table(["cell", "cell", "why"], [[d.cell_a, d.cell_b, d.reason] for d in ctx.disagreements])
        lines.append("")
    failures = ctx.failures
    lines += [f"### Failures ({len(failures)})", ""]
    if failures:
        lines += md_table(["cell", "status", "category", "message"],
                          [[r.get("cell_id"), r.get("status"), fmt(r.get("error_category")),
                            fmt(r.get("error_message"))] for r in failures])
    else:
        lines.append("Every cell ran.")
    lines += ["", f"Full report: `reports/{ctx.run_id}/index.html`", ""]
    return "\n".join(lines)

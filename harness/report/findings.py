"""What the top of the report says: what was run, and the findings that need attention, one line each.

Pure functions over a run's rows, manifest and parity; html.py renders them. A finding links to the
section that holds its detail.
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from harness.judge.scores import Disagreement, PairParity
from harness.judge.verdict import is_infrastructure_failure
from harness.schema.results import FAILED, INCOMPATIBLE, LOST, OK, SKIPPED

#: what the harness knows to do about a failure, by error category (the message often says more)
FIXES: Dict[str, str] = {
    "runtime_missing": "install the runtime in the device's Python, or drop the format from the target's runtimes",
    "unsupported_on_target": "add the runtime to the target's `runtimes:` if the device has it",
    "device_unreachable": "bring the device back (or fix its known_hosts), then `harness run --resume {run}`",
    "device_lost": "`harness run --resume {run}` runs only the lost cells",
    "worker_lost": "`harness run --resume {run}` runs only the lost cells",
    "device_busy": "wait for the other run on the device to end, then `harness run --resume {run}`",
    "host_key_changed": "check the device's host key out of band, then re-trust it in its known_hosts",
    "upload_failed": "free space on the device or set `workdir:` in its target file",
    "timeout": "raise `cell_timeout_s`, or fewer iterations (`--iterations`, `--max-duration`)",
    "oom_killed": "raise the device's memory limit or use a smaller variant",
    "conversion_failed": "see the converter's message; `shapes:` in the recipe fixes dynamic dimensions",
}
#: precisions a runtime picks by itself that differ from the framework's f32 (OpenVINO's CPU default on bf16 CPUs)
_LOW_PRECISIONS = ("bf16", "f16", "fp16")


@dataclass(frozen=True)
class Finding:
    """One line at the top of the report: what needs attention, and where its detail is."""

    text: str
    #: the id of the section (or element) with the detail, without '#'
    link: str
    #: 'bad' (cells did not run), 'warn' (figures not to be trusted as they are) or 'info'
    severity: str = "warn"


@dataclass(frozen=True)
class DisagreementGroup:
    """Pairs of cells of the same model and variant that disagree for the same cause."""

    cause: str
    #: why, and how to pin it, where the harness knows
    explanation: str
    pairs: Tuple[Disagreement, ...]
    worst_max_abs_diff: float
    worst_top1_agreement: float


def _text(value: Any) -> str:
    if value is None:
        return ""
    try:
        if value != value:  # NaN / NA
            return ""
    except (TypeError, ValueError):
        return ""
    return str(value)


def is_true(value: Any) -> bool:
    try:
        return bool(value) and value == value
    except (TypeError, ValueError):  # pandas NA
        return False


_PATH = re.compile(r"(?:/[^\s/:'\"]+)+/([^\s/:'\"]+)")


def first_line(message: Any, limit: int = 160) -> str:
    """The message's first line, with file paths shortened to their names (they differ per device)."""
    line = next((part.strip() for part in _text(message).splitlines() if part.strip()), "")
    line = _PATH.sub(r"\1", line)
    return line if len(line) <= limit else line[:limit - 1] + "…"


def fix_for(category: Any, run_id: str) -> str:
    return FIXES.get(_text(category), "").replace("{run}", run_id)


def _parse_time(text: Any) -> Optional[_dt.datetime]:
    try:
        moment = _dt.datetime.fromisoformat(_text(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


def run_span(manifest: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
             ) -> Tuple[Optional[_dt.datetime], Optional[float]]:
    """When the run started measuring (its manifest is written once the artifacts are built; else its first cell)
    and how many seconds until its last cell ended."""
    starts = [t for t in (_parse_time(r.get("started_at")) for r in rows) if t is not None]
    started = _parse_time(manifest.get("created_at")) or (min(starts) if starts else None)
    ends = []
    for row in rows:
        begun = _parse_time(row.get("started_at"))
        try:
            took = float(row.get("duration_s"))
        except (TypeError, ValueError):
            took = float("nan")
        if begun is not None and took == took:
            ends.append(begun + _dt.timedelta(seconds=took))
    if started is None or not ends:
        return started, None
    return started, max(0.0, (max(ends) - started).total_seconds())


def duration_text(seconds: Optional[float]) -> str:
    if seconds is None:
        return "duration unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _names(values: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def what_was_run(manifest: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> List[Tuple[str, str]]:
    """(label, value) pairs: models, variants, formats, targets, when and how long."""
    def distinct(column: str) -> List[str]:
        seen: List[str] = []
        for row in rows:
            value = _text(row.get(column))
            if value and value not in seen:
                seen.append(value)
        return seen

    started, seconds = run_span(manifest, rows)
    configs = [c for c in distinct("runtime_config") if c not in distinct("format")]
    formats = distinct("format") + ([f"configurations {', '.join(configs)}"] if configs else [])
    return [("models", _names(distinct("model") or list(manifest.get("models") or []))),
            ("variants", _names(distinct("variant"), 9)),
            ("formats", ", ".join(formats)),
            ("targets", _names(distinct("target") or list(manifest.get("targets") or []), 8)),
            ("when", started.strftime("%Y-%m-%d %H:%M UTC") if started else "unknown"),
            ("measuring took", duration_text(seconds))]


def _side(row: Mapping[str, Any]) -> Tuple[str, str]:
    """(runtime configuration or format, precision) of a cell."""
    return (_text(row.get("runtime_config")) or _text(row.get("format")), _text(row.get("precision")).lower())


def disagreement_groups(found: Sequence[Disagreement], pairs: Mapping[str, Sequence[PairParity]],
                        rows: Sequence[Mapping[str, Any]]) -> List[DisagreementGroup]:
    """Disagreeing pairs grouped by cause: a configuration that computes in a lower precision than the rest
    (OpenVINO's bf16 default) against everything else; otherwise the pair of configurations (with
    precisions) or, between the same configuration on two devices, that configuration across devices.
    Most pairs first."""
    by_cell = {str(r.get("cell_id")): r for r in rows}
    figures = {(p.cell_a, p.cell_b): p for model_pairs in pairs.values() for p in model_pairs}
    groups: Dict[Tuple[str, str], List[Disagreement]] = {}
    for pair in found:
        a, b = _side(by_cell.get(pair.cell_a, {})), _side(by_cell.get(pair.cell_b, {}))
        low = [side for side in (a, b) if side[1] in _LOW_PRECISIONS]
        if len(low) == 1:
            name = "OpenVINO" if low[0][0] == "openvino" else low[0][0]
            key = (f"{low[0][0]} ({low[0][1]}) against the others",
                   f"{name} computes in {low[0][1]} by default on this CPU, the others in f32; "
                   f"a runtime configuration with `precision: f32` pins f32")
        elif a == b:
            key = (f"{a[0]} across devices", "the same artifact and configuration gives other outputs on "
                                             "another device (runtime version or CPU kernels)")
        else:
            sides = sorted(f"{s[0]} ({s[1]})" if s[1] else s[0] for s in (a, b))
            key = (f"{sides[0]} against {sides[1]}", "")
        groups.setdefault(key, []).append(pair)
    out = []
    for (cause, explanation), members in groups.items():
        measured = [figures.get((d.cell_a, d.cell_b)) or figures.get((d.cell_b, d.cell_a)) for d in members]
        measured = [m for m in measured if m is not None]
        out.append(DisagreementGroup(cause, explanation, tuple(members),
                                     max((m.max_abs_diff for m in measured), default=float("nan")),
                                     min((m.top1_agreement for m in measured), default=float("nan"))))
    return sorted(out, key=lambda g: (-len(g.pairs), g.cause))


def group_line(group: DisagreementGroup) -> str:
    """'openvino (bf16) against the others: 46 pairs, max abs diff up to 0.107, top-1 agreement down to 98.9 %'."""
    figures = []
    if group.worst_max_abs_diff == group.worst_max_abs_diff:
        figures.append(f"max abs diff up to {group.worst_max_abs_diff:.3g}")
    if group.worst_top1_agreement == group.worst_top1_agreement and group.worst_top1_agreement < 1.0:
        figures.append(f"top-1 agreement down to {group.worst_top1_agreement:.1%}")
    return (f"{group.cause}: {len(group.pairs)} pair{'s' if len(group.pairs) != 1 else ''}"
            + (f", {', '.join(figures)}" if figures else ""))


def _failure_causes(rows: Sequence[Mapping[str, Any]]) -> List[Tuple[str, str, List[Mapping[str, Any]]]]:
    """(category, first line of the message, rows) for failed, incompatible and lost cells; most cells first."""
    causes: Dict[Tuple[str, str], List[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("status") in (FAILED, INCOMPATIBLE, LOST):
            key = (_text(row.get("error_category")) or _text(row.get("status")), first_line(row.get("error_message"), 110))
            causes.setdefault(key, []).append(row)
    return sorted(((k[0], k[1], v) for k, v in causes.items()), key=lambda c: (-len(c[2]), c[0]))


def _cells(n: int) -> str:
    return f"{n} cell{'s' if n != 1 else ''}"


def findings(rows: Sequence[Mapping[str, Any]], groups: Sequence[DisagreementGroup], emulated: Sequence[str] = (),
             budget_notes: Sequence[str] = (), max_failure_lines: int = 3, int8_slow: Sequence[Any] = ()
             ) -> List[Finding]:
    """The findings that need attention, worst first, one line each."""
    out: List[Finding] = []
    causes = _failure_causes(rows)
    for category, message, members in causes[:max_failure_lines]:
        targets = sorted({_text(r.get("target")) for r in members})
        lost = all(r.get("status") == LOST for r in members)
        infra = all(is_infrastructure_failure(r.get("status"), r.get("error_category")) for r in members)
        verb = "lost" if lost else ("could not run" if infra else "failed")
        out.append(Finding(f"{_cells(len(members))} {verb} on {_names(targets, 3)}: {category}"
                           + (f" ({message})" if message else ""), "failures", "bad"))
    if len(causes) > max_failure_lines:
        rest = causes[max_failure_lines:]
        out.append(Finding(f"{_cells(sum(len(c[2]) for c in rest))} more did not run, for "
                           f"{len(rest)} other cause{'s' if len(rest) != 1 else ''}", "failures", "bad"))
    metric_failed = [r for r in rows if isinstance(r.get("evaluation_error"), str) and r.get("evaluation_error")]
    if metric_failed:
        out.append(Finding(f"the metric failed on {_cells(len(metric_failed))} "
                           f"({first_line(metric_failed[0]['evaluation_error'])}): their primary figure is unavailable",
                           "failures", "bad"))
    for group in groups:
        out.append(Finding(group_line(group) + (f" ({group.explanation})" if group.explanation else ""),
                           "disagreements", "warn"))
    measured = [r for r in rows if r.get("status") == OK]
    noisy = [r for r in measured if is_true(r.get("noisy"))]
    if noisy:
        targets = sorted({_text(r.get("target")) for r in noisy})
        out.append(Finding(f"{len(noisy)} of {len(measured)} measured cells were timed on a busy device "
                           f"({_names(targets, 3)}): latencies not judged, re-run on a quiet device", "devices", "warn"))
    hot = timed_hot(measured)
    if hot:
        out.append(Finding(f"{_cells(len(hot[1]))} timed hot on {_names(sorted(hot[0]), 3)}: {hot[2]}; not judged: "
                           "give it longer (quiet.cooldown_max_wait_s) or cool the device", "devices", "warn"))
    skipped: Dict[Tuple[str, str], int] = {}
    other_skips: Dict[Tuple[str, str], List[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("status") != SKIPPED:
            continue
        runtime = _text(row.get("runtime_config")) or _text(row.get("format"))
        if _text(row.get("error_category")) in ("unsupported_on_target", "runtime_missing", ""):
            key = (_text(row.get("target")), runtime)
            skipped[key] = skipped.get(key, 0) + 1
        else:  # the host could not make or run the format (no converter, a missing library): said as it is
            other_skips.setdefault((_text(row.get("target")), first_line(row.get("error_message"))), []).append(row)
    by_target: Dict[str, List[Tuple[str, int]]] = {}
    for (target, runtime), n in sorted(skipped.items()):
        by_target.setdefault(target, []).append((runtime, n))
    for target, runtimes in by_target.items():
        n = sum(count for _, count in runtimes)
        out.append(Finding(f"{target} has no {' or '.join(r for r, _ in runtimes)} runtime: {_cells(n)} skipped",
                           "failures", "info"))
    for (target, message), members in sorted(other_skips.items()):
        formats = sorted({_text(r.get("format")) for r in members})
        out.append(Finding(f"{_cells(len(members))} skipped on {target} ({', '.join(formats)}): {message}",
                           "failures", "info"))
    if emulated:
        out.append(Finding(f"emulated under qemu-user: {', '.join(sorted(emulated))}: latency and memory recorded, "
                           f"not judged", "devices", "info"))
    if int8_slow:  # one line: each finding in full is in its section
        shown = ", ".join(f.short() for f in int8_slow[:3]) + (f" and {len(int8_slow) - 3} more"
                                                                 if len(int8_slow) > 3 else "")
        out.append(Finding(f"{_cells(len(int8_slow))} quantized but not faster than the reference "
                           f"({shown}): why, and what to run next", "int8", "warn"))
    for note in budget_notes:
        out.append(Finding(note, "devices", "info"))
    return out


def timed_hot(rows: Sequence[Mapping[str, Any]]) -> Optional[Tuple[set, List[Mapping[str, Any]], str]]:
    """The cells whose cooldown could not reach quiet.cooldown_below_c (`cooled` False): (targets, cells, the
    first cooldown note, e.g. "could not cool below 60.0 °C in 300 s (was 71.2 °C)"); None: none."""
    hot = [r for r in rows if str(r.get("cooled")) == "False"]
    if not hot:
        return None
    notes = [part for r in hot for part in _text(r.get("noise_reasons")).split("; ") if "could not cool" in part]
    note = (notes[0].split(": ", 1)[-1] if notes[0].startswith("repeat ") else notes[0]) if notes else \
        "could not cool below quiet.cooldown_below_c"
    return {_text(r.get("target")) for r in hot}, hot, note.rsplit(": timed hot", 1)[0]


def measuring_state(rows: Sequence[Mapping[str, Any]], target: str) -> str:
    """'quiet', 'busy: 12 of 12 cells (other processes kept 1.4 CPUs busy ...)' or '' when nothing was measured."""
    measured = [r for r in rows if _text(r.get("target")) == target and r.get("status") == OK]
    if not measured:
        return ""
    noisy = [r for r in measured if is_true(r.get("noisy"))]
    if not noisy:
        return "quiet"
    reasons = sorted({first_line(r.get("noise_reasons"), 90).split(" (")[0] for r in noisy} - {""})
    return f"busy: {len(noisy)} of {len(measured)} cells" + (f" ({reasons[0]})" if reasons else "")

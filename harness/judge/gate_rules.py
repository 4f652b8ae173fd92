"""Gate rules over many cells or a cell's whole distribution, apart from the policy: the check type, the shift
function added to a changed cell's text, one device change instead of N model regressions, and what each series
can judge (detectability). Pure; harness.judge.gate calls them from `evaluate`."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from harness.judge.regression import RunSpread, history_key
from harness.schema.results import OK

#: what a device-wide shift does to the verdict (TargetPolicy.device_wide_shift); the first is the default
DEVICE_WIDE_ACTIONS = ("note", "not_judged", "fail")


@dataclass(frozen=True)
class Check:
    """One rule applied to one subject (a cell, or a model on a target)."""

    target: str
    rule: str
    subject: str
    passed: bool
    message: str
    skipped: bool = False
    #: a latency check's relative change (0.10 = 10 % slower), for rules over many cells (a device-wide shift)
    change: Optional[float] = None


def is_noisy(row: Mapping[str, Any]) -> bool:
    """Was the cell measured on a busy or throttling device (the `noisy` column)?"""
    value = row.get("noisy")
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    try:
        return bool(value) and value == value  # NaN (no value) is not noisy
    except (TypeError, ValueError):
        return False


def with_shift_function(checks: List[Check], baseline: Any, candidate: Any) -> List[Check]:
    """A cell judged changed (a latency figure regressed) gets the test of its whole distribution (Mann-Whitney and
    Kolmogorov-Smirnov on the raw samples) and its shift function (judge/shift.py) in each failed check's text:
    which part of the distribution moved."""
    if not any(not c.passed and not c.skipped for c in checks):
        return checks
    from harness.judge.shift import distribution_p, shift_function
    function = shift_function(baseline, candidate)
    if function is None:
        return checks
    p = distribution_p(baseline, candidate)
    text = (f"; whole distribution: Mann-Whitney/Kolmogorov-Smirnov p={p:.2g}" if p is not None else "") + \
        f"; {function.describe()}"
    out, first = [], True
    for c in checks:  # the whole shift function once per cell, its short form on the cell's other figures
        if not c.passed and not c.skipped:
            c = replace(c, message=c.message + (text if first else f"; shift: {function.short()}"))
            first = False
        out.append(c)
    return out


def device_wide(target: str, checks: List[Check], run_id: str, *, action: str, share: Optional[float],
                max_latency_regression: Optional[float]) -> Tuple[List[Check], List[str]]:
    """One device change instead of N model regressions: when most judged cells of the target regressed at
    once (trends.DEVICE_* rules), their latency violations become one note, one not-judged check or one
    violation, as the policy's device_wide_shift says. A cell slower than the device's shift by more than the
    policy's max_latency_regression stays a regression of its own."""
    from harness.judge.trends import DEVICE_MIN_MODELS, DEVICE_MIN_SERIES, DEVICE_SHARE, DeviceShift
    latency = [c for c in checks if c.target == target and c.rule.startswith("max_latency_regression")
               and not c.skipped]
    judged = {c.subject for c in latency}
    regressed = {c.subject for c in latency if not c.passed}
    share = share if share is not None else DEVICE_SHARE
    models = {s.split("__")[0] for s in regressed}
    if not regressed or len(regressed) < max(DEVICE_MIN_SERIES, math.ceil(share * len(judged))) or \
            len(models) < DEVICE_MIN_MODELS:
        return checks, []
    changes = {c.subject: c.change for c in latency if c.rule == "max_latency_regression" and c.change is not None}
    logs = sorted(math.log1p(changes[s]) for s in regressed if s in changes)
    if not logs:
        return checks, []
    shift = math.expm1(logs[len(logs) // 2] if len(logs) % 2 else (logs[len(logs) // 2 - 1] + logs[len(logs) // 2]) / 2)
    limit = (1.0 + shift) * (1.0 + (max_latency_regression or 0.0)) - 1.0
    own = {s for s in regressed if changes.get(s) is not None and changes[s] > limit}
    device = regressed - own
    found = DeviceShift(target, run_id or "this run", shift, len(device), len(judged),
                        len({s.split("__")[0] for s in device}))
    out = [replace(c, passed=True, message=f"part of a device-wide shift (device_wide_shift: {action}): {c.message}")
           if c in latency and not c.passed and c.subject in device else c for c in checks]
    text = found.describe() + (f"; {len(own)} cell(s) slower still stay regressions of their own" if own else "")
    if action == "fail":
        out.append(Check(target, "device_wide_shift", target, False, text, change=shift))
        return out, []
    if action == "not_judged":
        out.append(Check(target, "device_wide_shift", target, True, text + ": re-run on a quiet device",
                         skipped=True, change=shift))
        return out, []
    return out, [f"{text} (device_wide_shift: note, so it does not fail the run)"]


def detectability_notes(target: str, rows: Sequence[Mapping[str, Any]], *, threshold: Optional[float],
                        figures: Sequence[str], history: Mapping[Tuple[str, ...], RunSpread],
                        figure_history: Mapping[str, Mapping[Tuple[str, ...], RunSpread]], alpha: float) -> List[str]:
    """How many of the target's series each latency figure can judge at the policy's threshold: the smallest
    shift the nightly rule finds within 3 nights, from each series' between-run spread (trends.detectable_shift).
    A figure whose detectable shift is above the threshold is not judged at this threshold for that series: a
    reason, not a false alarm."""
    from harness.judge.trends import DETECT_NIGHTS, detectable_shift
    if threshold is None:
        return []
    counts = {f: [0, 0] for f in figures}
    beyond: List[str] = []
    for row in rows:
        if row.get("status") != OK or is_noisy(row):
            continue
        key = tuple(history_key(row))
        for figure in figures:
            spreads = history if figure == "median" else (figure_history or {}).get(figure, {})
            spread = (spreads or {}).get(key)
            if spread is None:
                continue
            value = detectable_shift(spread.cv, spread.runs, alpha=alpha)
            counts[figure][1] += 1
            if value <= threshold:
                counts[figure][0] += 1
            else:
                beyond.append(f"{row.get('cell_id')} {figure} (detectable {value:.0%})")
    if not any(known for _, known in counts.values()):
        return []
    notes = [f"{target}: detectability (the smallest shift the nightly rule finds within {DETECT_NIGHTS} nights, "
             f"from each series' own spread): " + ", ".join(f"{f} judges {ok} of {known} series"
                                                            for f, (ok, known) in counts.items() if known)
             + f" at {threshold:.0%}"]
    if beyond:
        notes.append(f"{target}: not judged at this threshold ({threshold:.0%}), a reason, not a false alarm: "
                     + "; ".join(beyond[:8]) + (f" and {len(beyond) - 8} more" if len(beyond) > 8 else ""))
    return notes

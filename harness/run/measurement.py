"""One cell's latency figures from its agent runs (repeats). Pure: agent documents in, row fields out.

A cell measured in `repeats` independent agent runs (interleaved across the
device's cells by the pipeline) gets its percentiles over every sample of
every repeat, `repeats`, and `latency_repeat_cv`: the standard deviation of
log(median) between the repeats, the process-to-process spread the regression
judge weighs. Each repeat's before/after device readings are judged against the
target's `quiet:` limits; any reason makes the cell `noisy`. Each repeat also
carries the device speed reference (the agent's fixed workload, timed against
the device's usual): a repeat measured while the device ran slower than
`quiet.max_reference_drift` is measured again by the host (`slow_measurement`),
and one that stays slow makes the cell noisy, naming what the readings show.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

# the pooled figures are computed exactly as the agent computes one run's
from harness.agent.agent import Doc, latency_stats
from harness.judge.device_noise import heat_reasons, noise_reasons, quota_share, reference_drift, slow_device_reason
from harness.judge.regression import repeat_spread
from harness.schema.targets import QuietLimits

_STATS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms")


def combine_repeats(documents: Sequence[Mapping[str, Any]], limits: QuietLimits = QuietLimits(),
                    threads: int = 1, remeasured: Sequence[Mapping[str, Any]] = ()
                    ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(row fields, cell-record extras) from the agent documents of one cell, first run first.

    `remeasured`: the repeats measured again because the device ran slow (slow_measurement), which the
    documents replaced."""
    per_repeat: List[List[float]] = [[float(x) for x in d.get(Doc.LATENCIES_MS) or []] for d in documents]
    pooled = [x for r in per_repeat for x in r]
    stats = latency_stats(pooled)
    row: Dict[str, Any] = {f"latency_{k}": stats.get(k) for k in _STATS}
    counts = [d.get(Doc.TIMED_ITERATIONS) for d in documents]
    row["timed_iterations"] = sum(int(c) for c in counts if c is not None) if any(c is not None for c in counts) \
        else None
    timed = [d.get(Doc.TIMED_S) for d in documents if d.get(Doc.TIMED_S) is not None]
    row["timed_s"] = float(sum(timed)) if timed else None
    blocks = [int(d[Doc.BLOCK_SIZE]) for d in documents if d.get(Doc.BLOCK_SIZE)]
    row["block_size"] = max(blocks) if blocks else None
    row["repeats"] = len(documents)
    row["latency_repeat_cv"] = repeat_spread(per_repeat)
    reasons: List[str] = []
    read_any = False
    for k, document in enumerate(documents):
        conditions = document.get(Doc.CONDITIONS) or {}
        if not conditions:
            continue
        read_any = True
        # heat first: a cell timed hot says so before anything else (summary.md shows the first reason)
        found = heat_reasons(document.get(Doc.HEAT), limits) + \
            noise_reasons(conditions.get("before"), conditions.get("after"), limits, threads)
        slow = slow_device_reason(document.get(Doc.REFERENCE), conditions.get("before"), conditions.get("after"),
                                  limits)
        for reason in found + ([slow] if slow else []):
            reasons.append(f"repeat {k + 1}: {reason}" if len(documents) > 1 else reason)
    row["noisy"] = bool(reasons) if read_any else None
    row["noise_reasons"] = "; ".join(reasons) or None
    row.update(reference_fields(documents))
    row.update(energy_fields(documents))
    row.update(heat_fields(documents))
    row["remeasured"] = sum(1 for r in remeasured if not r.get("kept"))  # agent runs made again
    extras: Dict[str, Any] = {"latencies_ms": pooled,
                              "conditions": [d.get(Doc.CONDITIONS) for d in documents],
                              "reference": [d.get(Doc.REFERENCE) for d in documents],
                              "energy": [d.get(Doc.ENERGY) for d in documents],
                              "heat": [d.get(Doc.HEAT) for d in documents]}
    if remeasured:
        extras["remeasured"] = [dict(r) for r in remeasured]
    if len(documents) > 1:
        extras["repeat_latencies_ms"] = per_repeat
    return row, extras


def reference_fields(documents: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """reference_ms (the median over repeats of each repeat's mean reference time), reference_usual_ms (the
    device's usual at the last repeat) and device_speed (usual / reference); None where the agent kept none."""
    references = [d.get(Doc.REFERENCE) or {} for d in documents]
    times = [float(r["ms"]) for r in references if r.get("ms")]
    usual = next((float(r["usual_ms"]) for r in reversed(references) if r.get("usual_ms")), None)
    ms = float(np.median(times)) if times else None
    return {"reference_ms": ms, "reference_usual_ms": usual,
            "device_speed": usual / ms if usual and ms else None}


def energy_fields(documents: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """The energy columns from each repeat's `energy` (the agent's EnergyMeter): the median over the repeats that
    measured it; where none did, energy_method says "not measured: <why>" and the figures stay empty (never 0).
    A document without `energy` (an agent run without --power) leaves every energy column empty."""
    energies = [d.get(Doc.ENERGY) for d in documents if d.get(Doc.ENERGY)]
    if not energies:
        return {}
    measured = [e for e in energies if not e.get("not_measured") and e.get("mj_per_inference") is not None]
    if not measured:
        first = energies[0]
        why = first.get("not_measured") or "no figures"
        method = f"{first['method']}; not measured: {why}" if first.get("method") else f"not measured: {why}"
        return {"energy_method": method, "energy_rails": ",".join(first.get("rails") or []) or None}

    def median(key: str) -> Optional[float]:
        values = [float(e[key]) for e in measured if e.get(key) is not None]
        return float(np.median(values)) if values else None

    rates = [float(e["sampling_hz"]) for e in measured if e.get("sampling_hz")]
    return {"energy_mj_per_inference": median("mj_per_inference"), "energy_total_mj": median("total_mj"),
            "power_active_w": median("active_w"), "power_idle_w": median("idle_w"),
            "energy_method": measured[0].get("method"), "energy_rails": ",".join(measured[0].get("rails") or []),
            "power_sampling_hz": min(rates) if rates else None}


def heat_fields(documents: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """The heat columns from each repeat's `heat` (the agent's HeatMonitor), the worst repeat of each: the hottest
    start and end of a timed loop, the largest throttled share, the cooldown waits summed, `cooled` False when
    any repeat could not cool (None: no cooldown, or no temperature to cool by). What was not measured is empty,
    never 0, and its method says why. A document without `heat` (an older agent) leaves every heat column empty."""
    heats = [d.get(Doc.HEAT) for d in documents if d.get(Doc.HEAT)]
    if not heats:
        return {}

    def worst(key: str) -> Optional[float]:
        values = [float(h[key]) for h in heats if h.get(key) is not None]
        return max(values) if values else None

    cooldowns = [h["cooldown"] for h in heats if h.get("cooldown")]
    outcomes = [c.get("cooled") for c in cooldowns if c.get("cooled") is not None]
    reached = [float(c["reached_c"]) for c in cooldowns if c.get("reached_c") is not None]
    return {"temperature_start_c": worst("temperature_start_c"), "temperature_end_c": worst("temperature_end_c"),
            "throttled_share": worst("throttled_share"), "temperature_method": heats[0].get("temperature_method"),
            "throttle_method": heats[0].get("throttle_method"),
            "cooldown_wait_s": float(sum(float(c.get("waited_s") or 0.0) for c in cooldowns)) if cooldowns else None,
            "cooldown_reached_c": max(reached) if reached else None,
            "cooled": all(outcomes) if outcomes else None}


def slow_measurement(document: Mapping[str, Any], limits: QuietLimits) -> Optional[str]:
    """Why this agent run was measured on a device running slower than its usual (None: it was not): what makes
    the host measure the repeat again, up to limits.max_remeasures times."""
    conditions = document.get(Doc.CONDITIONS) or {}
    return slow_device_reason(document.get(Doc.REFERENCE), conditions.get("before"), conditions.get("after"), limits)


def slowdown(document: Mapping[str, Any]) -> float:
    """How much slower than usual the device ran while this agent run timed: its speed reference's drift or the
    share of the time a CPU quota held it back, whichever is larger (0.0 where neither is known)."""
    conditions = document.get(Doc.CONDITIONS) or {}
    found = [reference_drift(document.get(Doc.REFERENCE)), quota_share(conditions.get("before"), conditions.get("after"))]
    return max([x for x in found if x is not None] or [0.0])


def remeasure_note(repeat: int, document: Mapping[str, Any], reason: str) -> Dict[str, Any]:
    """What the cell record keeps of a repeat that was measured again: its drift, why, its reference and readings."""
    latencies = [float(x) for x in document.get(Doc.LATENCIES_MS) or []]
    conditions = document.get(Doc.CONDITIONS) or {}
    return {"repeat": repeat, "drift": reference_drift(document.get(Doc.REFERENCE)),
            "quota_share": quota_share(conditions.get("before"), conditions.get("after")), "reason": reason,
            "kept": False,
            "latency_median_ms": float(np.median(latencies)) if latencies else None,
            "latency_mean_ms": float(np.mean(latencies)) if latencies else None,
            "reference": document.get(Doc.REFERENCE), "conditions": document.get(Doc.CONDITIONS)}


def least_slow(documents: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Of a repeat's runs, all measured on a slow device, the one that ran least slower than usual."""
    return min(documents, key=slowdown)


def repeat_medians_ms(record: Mapping[str, Any]) -> Optional[List[float]]:
    """Each repeat's median (ms) from a cell record (cells/<cell>.json), for a reader of the run directory."""
    repeats = record.get("repeat_latencies_ms") or ([record["latencies_ms"]] if record.get("latencies_ms") else None)
    if not repeats:
        return None
    return [float(np.median(r)) for r in repeats if len(r)]

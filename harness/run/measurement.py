"""One cell's latency figures from its agent runs (repeats). Pure: agent documents in, row fields out.

A cell measured in `repeats` independent agent runs (interleaved across the
device's cells by the pipeline) gets its percentiles over every sample of
every repeat, `repeats`, and `latency_repeat_cv`: the standard deviation of
log(median) between the repeats, the process-to-process spread the regression
judge weighs. Each repeat's before/after device readings are judged against the
target's `quiet:` limits; any reason makes the cell `noisy`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

# the pooled figures are computed exactly as the agent computes one run's
from harness.agent.agent import Doc, latency_stats
from harness.judge.device_noise import noise_reasons
from harness.judge.regression import repeat_spread
from harness.schema.targets import QuietLimits

_STATS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms")


def combine_repeats(documents: Sequence[Mapping[str, Any]], limits: QuietLimits = QuietLimits(),
                    threads: int = 1) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(row fields, cell-record extras) from the agent documents of one cell, first run first."""
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
        for reason in noise_reasons(conditions.get("before"), conditions.get("after"), limits, threads):
            reasons.append(f"repeat {k + 1}: {reason}" if len(documents) > 1 else reason)
    row["noisy"] = bool(reasons) if read_any else None
    row["noise_reasons"] = "; ".join(reasons) or None
    extras: Dict[str, Any] = {"latencies_ms": pooled,
                              "conditions": [d.get(Doc.CONDITIONS) for d in documents]}
    if len(documents) > 1:
        extras["repeat_latencies_ms"] = per_repeat
    return row, extras


def repeat_medians_ms(record: Mapping[str, Any]) -> Optional[List[float]]:
    """Each repeat's median (ms) from a cell record (cells/<cell>.json), for a reader of the run directory."""
    repeats = record.get("repeat_latencies_ms") or ([record["latencies_ms"]] if record.get("latencies_ms") else None)
    if not repeats:
        return None
    return [float(np.median(r)) for r in repeats if len(r)]

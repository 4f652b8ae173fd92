"""Was a cell measured on a quiet device? Pure: the agent's readings and the target's limits in, reasons out.

The agent reads the device right before and right after its timing loop
(`conditions` in its JSON: load average, the processes running besides it,
CPU time used by everyone and by itself, governor and frequency, the hottest
thermal zone, throttling flags). `noise_reasons` compares those readings with
the target's `quiet:` limits (harness.schema.targets.QuietLimits); any reason makes the
cell `noisy`, which the gate does not judge ("re-run"), never pass or fail.

`slow_device_reason` judges the device speed reference: a fixed workload the agent
times right before and after timing (and between the chunks of a long timing),
against the device's usual time for it, with the agent's cgroup CPU throttling
counters, CPU pressure (PSI), its CPU's clock and temperature as the evidence of why.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from harness.schema.targets import QuietLimits
from harness.core.numbers import finite_or_none

#: `vcgencmd get_throttled` bits that say what is happening now (a Raspberry Pi)
PI_THROTTLE_NOW = {0: "under-voltage", 1: "ARM frequency capped", 2: "throttled", 3: "soft temperature limit"}




def other_busy_cpus(before: Mapping[str, Any], after: Mapping[str, Any]) -> Optional[float]:
    """CPUs' worth of time that processes other than the agent used between the two readings."""
    b, a = before.get("cpu_jiffies") or {}, after.get("cpu_jiffies") or {}
    tck = finite_or_none(after.get("clk_tck")) or 100.0
    wall = (finite_or_none(after.get("monotonic_s")) or 0.0) - (finite_or_none(before.get("monotonic_s")) or 0.0)
    values = [finite_or_none(x) for x in (b.get("busy"), a.get("busy"), b.get("own"), a.get("own"))]
    if wall <= 0.05 or any(v is None for v in values):
        return None
    busy_b, busy_a, own_b, own_a = values  # type: ignore[misc]
    return max(0.0, ((busy_a - busy_b) - (own_a - own_b)) / tck / wall)


def pi_throttle_flags(text: Optional[str]) -> List[str]:
    """What `vcgencmd get_throttled` (throttled=0x50005) says is happening now."""
    if not text:
        return []
    try:
        value = int(str(text).split("=")[-1].strip(), 16)
    except ValueError:
        return []
    return [name for bit, name in PI_THROTTLE_NOW.items() if value & (1 << bit)]


def noise_reasons(before: Optional[Mapping[str, Any]], after: Optional[Mapping[str, Any]],
                  limits: QuietLimits = QuietLimits(), own_threads: int = 1) -> List[str]:
    """Why the measurement between `before` and `after` is not to be trusted (empty: it is).

    Readings an old agent or a device does not provide are simply not checked.
    """
    before, after = before or {}, after or {}
    reasons: List[str] = []
    others = other_busy_cpus(before, after) if (before and after) else None
    if limits.max_other_busy_cpus is not None and others is not None and others > limits.max_other_busy_cpus:
        names = sorted({str(p.get("name")) for p in (after.get("busy_processes") or []) +
                        (before.get("busy_processes") or []) if isinstance(p, Mapping)})
        reasons.append(f"other processes kept {others:.2f} CPUs busy while timing (max {limits.max_other_busy_cpus:g})"
                       + (f": {', '.join(names[:5])}" if names else ""))
    load = before.get("loadavg")
    cpus = finite_or_none(before.get("cpu_count"))
    if limits.max_load_per_cpu is not None and isinstance(load, (list, tuple)) and load and cpus:
        per_cpu = max(0.0, (finite_or_none(load[0]) or 0.0) - own_threads) / cpus
        if per_cpu > limits.max_load_per_cpu:
            reasons.append(f"load average {load[0]:.2f} on {cpus:.0f} CPU(s) before timing "
                           f"({per_cpu:.2f} per CPU besides the agent, max {limits.max_load_per_cpu:g})")
    temps = [t for t in (finite_or_none(before.get("temperature_c")), finite_or_none(after.get("temperature_c"))) if t is not None]
    if limits.max_temperature_c is not None and temps and max(temps) > limits.max_temperature_c:
        reasons.append(f"temperature {max(temps):.1f} C (max {limits.max_temperature_c:g} C)")
    if limits.fail_on_throttling:
        flags = sorted(set(pi_throttle_flags(before.get("vcgencmd_throttled")) +
                           pi_throttle_flags(after.get("vcgencmd_throttled"))))
        if flags:
            reasons.append(f"throttling: {', '.join(flags)} (vcgencmd get_throttled {after.get('vcgencmd_throttled')})")
        cooling = sorted(set(after.get("cooling_active") or []) | set(before.get("cooling_active") or []))
        if cooling:
            reasons.append(f"throttling: CPU cooling device(s) engaged: {', '.join(map(str, cooling))}")
        count_b, count_a = finite_or_none(before.get("thermal_throttle_count")), finite_or_none(after.get("thermal_throttle_count"))
        if count_b is not None and count_a is not None and count_a > count_b:
            reasons.append(f"throttling: the CPUs' thermal throttle counters rose by {count_a - count_b:.0f} while timing")
    governor = after.get("cpu_governor") or before.get("cpu_governor")
    if limits.require_governor and governor and governor != limits.require_governor:
        reasons.append(f"CPU governor {governor} (the target requires {limits.require_governor})")
    cur, top = finite_or_none(after.get("cur_freq_khz")), finite_or_none(after.get("max_freq_khz"))
    if limits.min_frequency_ratio is not None and cur and top and cur / top < limits.min_frequency_ratio:
        reasons.append(f"CPU at {cur / 1000:.0f} MHz of {top / 1000:.0f} MHz right after timing "
                       f"(min {limits.min_frequency_ratio:.0%})")
    return reasons


def heat_reasons(heat: Optional[Mapping[str, Any]], limits: QuietLimits = QuietLimits()) -> List[str]:
    """Why the agent's `heat` (its HeatMonitor: the cooldown before the cell, the throttled share of the timed
    loop) makes the measurement untrustworthy: a cooldown that could not reach its threshold (the cell was timed
    hot), throttling during the timed loop when the target fails on throttling. Empty: neither."""
    heat = heat or {}
    reasons: List[str] = []
    cooldown = heat.get("cooldown") or {}
    if cooldown.get("cooled") is False:
        reasons.append(str(cooldown.get("note") or f"could not cool below {cooldown.get('below_c')} °C: timed hot"))
    share = finite_or_none(heat.get("throttled_share"))
    if limits.fail_on_throttling and share:
        reasons.append(f"throttled {share:.0%} of the timed loop ({heat.get('throttle_method')})")
    return reasons


def _delta(before: Mapping[str, Any], after: Mapping[str, Any], key: str) -> Optional[float]:
    b, a = finite_or_none(before.get(key)), finite_or_none(after.get(key))
    return a - b if a is not None and b is not None else None


def cgroup_throttling(before: Optional[Mapping[str, Any]], after: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """The CPU quota that throttled the agent most between the two readings (its cgroup or an ancestor with a
    quota): {path, quota_us, period_us, periods, throttled, throttled_s}, None where no group was throttled or
    the agent read no cgroup."""
    before_groups = {g.get("path"): g for g in (before or {}).get("cgroup_cpu") or [] if isinstance(g, Mapping)}
    worst: Optional[Dict[str, Any]] = None
    for group in (after or {}).get("cgroup_cpu") or []:
        if not isinstance(group, Mapping) or group.get("path") not in before_groups:
            continue
        first = before_groups[group["path"]]
        throttled, periods = _delta(first, group, "nr_throttled"), _delta(first, group, "nr_periods")
        if not throttled or throttled <= 0 or worst is not None and throttled <= worst["throttled"]:
            continue
        ns = _delta(first, group, "throttled_ns")
        worst = {"path": group["path"], "quota_us": group.get("quota_us"), "period_us": group.get("period_us"),
                 "periods": int(periods or 0), "throttled": int(throttled),
                 "throttled_s": ns / 1e9 if ns is not None else None}
    return worst


def slowdown_causes(before: Optional[Mapping[str, Any]], after: Optional[Mapping[str, Any]]) -> List[str]:
    """What the agent's readings show that slows a CPU down: a CPU quota that throttled it, tasks waiting for a CPU
    (PSI), the clock of the CPU it ran on below its maximum, heat. Empty: nothing visible."""
    before, after = before or {}, after or {}
    causes: List[str] = []
    quota = cgroup_throttling(before, after)
    if quota:
        limit = (f" ({quota['quota_us']} us of every {quota['period_us']} us)"
                 if quota.get("quota_us") and quota.get("period_us") else "")
        stalled = f", {quota['throttled_s']:.2f} s throttled" if quota.get("throttled_s") is not None else ""
        causes.append(f"CPU quota{limit}, {quota['throttled']} of {quota['periods']} periods throttled{stalled}")
    wall = _delta(before, after, "monotonic_s")
    pressure_b, pressure_a = before.get("cpu_pressure") or {}, after.get("cpu_pressure") or {}
    waited = _delta(pressure_b, pressure_a, "some_total_us") if pressure_b and pressure_a else None
    if waited is not None and wall and wall > 0.05 and waited / 1e6 / wall >= 0.10:
        causes.append(f"CPU pressure: runnable tasks waited for a CPU {waited / 1e6 / wall:.0%} of the time (PSI)")
    own = after.get("own_cpu") or {}
    cur, top = finite_or_none(own.get("cur_freq_khz")), finite_or_none(own.get("max_freq_khz"))
    if cur and top and cur / top < 0.95:
        causes.append(f"CPU {own.get('cpu')} at {cur / 1000:.0f} of {top / 1000:.0f} MHz"
                      + (f" ({own['governor']})" if own.get("governor") else ""))
    temps = [t for t in (finite_or_none(before.get("temperature_c")), finite_or_none(after.get("temperature_c")))
             if t is not None]
    if temps and max(temps) >= 70.0:
        causes.append(f"temperature {max(temps):.0f} C")
    return causes


def reference_drift(reference: Optional[Mapping[str, Any]]) -> Optional[float]:
    """How much slower than its usual the device speed reference ran (0.12: 12 % slower); None: no usual yet."""
    return finite_or_none((reference or {}).get("drift"))


def quota_share(before: Optional[Mapping[str, Any]], after: Optional[Mapping[str, Any]]) -> Optional[float]:
    """The share of the time between the two readings that a CPU quota held the agent back (its cgroup's
    throttled time / wall time): a direct lower bound of how much slower the quota made it. None: not throttled,
    or no readings."""
    quota = cgroup_throttling(before, after)
    wall = _delta(before or {}, after or {}, "monotonic_s")
    if not quota or quota.get("throttled_s") is None or not wall or wall <= 0:
        return None
    return float(quota["throttled_s"]) / wall


def slow_device_reason(reference: Optional[Mapping[str, Any]], before: Optional[Mapping[str, Any]],
                       after: Optional[Mapping[str, Any]], limits: QuietLimits = QuietLimits()) -> Optional[str]:
    """Why a repeat was measured on a device running slower than its usual, with what the readings show about
    the cause; None: it was not.

    Slower than usual: the agent's speed reference ran more than `limits.max_reference_drift` slower than the
    device's usual time for it, or a CPU quota held the agent back more than that share of the time (the cgroup's
    throttled time: a quota bites in bursts, which a short reference may fall between)."""
    limit = limits.max_reference_drift
    if limit is None:
        return None
    drift, share = reference_drift(reference), quota_share(before, after)
    causes = "; ".join(slowdown_causes(before, after)) or \
        "no cause visible in its cgroup, CPU pressure, clock or temperature"
    if drift is not None and drift > limit:
        return f"the device ran {drift:.0%} slower than its reference while timing: {causes}"
    if share is not None and share > limit:
        was = f" (its reference ran {drift:+.0%} against its usual)" if drift is not None else ""
        return f"a CPU quota held the agent back {share:.0%} of the time while timing{was}: {causes}"
    return None

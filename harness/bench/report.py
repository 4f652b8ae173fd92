"""bench.json and its Markdown tables (pure: a dict in, text out), plus the machine description."""
from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional


def machine() -> Dict[str, Any]:
    """What the figures came from."""
    cpu = None
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), None)
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as handle:
            mem = next((int(line.split()[1]) * 1024 for line in handle if line.startswith("MemTotal")), None)
    except OSError:
        pass
    versions = {}
    for module in ("openvino", "ai_edge_litert", "onnxruntime", "numpy"):
        try:
            versions[module] = str(__import__(module).__version__)
        except Exception:
            versions[module] = None
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu_model": cpu,
            "cpus": len(os.sched_getaffinity(0)), "mem_total_bytes": mem, "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions}


def _f(value: Optional[float], fmt: str = "{:.3f}") -> str:
    return "" if value is None else fmt.format(value)


def _mib(value: Optional[int]) -> str:
    return "" if value is None else f"{value / 2**20:.0f} MiB"


def fidelity_table(pairings: List[Dict[str, Any]]) -> List[str]:
    lines = ["| model | format | vendor tool | precision (agent/vendor) | threads | iterations | rounds | "
             "agent median ms | vendor median ms | ratio agent/vendor (paired) | of medians | of minima | "
             "of means (paired) | per-round ratios | within 5 % |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in pairings:
        if p.get("error"):
            lines.append(f"| {p['model']} | {p['fmt']} | {p['vendor_tool']} | {p['precision'] or 'default'} | "
                         f"{p['threads']} | | | | | error: {p['error'][:120]} | | | | | |")
            continue
        rounds = ", ".join(f"{r:.3f}" for r in p["round_ratios"])
        within = {True: "yes", False: "no", None: ""}[p["within_5_percent"]]
        used = p.get("precision_used") or ""
        lines.append(f"| {p['model']} | {p['fmt']} | {p['vendor_tool']} | {p['precision'] or 'default'} ({used}) | "
                     f"{p['threads']} | {p['iterations']} | {len(p['agent_ms'])} | {_f(p['agent_median_ms'], '{:.4f}')}"
                     f" | {_f(p['vendor_median_ms'], '{:.4f}')} | {_f(p['ratio'])} | "
                     f"{_f(p.get('ratio_of_medians'))} | {_f(p.get('ratio_of_minima'))} | "
                     f"{_f(p.get('ratio_of_means'))} | {rounds} | {within} |")
    return lines


def overhead_table(doc: Dict[str, Any]) -> List[str]:
    lines = ["| run | wall s | cells | agent-timed s | + untimed (est.) s | agent processes s | probes s | "
             "wall / agent-own | wall / agent processes | controller peak | statuses |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in [doc["cold"], *doc["warm"], *([doc["warm_no_report"]] if doc.get("warm_no_report") else [])]:
        lines.append(f"| {t['label']} | {t['run']['wall_s']:.2f} | {t['cells']} | {t['agent_timed_s']:.3f} | "
                     f"{t['agent_estimated_untimed_s']:.3f} | {t['agent_process_wall_s']:.2f} | "
                     f"{t['probe_process_wall_s']:.2f} | {_f(t['wall_over_agent_own'], '{:.1f}')} | "
                     f"{_f(t['wall_over_agent_process'], '{:.1f}')} | {_mib(t['run']['controller_peak_rss_bytes'])} | "
                     f"{', '.join(f'{n} {s}' for s, n in sorted(t.get('statuses', {}).items()))} |")
    return lines


def scaling_table(doc: Dict[str, Any]) -> List[str]:
    lines = ["| devices | mode | cells (ok) | wall s | wall / 1 device | wall per ok cell s | controller peak | "
             "statuses |", "|---|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(r["statuses"].items()))
        lines.append(f"| {r['devices']} | {r['mode']} | {r['cells']} ({r['cells_ok']}) | {r['wall_s']:.2f} | "
                     f"{_f(r['wall_over_smallest'], '{:.2f}')} | {_f(r['wall_per_ok_cell_s'], '{:.2f}')} | "
                     f"{_mib(r['controller_peak_rss_bytes'])} | {statuses} |")
    return lines


def memory_table(doc: Dict[str, Any]) -> List[str]:
    lines = ["| run | controller peak RSS (VmHWM) | sampled peak | largest process in the tree |", "|---|---|---|---|"]
    for r in doc["runs"]:
        lines.append(f"| {r['label']} | {_mib(r['controller_peak_rss_bytes'])} | {_mib(r['sampled_peak_rss_bytes'])} "
                     f"| {_mib(r.get('tree_max_rss_bytes'))} |")
    return lines


def _pct(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.1%}"


def calibration_table(doc: Dict[str, Any]) -> List[str]:
    """One row per (model, format): noise, false alarms, slowdowns caught (applied, and made real)."""
    lines = ["| model | format | median ms | block size | between-run CV | between-repeat CV | noise-only pairs: "
             "false alarms | 10 % applied: caught | caught without history (repeats only) | median 95 % CI width | "
             "CI covers +10 % | quota: median change | quota: caught | noisy reruns | quiet reruns only: "
             "between-run CV, false alarms, caught |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        q = r.get("quota") or {}
        blocks = ", ".join(map(str, r.get("block_sizes") or [])) or "1"
        quota_caught = f"{q['caught']}/{q['pairs']}" if q else "skipped"
        qs = r.get("quiet")
        quiet = (f"{_pct(qs['between_run_cv'])}, {qs['false_alarms']}/{qs['pairs']}, {qs['caught']}/{qs['pairs']}"
                 if qs else "fewer than 2 quiet reruns")
        lines.append(
            f"| {r['model']} | {r['fmt']} | {_f(r['median_ms'], '{:.4f}')} | {blocks} | {_pct(r['between_run_cv'])} | "
            f"{_pct(r['between_repeat_cv'])} | {r['false_alarms']}/{r['pairs']} | {r['caught']}/{r['pairs']} | "
            f"{r['caught_without_history']}/{r['pairs']} | {_pct(r['ci_width_median'])} | "
            f"{_pct(r['ci_covers_slowdown'])} | {_pct(q.get('median_change')) if q else 'skipped'} | "
            f"{quota_caught} | {r.get('noisy_reruns', '')}/{r['reruns']} | {quiet} |")
    pairs = doc.get("pairs") or 0
    caught = doc.get("caught") or 0
    lines += ["", f"All cells: {doc.get('false_alarms')} false alarm(s) in {pairs} noise-only pairs "
                  f"({_pct(doc.get('false_alarms', 0) / pairs if pairs else None)}); {caught} of {pairs} 10 % slowdowns "
                  f"caught ({_pct(caught / pairs if pairs else None)}). Quota: {doc.get('quota') or 'not run'}."]
    qp = doc.get("quiet_pairs")
    if qp is not None:
        limits = doc.get("quiet_limits") or {}
        lines += ["", f"Quiet reruns only (the guard at max_other_busy_cpus {limits.get('max_other_busy_cpus')}, "
                      f"max_load_per_cpu {limits.get('max_load_per_cpu')}; history from quiet reruns alone): "
                      f"{doc.get('quiet_false_alarms')} false alarm(s) in {qp} pairs, {doc.get('quiet_caught')} of {qp} "
                      f"10 % slowdowns caught ({_pct(doc['quiet_caught'] / qp if qp else None)})."]
    return lines


def paired_table(doc: Dict[str, Any]) -> List[str]:
    lines = ["| model | format | median ms | between-repeat CV | noise-only change SD | noise only: false alarms | "
             "10 % applied: caught | median 95 % CI width | CI covers +10 % | quota: median change | quota: caught | "
             "reruns the guard calls noisy |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        q = r.get("quota") or {}
        lines.append(
            f"| {r['model']} | {r['fmt']} | {_f(r['median_ms'], '{:.4f}')} | {_pct(r['between_repeat_cv'])} | "
            f"{_pct(r['noise_only_change_sd'])} | {r['false_alarms']}/{r['reruns']} | {r['caught']}/{r['reruns']} | "
            f"{_pct(r['ci_width_median'])} | {_pct(r['ci_covers_slowdown'])} | "
            f"{_pct(q.get('median_change')) if q else 'skipped'} | "
            f"{str(q['caught']) + '/' + str(q['reruns']) if q else 'skipped'} | {r['noisy_reruns']}/{r['reruns']} |")
    n = doc.get("reruns") or 0
    lines += ["", f"All cells: {doc['false_alarms']} false alarm(s) in {n} noise-only paired reruns "
                  f"({_pct(doc['false_alarms'] / n if n else None)}); {doc['caught']} of {n} 10 % slowdowns caught "
                  f"({_pct(doc['caught'] / n if n else None)})."]
    return lines


def distributed_table(doc: Dict[str, Any]) -> List[str]:
    lines: List[str] = []
    build = doc.get("build")
    if build:
        lines += ["| workers | build wall s | artifacts | failed | progress lines by worker |", "|---:|---:|---:|---:|---|"]
        for b in (build["one_worker"], build["two_workers"]):
            lines.append(f"| {b['workers']} | {b['wall_s']:.1f} | {b['artifacts']} | {len(b['failed'])} | "
                         f"{b['progress_lines_by_worker']} |")
        walls = {n: [round(w, 1) for w in ws] for n, ws in (build.get("wall_s") or {}).items()}
        best = f", {build['best_ratio']:.2f}x fastest against fastest" if build.get("best_ratio") else ""
        steps = {n: [round(w, 1) for w in ws] for n, ws in (build.get("step_seconds") or {}).items()}
        lines += ["", f"2 workers / 1 worker: **{build['ratio']:.2f}x** (medians{best}; "
                  f"{', '.join(build['one_worker']['variants'])}; every run's wall s: {walls}, its summed step "
                  f"seconds: {steps}; the table shows the fastest runs; load average before them: "
                  f"{build['one_worker'].get('load_average_before', 0):.1f} and "
                  f"{build['two_workers'].get('load_average_before', 0):.1f})."
                  " Cluster: " + "; ".join(f"`{c}`" for c in build["two_workers"]["commands"]), ""]
    d = doc.get("dispatch")
    if d:
        lines += ["| dispatch | per cell ms | fixed per job s |", "|---|---:|---:|"]
        for mode in ("threads", "dask"):
            lines.append(f"| {mode} | {d[mode]['per_cell_ms']:.2f} | {d[mode]['fixed_s']:.2f} |")
        lines += ["", f"dask adds {d['extra_per_cell_ms']:.2f} ms per cell and {d['extra_fixed_s']:.2f} s per job "
                  f"(slope between {min(d['sizes'])} and {max(d['sizes'])} cells that end `skipped`, median of "
                  f"{d['rounds']} rounds). Cluster: " + "; ".join(f"`{c}`" for c in d["commands"])]
    return lines


def markdown(doc: Dict[str, Any]) -> str:
    m = doc["machine"]
    out = [f"# Benchmark ({m['date']})", "",
           f"Machine: {m['cpu_model']}, {m['cpus']} CPUs, {_mib(m['mem_total_bytes'])} RAM, Python {m['python']}; "
           f"OpenVINO {m['versions'].get('openvino')}, ai-edge-litert {m['versions'].get('ai_edge_litert')}. "
           f"Load average at start {doc.get('load_average_start')}, at end {doc.get('load_average_end')}. "
           f"Settings: {doc['settings']}. Total bench wall time {doc.get('total_wall_s', 0):.0f} s.", ""]
    if "fidelity" in doc:
        out += ["## Measurement fidelity (agent vs vendor tools, same file, same threads, alternating rounds)", ""]
        out += fidelity_table(doc["fidelity"]) + [""]
    if "overhead" in doc:
        o = doc["overhead"]
        out += ["## Harness overhead (one model, local target)", ""] + overhead_table(o) + [""]
        out += [f"Warm (median of {len(o['warm'])}) / cold wall: {_f(o['warm_over_cold'])}; warm wall / agent processes: "
                f"{_f(o.get('warm_wall_over_agent_process'))}, with {o.get('history_runs', '?')} runs in the history.", ""]
    if "scaling" in doc:
        out += ["## Scaling: nightly (`harness farm run`) over simulated devices", ""] + scaling_table(doc["scaling"])
        out += [""]
    if "cache_verify" in doc:
        from harness.bench.cache_verify import markdown as cache_verify_markdown
        out += cache_verify_markdown(doc["cache_verify"])
    if "calibration" in doc:
        c = doc["calibration"]
        out += ["## Gate calibration (real reruns; the regression judge at its defaults)", "",
                f"{c['settings']['reruns']} reruns x {c['settings']['repeats']} interleaved repeats of "
                f"{c['settings']['duration_s']:g} s per cell; min effect {c['settings']['min_effect']:.0%}, "
                f"alpha {c['settings']['alpha']:g}; {c['wall_s']:.0f} s.", ""]
        out += calibration_table(c) + [""]
    if "nightly" in doc:
        n = doc["nightly"]
        d = n["delay95_all_series"]
        out += ["## Nightly calibration (change points and the mean / p90 rule on real reruns)", "",
                f"95 % of series (median, mean and p90) find a 5 % shift within {d['delays']['0.05']} nights "
                f"({d['quiet_delays']['0.05']} quiet nights; target 5) and a 10 % shift within "
                f"{d['delays']['0.1']} nights ({d['quiet_delays']['0.1']} quiet; target 3); false change points per 100 series-nights "
                f"{n['false_change_points_per_100_series_nights']:.2f} (target at most 1); quota runs caught "
                f"{n['quota_caught']}/{n['quota_runs']}, false alarms {n['false_alarms']}/{n['noise_runs']}. "
                f"Per cell: nightly.md ({n['wall_s']:.0f} s).", ""]
    if "paired_calibration" in doc:
        c = doc["paired_calibration"]
        st = c["settings"]
        out += ["## Gate calibration of paired runs (`--baseline-model-file`; real reruns)", "",
                f"{st['reruns']} reruns; each measures every cell as baseline and candidate (the same file) in "
                f"{st['repeats']} interleaved rounds of {st['duration_s']:g} s agent runs; judged as `harness gate` "
                f"judges a paired run (no history); min effect {st['min_effect']:.0%}, alpha {st['alpha']:g}; "
                f"{c['wall_s']:.0f} s.", ""]
        out += paired_table(c) + [""]
    if "distributed" in doc:
        out += ["## Distributed (dask): build on 1 worker against 2, and per-cell dispatch", ""]
        out += distributed_table(doc["distributed"]) + [""]
    if "memory" in doc:
        out += ["## Host controller peak memory", ""] + memory_table(doc["memory"]) + [""]
    for note in doc.get("notes", []):
        out.append(f"- {note}")
    return "\n".join(out).rstrip() + "\n"

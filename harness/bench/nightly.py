"""Nightly calibration: how soon the change-point detector finds a persistent shift, how often it finds one in
noise, and how well the mean / p90 rule catches a real CPU-quota slowdown, on real reruns.

    python -m harness.bench.nightly --reruns 10 --quota-reruns 5          # measure, then analyse (about 10 min)
    make bench ARGS="--only nightly"                                        # the same, as a step of the bench
    python -m harness.bench.nightly --samples reports/bench/nightly-samples.json.gz   # analyse again only

Measured with the gate calibration's own machinery (harness.bench.calibration.measure): the three calibration
models (about 20 us, 1 ms, 10 ms) in TFLite, ONNX Runtime and OpenVINO, each rerun `reruns` times (one nightly
run per rerun) of `repeats` agent processes interleaved across cells (3, as `make nightly` runs them), then
`quota_reruns` more under a real 90 % CPU quota (cgroup). A rerun the quiet-device guard flagged is a noisy
night: in the series but skipped, never a baseline, never judged. Then, per cell:

* series: NIGHTS nights, each night one of the cell's real reruns drawn at random (with replacement: a series
  longer than the reruns repeats some); the run-level figure of each is what the history store would hold, for
  each figure the nightly rule watches (median, mean and p90: the same nights, three series);
* noise only: the detector (harness.judge.trends) is run on every prefix from night 8 on, as it runs each
  night; every change point it reports for the first time is a false change point (per 100 series-nights);
* shifted: the same series with every sample multiplied by 1 + shift from night SHIFT_NIGHT on (5 % and
  10 %); the delay is the number of shifted nights the series has when a regression change point at the shift
  (within one night) is first reported; the table gives the delay that 95 % of series meet;
* quota: each quota rerun judged as a single run against the cell's normal reruns as the baseline segment
  (harness.judge.gate's nightly baseline: each run one repeat), on the mean and p90 rule; a noise-only normal
  rerun against the others is the false-alarm check.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from harness.judge.regression import LATENCY_FIGURES, compare_latency, run_level_figure
from harness.judge.trends import (DEFAULT_THRESHOLDS, POINT_NOISY, POINT_OK, Trend, TrendPoint, find_change_points,
                                  trend_detectability)

NIGHTS = 24
SHIFT_NIGHT = 16
#: the delay recorded for a shift not found within the series
NOT_FOUND = NIGHTS - SHIFT_NIGHT + 1
FIRST_NIGHT_JUDGED = 8
SERIES_PER_CELL = 20
SHIFTS = (0.05, 0.10)
#: the issue's bar for mean and p90: a 10 % shift found within 3 quiet nights wherever a series can see 10 %
JUDGEABLE_SHIFT = 0.10


def _run_figures(runs: Sequence[Sequence[Sequence[float]]], figure: str) -> np.ndarray:
    """Each rerun's run-level figure, as the history store holds it. A shift multiplies every sample of a night,
    and median, mean and p90 are all scale-equivariant, so a shifted night's figure is this times 1 + shift."""
    return np.asarray([float(run_level_figure([np.asarray(r) for r in run], figure)) for run in runs])


def _night_values(per_run: np.ndarray, order: Sequence[int], scale_from: int = 10 ** 9,
                  scale: float = 1.0) -> List[float]:
    return [float(per_run[i]) * (scale if n >= scale_from else 1.0) for n, i in enumerate(order)]


def _trend(values: Sequence[float], figure: str, noisy: Sequence[bool]) -> Trend:
    """A series as the history store holds it: a night measured on a busy device stays, marked noisy, and
    the detector skips it (harness.judge.trends)."""
    return Trend(("bench",), figure, tuple(TrendPoint(f"n{i:02d}", v, POINT_NOISY if bad else POINT_OK)
                                           for i, (v, bad) in enumerate(zip(values, noisy))))


def series_analysis(runs: Sequence[Sequence[Sequence[float]]], seed: int, figure: str = "median",
                    noisy: Sequence[bool] = ()) -> Dict[str, Any]:
    """False change points on noise and detection delays for one cell's real reruns; `noisy` marks the reruns
    the quiet-device guard flagged."""
    rng = np.random.default_rng(seed)  # the same seed draws the same nights for every figure
    flagged = list(noisy) + [False] * (len(runs) - len(noisy))
    per_run = _run_figures(runs, figure)
    false_points = false_regressions = nights = 0
    gate_threshold = DEFAULT_THRESHOLDS[figure]  # what the nightly gate rule fails on, where a policy names none
    delays: Dict[float, List[int]] = {s: [] for s in SHIFTS}
    quiet_delays: Dict[float, List[int]] = {s: [] for s in SHIFTS}
    no_threshold = {figure: 0.0}  # the detector itself: any significant shift the bad way
    detectability: List[Optional[float]] = []
    for _ in range(SERIES_PER_CELL):
        order = rng.integers(0, len(runs), NIGHTS)
        values = _night_values(per_run, order)
        night_noisy = [flagged[i] for i in order]
        # what the gate would say of this series on the night before the shift: its detectable shift, from its
        # own quiet history (the nightly rule's "not judged at this threshold" above the threshold)
        detectability.append(trend_detectability(_trend(values[:SHIFT_NIGHT], figure, night_noisy[:SHIFT_NIGHT])))
        reported: set = set()
        for n in range(FIRST_NIGHT_JUDGED, NIGHTS + 1):
            nights += 1
            for change in find_change_points(_trend(values[:n], figure, night_noisy[:n]), thresholds=no_threshold).change_points:
                if change.run_id not in reported:
                    reported.add(change.run_id)
                    false_points += 1
                    false_regressions += bool(change.regression and change.shift >= gate_threshold)
        # where the shift lies among the nights the detector uses (a noisy night is skipped)
        first_shifted = sum(not bad for bad in night_noisy[:SHIFT_NIGHT])
        for shift in SHIFTS:
            shifted = _night_values(per_run, order, SHIFT_NIGHT, 1.0 + shift)
            delay = quiet_delay = NOT_FOUND
            for n in range(SHIFT_NIGHT + 1, NIGHTS + 1):
                found = find_change_points(_trend(shifted[:n], figure, night_noisy[:n]),
                                           thresholds=no_threshold).change_points
                if any(c.regression and abs(c.index - first_shifted) <= 1 for c in found):
                    delay = n - SHIFT_NIGHT
                    quiet_delay = delay - sum(night_noisy[SHIFT_NIGHT:n])
                    break
            delays[shift].append(delay)
            quiet_delays[shift].append(quiet_delay)
    return {"false_change_points": false_points, "false_regressions": false_regressions,
            "series_nights": nights, "delays": delays,
            "quiet_delays": quiet_delays, "detectability": detectability}


def delay_for(share: float, delays: Sequence[int]) -> int:
    """The delay `share` of the series meet (an order statistic: no interpolation between two series)."""
    return int(np.quantile(np.asarray(delays), share, method="inverted_cdf"))


def quota_analysis(runs: Sequence[Sequence[Sequence[float]]], quota_runs: Sequence[Sequence[Sequence[float]]],
                   figures: Sequence[str] = ("mean", "p90"), noisy: Sequence[bool] = ()) -> Dict[str, Any]:
    """Each quota run, and each quiet normal run (leave one out), against the quiet normal runs as the baseline
    segment. A rerun the guard flagged is what the gate leaves not judged: never a baseline, never a verdict."""
    flagged = list(noisy) + [False] * (len(runs) - len(noisy))
    runs = [r for r, bad in zip(runs, flagged) if not bad]
    def judged(baseline: Sequence[Sequence[Sequence[float]]], candidate: Sequence[Sequence[float]]) -> Dict[str, Any]:
        base = [np.concatenate([np.asarray(r) for r in run]) for run in baseline]
        cand = np.concatenate([np.asarray(r) for r in candidate])
        results = {f: compare_latency(base, cand, figure=f) for f in ("median", *figures)}
        return {"regressed": any(results[f].regressed for f in figures),
                "median_regressed": results["median"].regressed,
                "changes": {f: results[f].relative_change for f in results}}
    quota = [judged(runs, q) for q in quota_runs]
    noise = [judged([r for j, r in enumerate(runs) if j != i], runs[i]) for i in range(len(runs))]
    return {"quota_caught": sum(q["regressed"] for q in quota), "quota_runs": len(quota),
            "quota_caught_by_median": sum(q["median_regressed"] for q in quota),
            "false_alarms": sum(n["regressed"] for n in noise), "noise_runs": len(noise),
            "not_judged_noisy": sum(flagged),
            "quota_change": {f: float(np.median([q["changes"][f] for q in quota])) if quota else None
                             for f in ("median", "mean", "p90")}}


def reference_flags(cell: Dict[str, Any]) -> Dict[str, Any]:
    """How often the device speed reference called a rerun slow (any of its repeats): quiet reruns (its false
    alarms: single agent runs, before any measuring again) and quota reruns (its detections)."""
    slow, quota_slow = cell.get("slow") or [], cell.get("quota_slow") or []
    return {"quiet_flagged": sum(bool(x) for x in slow), "quiet_reruns": len(slow),
            "quota_flagged": sum(bool(x) for x in quota_slow), "quota_reruns": len(quota_slow),
            "quota_naming_the_quota": sum("CPU quota" in x for x in quota_slow)}


def _judgeable(detectability: Sequence[Optional[float]]) -> List[bool]:
    """Per series: can it see a JUDGEABLE_SHIFT (its detectable shift known and at most that)?"""
    return [d is not None and d <= JUDGEABLE_SHIFT for d in detectability]


def _figure_row(series: Dict[str, Any]) -> Dict[str, Any]:
    judgeable = _judgeable(series["detectability"])
    return {"false_change_points": series["false_change_points"], "false_regressions": series["false_regressions"],
            "series_nights": series["series_nights"],
            **{f"delay95_{int(s * 100)}pct": delay_for(0.95, d) for s, d in series["delays"].items()},
            **{f"quiet_delay95_{int(s * 100)}pct": delay_for(0.95, d) for s, d in series["quiet_delays"].items()},
            "delays": {str(s): d for s, d in series["delays"].items()},
            "quiet_delays": {str(s): d for s, d in series["quiet_delays"].items()},
            "detectability": series["detectability"], "judgeable": judgeable,
            **{f"found_{int(s * 100)}pct": sum(x <= NIGHTS - SHIFT_NIGHT for x in d) for s, d in
               series["delays"].items()}}


def _pooled(figure_rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    nights = sum(r["series_nights"] for r in figure_rows)
    return {"delay95_all_series": {kind: {str(s): delay_for(0.95, [x for r in figure_rows for x in r[kind][str(s)]])
                                          for s in SHIFTS} for kind in ("delays", "quiet_delays")},
            "false_change_points_per_100_series_nights":
                100.0 * sum(r["false_change_points"] for r in figure_rows) / max(nights, 1),
            "false_regressions_per_100_series_nights":
                100.0 * sum(r["false_regressions"] for r in figure_rows) / max(nights, 1),
            **_judgeable_pooled(figure_rows)}


def _judgeable_pooled(figure_rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The series whose detectability is at most JUDGEABLE_SHIFT: their share, and the quiet nights 95 % of them
    need to find that shift (None when there are none)."""
    judgeable = [j for r in figure_rows for j in r["judgeable"]]
    delays = [d for r in figure_rows for d, j in zip(r["quiet_delays"][str(JUDGEABLE_SHIFT)], r["judgeable"]) if j]
    return {"judgeable_series": sum(judgeable), "series": len(judgeable),
            "judgeable_share": sum(judgeable) / len(judgeable) if judgeable else None,
            "judgeable_quiet_delay95": delay_for(0.95, delays) if delays else None}


def analyse(raw: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Every cell's median, mean and p90 series (the figures the nightly rule watches), the quota rule, and the
    pooled figures: all series together and each figure alone."""
    rows = []
    for n, (key, cell) in enumerate(sorted(raw.items())):
        runs, quota_runs = cell["runs"], cell.get("quota_runs") or []
        noisy = [bool(x) for x in cell.get("noise") or []]
        quiet = [r for j, r in enumerate(runs) if not (j < len(noisy) and noisy[j])]
        by_figure = {figure: _figure_row(series_analysis(runs, seed=n, figure=figure, noisy=noisy))
                     for figure in LATENCY_FIGURES}
        row = {"cell": key, "reruns": len(runs), "noisy_reruns": sum(noisy), "series": SERIES_PER_CELL,
               "between_run_cv": {figure: float(np.std(np.log(_run_figures(quiet, figure)), ddof=1))
                                  for figure in LATENCY_FIGURES},
               "by_figure": by_figure}
        if quota_runs:
            row.update(quota_analysis(runs, quota_runs, noisy=noisy))
        if "slow" in cell:  # measured with the device speed reference on
            row["reference"] = reference_flags(cell)
        rows.append(row)
    figure_rows = [r["by_figure"][f] for r in rows for f in LATENCY_FIGURES]
    return {"rows": rows, **_pooled(figure_rows),
            "by_figure": {f: _pooled([r["by_figure"][f] for r in rows]) for f in LATENCY_FIGURES},
            "quota_caught": sum(r.get("quota_caught", 0) for r in rows),
            "quota_runs": sum(r.get("quota_runs", 0) for r in rows),
            "false_alarms": sum(r.get("false_alarms", 0) for r in rows),
            "noise_runs": sum(r.get("noise_runs", 0) for r in rows),
            "reference": {k: sum(r["reference"][k] for r in rows if "reference" in r)
                          for k in ("quiet_flagged", "quiet_reruns", "quota_flagged", "quota_reruns",
                                    "quota_naming_the_quota")} if any("reference" in r for r in rows) else None,
            "settings": {"nights": NIGHTS, "shift_night": SHIFT_NIGHT, "first_night_judged": FIRST_NIGHT_JUDGED,
                         "series_per_cell": SERIES_PER_CELL, "shifts": list(SHIFTS),
                         "figures": list(LATENCY_FIGURES)}}


def markdown(result: Dict[str, Any]) -> str:
    s = result["settings"]
    figures = s["figures"]
    n_series = len(result["rows"]) * s["series_per_cell"]

    def per_figure(row: Dict[str, Any], fmt: Callable[[Dict[str, Any]], str]) -> str:
        return " / ".join(fmt(row["by_figure"][f]) for f in figures)

    lines = ["# Nightly calibration", "",
             f"{s['series_per_cell']} series of {s['nights']} nights per cell and figure ({', '.join(figures)}), "
             f"drawn from its real reruns; shifts applied to the real samples from night {s['shift_night']}; "
             f"detector run each night from night {s['first_night_judged']}. A night drawn from a rerun the "
             f"quiet-device guard flagged is in the series as noisy and skipped, as the history store does; delays "
             f"are the nights (quiet nights in brackets, where they differ) until 95 % of series found the shift, "
             f"{NOT_FOUND} meaning not within the series. Quota and false alarms: single run against the quiet "
             f"reruns; a flagged rerun is not judged.", "",
             f"Each cell: {' / '.join(figures)}.", "",
             "| cell | reruns (flagged noisy) | between-run CV | false CPs / series-nights | 5 % found | "
             "5 % delay | 10 % found | 10 % delay | quota caught mean/p90 (median alone) | "
             "quota change median / mean / p90 | noise false alarms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def delay(f: Dict[str, Any], pct: int) -> str:
        d, q = f[f"delay95_{pct}pct"], f[f"quiet_delay95_{pct}pct"]
        return f"{d}" if d == q else f"{d} ({q})"

    for r in result["rows"]:
        q = r.get("quota_change") or {}
        quota = (f"{r['quota_caught']}/{r['quota_runs']} ({r['quota_caught_by_median']})" if "quota_runs" in r else "-")
        change = " / ".join(f"{q[f]:+.1%}" if q.get(f) is not None else "-" for f in ("median", "mean", "p90")) \
            if q else "-"
        cv = " / ".join(f"{r['between_run_cv'][f]:.1%}" for f in figures)
        lines.append(f"| {r['cell']} | {r['reruns']} ({r.get('noisy_reruns', 0)}) | {cv} | "
                     f"{per_figure(r, lambda f: str(f['false_change_points']))} of "
                     f"{r['by_figure'][figures[0]]['series_nights']} | "
                     f"{per_figure(r, lambda f: str(f['found_5pct']))} of {r['series']} | "
                     f"{per_figure(r, lambda f: delay(f, 5))} | "
                     f"{per_figure(r, lambda f: str(f['found_10pct']))} of {r['series']} | "
                     f"{per_figure(r, lambda f: delay(f, 10))} | {quota} | {change} | "
                     f"{r.get('false_alarms', '-')}/{r.get('noise_runs', '-')} |")

    def summary(pooled: Dict[str, Any]) -> str:
        d = pooled["delay95_all_series"]
        return (f"95 % find a 5 % shift within {d['delays']['0.05']} nights ({d['quiet_delays']['0.05']} quiet) and "
                f"a 10 % shift within {d['delays']['0.1']} ({d['quiet_delays']['0.1']} quiet); false change points "
                f"per 100 series-nights {pooled['false_change_points_per_100_series_nights']:.2f}, of them "
                f"regressions of 5 % or more (what fails the nightly gate) "
                f"{pooled['false_regressions_per_100_series_nights']:.2f}")

    def judgeable(figure: str) -> str:
        pooled = result["by_figure"][figure]
        if not pooled.get("judgeable_series"):
            return f"no series can see a {JUDGEABLE_SHIFT:.0%} shift (its detectability is above it)"
        return (f"{pooled['judgeable_series']} of {pooled['series']} series ({pooled['judgeable_share']:.0%}) have a "
                f"detectability of at most {JUDGEABLE_SHIFT:.0%}, and 95 % of them find a {JUDGEABLE_SHIFT:.0%} shift "
                f"within {pooled['judgeable_quiet_delay95']} quiet nights")

    rows = result["rows"]
    meets = {f: (sum(r["by_figure"][f]["delay95_5pct"] <= 5 for r in rows),
                 sum(r["by_figure"][f]["delay95_10pct"] <= 3 for r in rows)) for f in figures}
    lines += ["", f"All {n_series * len(figures)} series ({n_series} per figure): {summary(result)} (targets: 5, 3 "
                  f"and at most 1)."]
    lines += [f"- {f} series: {summary(result['by_figure'][f])}; cells meeting 5 % within 5 nights "
              f"{meets[f][0]} of {len(rows)}, 10 % within 3 {meets[f][1]} of {len(rows)}; {judgeable(f)}."
              for f in figures]
    lines += ["", f"Quota runs caught by the mean or p90 rule: {result['quota_caught']}/{result['quota_runs']} "
                  f"(target 95 %); false alarms on quiet noise-only runs: {result['false_alarms']}/"
                  f"{result['noise_runs']} (target at most 1 %)."]
    if result.get("reference"):
        lines += ["", "## Device speed reference", "",
                  "Reruns in which any repeat's reference ran more than 5 % slower than the device's usual, or a CPU "
                  "quota held the agent back more than 5 % of the time (single agent runs, before the pipeline "
                  "measures a slow repeat again). Quiet reruns flagged are its false alarms; quota reruns flagged "
                  "its detections.", "",
                  "| cell | quiet reruns flagged | quota reruns flagged (naming the quota) |", "|---|---:|---:|"]
        for r in result["rows"]:
            f = r.get("reference")
            if f:
                lines.append(f"| {r['cell']} | {f['quiet_flagged']}/{f['quiet_reruns']} | "
                             f"{f['quota_flagged']}/{f['quota_reruns']} ({f['quota_naming_the_quota']}) |")
        t = result["reference"]
        lines.append(f"| all | {t['quiet_flagged']}/{t['quiet_reruns']} | {t['quota_flagged']}/{t['quota_reruns']} "
                     f"({t['quota_naming_the_quota']}) |")
    return "\n".join(lines) + "\n"


def nightly_calibration(models_dir: Path, workdir: Path, reruns: int, quota_reruns: int, duration_s: float,
                        out: Path, log: Callable[[str], None] = print, samples: Optional[Path] = None,
                        repeats: int = 3) -> Dict[str, Any]:
    """Measure (or, with `samples`, read) the reruns, analyse them, and write nightly.json, nightly.md and the
    samples under `out`; the summary `make bench` keeps in bench.json."""
    started = time.perf_counter()
    if samples:
        with gzip.open(samples, "rt", encoding="utf-8") as handle:
            raw = json.load(handle)
    else:
        from harness.bench.calibration import build_models, measure
        models = build_models(models_dir, log)
        workdir.mkdir(parents=True, exist_ok=True)
        series, quota_note = measure(models, reruns, repeats, quota_reruns, duration_s, workdir, log)
        log(f"  quota: {quota_note or 'none'}")
        raw = {k: asdict(v) for k, v in series.items()}
        out.mkdir(parents=True, exist_ok=True)
        with gzip.open(out / "nightly-samples.json.gz", "wt", encoding="utf-8") as handle:
            json.dump(raw, handle)
    result = analyse(raw)
    result["wall_s"] = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "nightly.json").write_text(json.dumps(result, indent=1, default=float))
    (out / "nightly.md").write_text(markdown(result))
    log(f"  nightly calibration: {out / 'nightly.md'} ({result['wall_s']:.0f}s)")
    return {k: result[k] for k in ("delay95_all_series", "false_change_points_per_100_series_nights",
                                   "false_regressions_per_100_series_nights", "by_figure", "quota_caught",
                                   "quota_runs", "false_alarms", "noise_runs", "reference", "settings", "wall_s")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.bench.nightly", description=__doc__.splitlines()[0])
    p.add_argument("--reruns", type=int, default=10, help="real reruns per cell (default 10)")
    p.add_argument("--quota-reruns", type=int, default=5, help="reruns under a 90 %% CPU quota (default 5)")
    p.add_argument("--duration", type=float, default=0.5, help="seconds each agent run measures (default 0.5)")
    p.add_argument("--repeats", type=int, default=3,
                   help="agent processes per cell and night, interleaved across the cells (a nightly run's "
                        "`repeats:`, as `make nightly` runs them; default 3)")
    p.add_argument("--samples", type=Path, default=None, help="analyse saved samples again, measuring nothing")
    p.add_argument("--out", type=Path, default=Path("reports/bench"))
    args = p.parse_args(argv)
    import tempfile
    from harness.bench.models import BENCH_DIR
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="nightly-", dir=BENCH_DIR))
    try:
        nightly_calibration(BENCH_DIR / "models", work, args.reruns, args.quota_reruns, args.duration, args.out,
                            samples=args.samples, repeats=args.repeats)
    finally:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    print((args.out / "nightly.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

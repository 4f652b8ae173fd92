"""`harness history`: a metric over time, recorded runs, and regressions against a baseline."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple


def register(subparsers) -> None:
    from harness.commands.arguments import number
    from harness.history.tables import DEFAULT_DB_PATH, HISTORY_ENV
    from harness.schema.rundir import REPORTS_DIR
    p = subparsers.add_parser(
        "history", help="show a metric over time, record a run, or list regressions against a baseline",
        description="Runs are appended to a local SQLite store (default .harness/history.sqlite) at the end of "
                    "every profile run. With --model and --target, show a metric over time; with --record, "
                    "append a run; with --compare, list the regressions of a run against its baseline (the last "
                    "run that passed the gate, or --baseline). Without any of these, list the recorded runs.",
        epilog="example: harness history --model digits_cnn --target local --metric latency_p99_ms")
    p.add_argument("--model", help="model name")
    p.add_argument("--target", help="target name")
    p.add_argument("--metric", default="latency_p99_ms",
                   help="a numeric results column (default latency_p99_ms), e.g. accuracy, peak_rss_bytes")
    p.add_argument("--variant", help="only this variant")
    p.add_argument("--format", dest="fmt", help="only this format")
    p.add_argument("--changes", action="store_true",
                   help="list the change points of every series (model, variant, format, runtime configuration, "
                        "target, figure): the run where each happened, the shift with its 95%% CI, the runs before "
                        "and after (binary segmentation with a t test); --model/--target narrow it")
    p.add_argument("--trends", action="store_true",
                   help="write the trend page, <reports-dir>/history/index.html: one small plot per series with its "
                        "change points and noise band (also written after every run)")
    p.add_argument("--figure", action="append", choices=("median", "mean", "p90", "peak_memory", "primary", "energy"),
                   help="with --changes: only this figure (repeatable; default all)")
    p.add_argument("--record", metavar="RUN", help="append a run (id or 'latest') to the store")
    p.add_argument("--compare", metavar="RUN", help="list regressions of a run (id or 'latest') against a baseline")
    p.add_argument("--baseline", metavar="RUN_ID", help="baseline for --compare (default: last passing run)")
    p.add_argument("--min-effect", type=number(0), default=0.05,
                   help="smallest latency slowdown reported as a regression (default 0.05 = 5 %%)")
    p.add_argument("--min-shift-ms", type=number(0), default=0.0,
                   help="optional absolute floor: smaller latency shifts are never regressions (default 0: none; "
                        "each change is judged against the cell's own measured noise)")
    p.add_argument("--history", "--db", dest="db", default=None, metavar="PATH|postgresql://...",
                   help=f"history store: a SQLite file or a PostgreSQL URL (default ${HISTORY_ENV}, else "
                        f"{DEFAULT_DB_PATH})")
    p.add_argument("--reports-dir", type=Path, default=REPORTS_DIR, help="where runs are (default reports/)")
    p.set_defaults(func=cmd_history)


def _show_runs(store) -> int:
    runs = store.runs()
    if not runs:
        print(f"no runs recorded in {store.where}; `harness profile` records each run")
        return 0
    print(f"{'run':<32} {'started':<22} {'cells':>5} {'ok':>4} {'failed':>6}  gate")
    for r in runs:
        gate = r.gate_status.replace("_", " ") if r.gate_status else \
            {None: "-", True: "passed", False: "failed"}[r.gate_passed]
        print(f"{r.run_id:<32} {r.started_at:<22} {r.n_cells:>5} {r.n_ok:>4} {r.n_failed:>6}  {gate}")
    return 0


def _show_series(store, args) -> int:
    from harness.core.errors import ConfigError
    if not (args.model and args.target):
        raise ConfigError("--model/--target", "they go together: name both to show a series")
    points = store.series(args.model, args.target, args.metric, variant=args.variant, fmt=args.fmt)
    if not points:
        print(f"no recorded cells of model {args.model!r} on target {args.target!r} in {store.where}")
        return 0
    # one series per runtime configuration: 1 and 4 threads, or two execution providers, are different series
    series: Dict[Tuple[str, str, str], List] = {}
    for p in points:
        series.setdefault((p.variant, p.format, p.runtime_config), []).append(p)
    for (variant, fmt, config), pts in sorted(series.items()):
        print(f"{args.model} / {variant} / {fmt}{f' [{config}]' if config else ''} on {args.target}: {args.metric}")
        first = next((p.value for p in pts if p.value is not None), None)
        for p in pts:
            value = "" if p.value is None else f"{p.value:.6g}"
            change = f"{p.value / first - 1.0:+.1%}" if p.value is not None and first else ""
            gate = {None: "", True: "gate passed", False: "gate failed"}[p.gate_passed]
            print(f"  {p.started_at:<22} {p.run_id:<32} {value:>12} {change:>8}  {p.status:<12} {gate}")
    return 0


def _compare(store, args) -> int:
    from harness.judge.regression import compare_runs, history_key as history_key_of
    from harness.schema.run_results import RunResults
    from harness.schema.rundir import resolve_run
    results = RunResults.load(resolve_run(args.compare, args.reports_dir))
    rows = results.rows
    if args.baseline:
        baseline = store.find_baseline(results.run_id, args.baseline)
        base_rows, base_samples = store.rows(baseline), store.samples(baseline)
    else:
        # each cell key's newest passing measurement, wherever it was recorded
        found = store.cell_baselines(results.run_id, rows)
        base_rows = [{**b.row, "cell_id": f"{b.run_id}::{b.row.get('cell_id')}"} for b in found.values()]
        base_samples = {f"{b.run_id}::{b.row.get('cell_id')}": b.samples for b in found.values()}
        runs = sorted({b.run_id for b in found.values()})
        baseline = runs[0] if len(runs) == 1 else f"per cell: runs {', '.join(runs)}" if runs else None
        first = [str(r.get("cell_id")) for r in rows if r.get("status") == "ok" and tuple(history_key_of(r)) not in found]
        for cell in first:
            print(f"  NO BASELINE {cell}: no baseline yet: first run of this cell")
    if baseline is None:
        print(f"no baseline for {results.run_id}: no earlier passing measurement of its cells in {store.where}")
        return 0
    changes = compare_runs(rows, base_rows, results.latency_samples(), base_samples,
                           min_effect=args.min_effect, min_shift_ms=args.min_shift_ms,
                           history=store.run_spreads(rows, results.run_id),
                           figure_history={f: store.run_spreads(rows, results.run_id, figure=f)
                                           for f in ("mean", "p90")})
    from harness.judge.regression import regressions
    found = regressions(changes)
    print(f"{results.run_id} against baseline {baseline}: {len(changes)} comparisons, {len(found)} regression(s)")
    for c in found:
        print(f"  REGRESSION {c.metric:<8} {c.cell_id}: {c.detail}")
    # each cell whose latency regressed: its whole distribution tested, and how each part of it moved
    from harness.judge.shift import distribution_p, shift_function
    current_samples = results.latency_samples()
    by_key = {tuple(history_key_of(r)): str(r.get("cell_id")) for r in base_rows}
    row_of = {str(r.get("cell_id")): r for r in rows}
    for cell in sorted({c.cell_id for c in found if c.metric.startswith("latency")}):
        base_id = by_key.get(tuple(history_key_of(row_of[cell]))) if cell in row_of else None
        if base_id is None:
            continue
        function = shift_function(base_samples.get(base_id), current_samples.get(cell))
        if function is not None:
            p = distribution_p(base_samples.get(base_id), current_samples.get(cell))
            print(f"  SHIFT {cell}: {function.short()} (Mann-Whitney/Kolmogorov-Smirnov p={p:.2g}); "
                  f"{function.describe()}")
    return 1 if found else 0


def _show_changes(store, args) -> int:
    from harness.judge.trends import (DEFAULT_THRESHOLDS, LATENCY_TREND_FIGURES, TREND_FIGURES, build_trends,
                                      describe_detectability, device_shifts, find_change_points, judgeable_counts,
                                      series_label, trend_detectability)
    figures = tuple(args.figure or TREND_FIGURES)
    trends = [find_change_points(t) for t in build_trends(store.trend_figure_cells(args.model, args.target), figures)]
    if args.variant or args.fmt:
        trends = [t for t in trends if (not args.variant or t.key[1] == args.variant)
                  and (not args.fmt or t.key[2] == args.fmt)]
    found = [c for t in trends for c in t.change_points]
    print(f"{len(trends)} series in {store.where}, {len(found)} change point(s), "
          f"{sum(c.regression for c in found)} regression(s)")
    for trend in trends:
        if not trend.change_points:
            continue
        left_out = len(trend.points) - len(trend.used)
        print(f"{trend.label} ({len(trend.used)} runs{f', {left_out} noisy or not judged left out' if left_out else ''})")
        for change in trend.change_points:
            print(f"  {change.describe()}")
    # one device change, not N model regressions: most series of a device moved at the same run
    for shift in device_shifts(trends):
        print(shift.describe())
    # what each series can judge: the smallest shift the nightly rule finds within 3 nights, from its own spread
    detectability: Dict[Tuple[str, ...], Dict[str, Optional[float]]] = {}
    for trend in trends:
        if trend.figure in LATENCY_TREND_FIGURES:
            detectability.setdefault(trend.key, {})[trend.figure] = trend_detectability(trend)
    for key, by_figure in sorted(detectability.items()):
        print(f"{series_label(key, 'latency').rsplit(':', 1)[0]}: {describe_detectability(by_figure)}")
    counts = judgeable_counts(detectability, DEFAULT_THRESHOLDS)
    if counts:
        print("series each figure can judge at its threshold (" +
              ", ".join(f"{f} {DEFAULT_THRESHOLDS[f]:.0%}" for f in counts) + "): " +
              ", ".join(f"{f} {ok} of {known}" for f, (ok, known) in counts.items()) +
              "; the others: not judged at this threshold, a reason, not a false alarm")
    return 0


def cmd_history(args) -> int:
    from harness.history.store import History, record_run
    from harness.schema.run_results import RunResults
    from harness.schema.rundir import resolve_run
    store = History(args.db)
    if args.record:
        info = record_run(RunResults.load(resolve_run(args.record, args.reports_dir)), args.db)
        print(f"recorded {info.run_id}: {info.n_cells} cells ({info.n_ok} ok, {info.n_failed} failed) in {store.where}")
        return 0
    if args.compare:
        return _compare(store, args)
    if args.changes:
        return _show_changes(store, args)
    if args.trends:
        from harness.report.trends_page import write_trend_page
        print(f"trends: {write_trend_page(store, args.reports_dir)}")
        return 0
    if args.model or args.target:
        return _show_series(store, args)
    return _show_runs(store)

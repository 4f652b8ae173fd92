"""`harness gate`: check a run against a release policy; exit 0 (pass), 1 (fail) or 2 (could not judge)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple


def register(subparsers) -> None:
    from harness.history.tables import DEFAULT_DB_PATH, HISTORY_ENV
    from harness.schema.rundir import REPORTS_DIR
    from harness.schema.targets import TARGETS_DIR
    p = subparsers.add_parser(
        "gate", help="check a run against a release policy (exit 0 pass, 1 fail, 2 not judged) and write JUnit XML",
        description="Check a run against a YAML policy: per target minimum accuracy retention, maximum p99 "
                    "latency and memory, maximum regression against a baseline run (latency judged on the "
                    "per-iteration samples), required formats. Prints each violation, writes JUnit XML, and "
                    "records the verdict in the history store so the next run can use this one as its baseline.",
        epilog="example: harness gate --policy policies/default.yaml --run latest")
    p.add_argument("--policy", type=Path, required=True, help="policy YAML file (see policies/default.yaml)")
    p.add_argument("--run", default="latest", help="run id under the reports directory, or 'latest' (default)")
    p.add_argument("--baseline", metavar="RUN_ID",
                   help="compare with this run (default: the policy's baseline, normally the last passing run)")
    p.add_argument("--junit", type=Path, help="JUnit XML path (default reports/<run-id>/gate.junit.xml)")
    p.add_argument("--history", "--db", dest="db", default=None, metavar="PATH|postgresql://...",
                   help=f"history store: a SQLite file or a PostgreSQL URL (default ${HISTORY_ENV}, else "
                        f"{DEFAULT_DB_PATH})")
    p.add_argument("--no-record", action="store_true", help="do not record the run and its verdict in the history")
    p.add_argument("--reports-dir", type=Path, default=REPORTS_DIR, help="where runs are (default reports/)")
    p.add_argument("--targets-dir", type=Path, default=TARGETS_DIR, help="target YAML files (default targets/)")
    p.set_defaults(func=cmd_gate)


def load_baseline(store, run_id: str, named: Optional[str], reports_dir: Path
                  ) -> Tuple[Optional[str], Optional[List[Dict[str, Any]]], Dict[str, Any]]:
    """(baseline id, its rows, its samples): from the history store, or a run directory for a named run."""
    from harness.core.errors import HarnessError
    from harness.schema.run_results import RunResults
    from harness.schema.rundir import resolve_run
    try:
        baseline = store.find_baseline(run_id, named)
    except HarnessError:
        if not named or not (Path(reports_dir) / named).is_dir():
            raise
        named_run = RunResults.load(resolve_run(named, reports_dir))  # named but never recorded: its directory
        return named, named_run.rows, named_run.latency_samples()
    if baseline is None:
        return None, None, {}
    return baseline, store.rows(baseline), store.samples(baseline)


def cmd_gate(args) -> int:
    from harness.history.store import History, record_run
    from harness.history.tables import gate_status_of
    from harness.judge.gate import LAST_PASSING, GateInputs, evaluate, load_policy, write_junit
    from harness.report import run_budgets, run_int8_findings, write_summary
    from harness.report.crossarch import emulated_targets
    from harness.schema.pairing import split_rows
    from harness.schema.run_results import RunResults
    from harness.schema.rundir import resolve_run
    policy = load_policy(args.policy)
    results = RunResults.load(resolve_run(args.run, args.reports_dir))  # the run, read once
    frame, pairs, targets = results.frame, results.pairs, results.targets
    budgets, budget_notes = run_budgets(results, None, args.targets_dir)
    store = History(args.db)
    samples = results.latency_samples()
    rows = results.rows
    named, cell_baselines = None, None
    if pairs:
        # A paired run carries its own baseline, measured interleaved with the candidate: no other run is
        # compared, and no history spread is needed, because the drift between runs never enters.
        _, baseline_rows = split_rows(rows, pairs)
        frame = frame[~frame["model"].astype(str).isin(pairs)]
        baseline_id, baseline_samples = f"{results.run_id} (paired: {', '.join(sorted(pairs))} in the same run)", \
            samples
        if args.baseline:
            print(f"  note: --baseline {args.baseline} ignored: the run is paired and carries its own baseline")
    else:
        named = args.baseline or (policy.baseline if policy.baseline != LAST_PASSING else None)
        if named:
            baseline_id, baseline_rows, baseline_samples = load_baseline(store, results.run_id, named,
                                                                         args.reports_dir)
        else:
            # last-passing: each cell key's own newest passing measurement, wherever it was recorded (a farm
            # that gates each model in its own job makes the newest passing run another model's)
            baseline_id, baseline_rows, baseline_samples = None, None, {}
            cell_baselines = store.cell_baselines(results.run_id, rows)
    history_cells = None
    if not pairs and any(policy.for_target(t).nightly_window_runs for t in targets):
        # the nightly rule reads every earlier run's cells: its series and their change points
        current = store.run(results.run_id)
        history_cells = [c for c in store.trend_cells() if c["run_id"] != results.run_id
                         and (current is None or c["seq"] < current.seq)]
    inputs = GateInputs(
        budgets=budgets, run_id=results.run_id, samples=samples, baseline_rows=baseline_rows,
        baseline_samples=baseline_samples or {}, baseline_id=baseline_id,
        history={} if pairs else store.run_spreads(rows, results.run_id),
        figure_history={} if pairs else {f: store.run_spreads(rows, results.run_id, figure=f) for f in ("mean", "p90")},
        history_cells=history_cells, emulated=emulated_targets(targets, results.manifest, None, args.targets_dir),
        paired=bool(pairs), cell_baselines=cell_baselines)
    result = evaluate(policy, frame, inputs)
    for line in result.lines():
        print(line)
    for note in budget_notes:
        print(f"  note: {note}")
    int8_findings = run_int8_findings(results)  # made once: the notes here, and summary.md below
    for finding in int8_findings:
        print(f"  note: {finding.text}")  # why a quantized cell is not faster: not a verdict, what to try next
    junit = write_junit(result, args.junit or results.root / "gate.junit.xml")
    print(f"junit: {junit}")
    try:  # the CI job summary: verdict first, regressions with their intervals, failures by device
        print(f"summary: {write_summary(results, result, args.targets_dir, int8_findings)}")
    except Exception as exc:  # derived data: never lose the verdict over it
        print(f"  note: summary.md not rewritten ({type(exc).__name__}: {exc})")
    if not args.no_record:
        # a run that could not be judged is no baseline: its verdict stays unrecorded
        record_run(results, args.db, gate_passed=None if result.exit_code == 2 else result.passed,
                   gate_status=gate_status_of(result.passed, judged=result.exit_code != 2))
        try:  # the trend page shows the verdict (a run not judged is drawn, never used)
            from harness.report.trends_page import write_trend_page
            print(f"trends: {write_trend_page(store, args.reports_dir)}")
        except Exception as exc:  # derived data: never lose the verdict over it
            print(f"  note: trend page not rewritten ({type(exc).__name__}: {exc})")
    return result.exit_code

"""`harness report`: (re)write a run's index.html, summary.md and plots."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    from harness.schema.rundir import REPORTS_DIR
    from harness.schema.targets import TARGETS_DIR
    p = subparsers.add_parser(
        "report", help="write a run's HTML report and Markdown summary",
        description="Write reports/<run-id>/index.html (devices, results, portability scores, recommendations, "
                    "parity heat map, accuracy against p99 latency with the Pareto front, memory, failures; "
                    "works offline) and summary.md for CI logs. Budgets are the ones the run recorded in its "
                    "manifest (targets/<name>.yaml for a run made before they were recorded).")
    p.add_argument("run", nargs="?", default="latest", help="run id under the reports directory, or 'latest' "
                                                            "(default)")
    p.add_argument("--reports-dir", type=Path, default=REPORTS_DIR, help="where runs are (default reports/)")
    p.add_argument("--targets-dir", type=Path, default=TARGETS_DIR, help="target YAML files (default targets/)")
    p.add_argument("--markdown", action="store_true", help="also print summary.md to stdout")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from harness.report import SUMMARY_NAME, write_report
    from harness.schema.run_results import RunResults
    from harness.schema.rundir import resolve_run
    run = resolve_run(args.run, args.reports_dir)
    index = write_report(RunResults.load(run), None, targets_dir=args.targets_dir)
    if args.markdown:
        print((run.root / SUMMARY_NAME).read_text(encoding="utf-8"))
    print(f"report: {index}")
    return 0

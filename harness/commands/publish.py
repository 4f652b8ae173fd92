"""After a run: hand its results (read once) to the report, the history store and the trend page.

The run stage knows nothing of these; the commands that make runs (`profile`, `run --resume`, `farm run`) wire
them here. Report and history are derived data: their failure never loses the measured results, and says so.
"""
from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from typing import Optional, Sequence

from harness.core.errors import HarnessError
from harness.core.progress import SILENT, Progress
from harness.schema.run_results import RunResults
from harness.schema.targets import TargetSpec

log = logging.getLogger("harness.commands.publish")

#: what the report and the history import: loaded while the devices measure
_PUBLISH_MODULES = ("pandas", "harness.schema.results", "harness.report", "harness.report.html",
                    "harness.report.markdown", "harness.report.trends_page", "harness.history.store",
                    "matplotlib.figure", "matplotlib.backends.backend_agg")


def preload_report_libraries() -> None:
    """Import what the report and the history use in the background while the devices measure: the host is idle
    then, and these imports would otherwise add most of a second to every run after its last cell."""
    def load() -> None:
        for module in _PUBLISH_MODULES:
            try:
                importlib.import_module(module)
            except Exception:  # noqa: BLE001 - the report says itself what it cannot draw
                continue

    threading.Thread(target=load, name="preload-report", daemon=True).start()


@dataclass(frozen=True)
class Published:
    """What became of the derived outputs: '' where written, else why not."""

    report_error: str = ""
    history_error: str = ""


def publish(results: RunResults, targets: Sequence[TargetSpec] = (), history: Optional[str] = None,
            progress: Progress = SILENT) -> Published:
    """Record the run in the history store, write the report (which says when the history could not be
    recorded), and redraw the trend page."""
    from harness.history.store import History, record_run
    history_error = report_error = ""
    try:
        record_run(results, history)
    except HarnessError as exc:  # an unreachable or locked history server: the run's own tables are complete
        log.info("history not recorded: %s", exc)
        history_error = str(exc)
    except Exception as exc:
        log.exception("history failed")
        history_error = f"{type(exc).__name__}: {exc}"
    if history_error:
        results.notes.append(f"History not recorded: {history_error}. This run is in its own tables but in no "
                             f"trend, baseline or change point until `harness history --record {results.run_id}`")
    try:
        from harness.report import write_report
        path = write_report(results, {t.name: t for t in targets})
        progress(f"report: {path}")
    except Exception as exc:
        log.exception("report failed")
        report_error = f"{type(exc).__name__}: {exc}"
        progress(f"report could not be written ({report_error}); results tables are complete")
    if not history_error:
        try:
            from harness.report.trends_page import write_trend_page
            progress(f"trends: {write_trend_page(History(history), results.root.parent)}")
        except Exception as exc:
            log.exception("trend page failed")
            progress(f"trend page not written ({type(exc).__name__}: {exc})")
    return Published(report_error, history_error)

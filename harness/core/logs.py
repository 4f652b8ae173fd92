"""Where log records go: one line each on the terminal (no tracebacks unless -vv), everything in the run's log.

A traceback is for whoever debugs the harness, not for the person reading a run's progress: the terminal shows
the harness's own lines, and the full record (tracebacks, third-party warnings) goes to `reports/<run>/harness.log`
while a run is made.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

RUN_LOG_NAME = "harness.log"
#: loggers of third-party chatter (the `warnings` module, TensorFlow's absl): the run's log only, not the terminal
_THIRD_PARTY = ("py.warnings", "absl", "tensorflow", "h5py", "matplotlib", "PIL", "numexpr")


class OneLine(logging.Formatter):
    """A record as one line: a traceback is reduced to its exception's type and message."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc}; details in the run's log)"
            record.args = None
        record.exc_info, record.exc_text = None, None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text = saved


_HARNESS_DIR = str(Path(__file__).resolve().parents[1])


class _NotThirdParty(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "root" and not str(record.pathname).startswith(_HARNESS_DIR):
            # a library that logs through the root logger (onnxruntime.quantization's "Please consider
            # pre-processing", "Expected bias ... to be an initializer"): the run's log only
            return False
        return not record.name.startswith(_THIRD_PARTY)


def configure_terminal(verbosity: int) -> None:
    """The terminal's handler: WARNING (-v INFO, -vv DEBUG with tracebacks and third-party lines)."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)]
    root = logging.getLogger()
    root.setLevel(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    fmt = "%(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt) if verbosity >= 2 else OneLine(fmt))
    if verbosity < 2:
        handler.addFilter(_NotThirdParty())
    root.handlers[:] = [handler]
    logging.captureWarnings(True)  # warnings become records of py.warnings: the run's log, not the terminal


def log_to_file(path: Path) -> Optional[logging.Handler]:
    """INFO and above, with tracebacks and warnings, into `path` as well; None when it cannot be opened."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        return None
    root = logging.getLogger()
    handler.setLevel(min(logging.INFO, root.level))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.setLevel(min(logging.INFO, root.level))
    logging.getLogger("paramiko").setLevel(max(logging.WARNING, root.level))  # its transport thread's chatter
    root.addHandler(handler)
    return handler

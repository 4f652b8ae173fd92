"""Progress lines on stderr for long steps, with the elapsed time of the run."""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.started = time.perf_counter()
        self._lock = threading.Lock()  # device workers report from their own threads

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.started
        with self._lock:
            self.stream.write(f"[{elapsed:6.1f}s] {message}\n")
            self.stream.flush()


SILENT = Progress(quiet=True)

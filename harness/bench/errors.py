"""The benchmark's own error."""
from __future__ import annotations

from harness.core.errors import HarnessError


class BenchError(HarnessError):
    """A benchmark step could not run or its output could not be read."""

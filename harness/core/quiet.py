"""Keep native libraries' start-up chatter off the user's terminal.

TensorFlow writes absl/oneDNN/CUDA-stub lines straight to file descriptor 2
when it is imported (TF_CPP_MIN_LOG_LEVEL does not reach them), and LiteRT
announces its XNNPACK delegate the same way. They say nothing about the run,
so they go to a temporary file, which is replayed if the wrapped code fails.
"""
from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import Iterator


@contextmanager
def native_stderr_quieted() -> Iterator[None]:
    if os.environ.get("HARNESS_NATIVE_LOGS"):  # opt out, for debugging a native library
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextmanager
def python_output_quieted(what: str) -> Iterator[None]:
    """Progress bars and prints that a library writes through sys.stdout / sys.stderr (NNCF's rich "Statistics
    collection" bar): into the run's log (`what` names the step), replayed on the terminal if the code fails."""
    if os.environ.get("HARNESS_NATIVE_LOGS"):
        yield
        return
    sink = io.StringIO()
    try:
        with redirect_stdout(sink), redirect_stderr(sink):
            yield
    except BaseException:
        sys.stderr.write(sink.getvalue())
        raise
    finally:
        text = sink.getvalue().strip()
        if text:
            logging.getLogger("harness.quiet").info("%s printed: %s", what, text)

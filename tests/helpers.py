"""Shared, session-cached builds for tests (imported by test modules; pytest puts tests/ on sys.path).

The digits reference model is trained once per test session into a private
cache, so tests use real model files without each paying for training.
"""
from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def session_cache_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="harness-test-cache-"))


@functools.lru_cache(maxsize=None)
def digits_build():
    """(prepared reference, artifacts for tflite/onnx/openvino) of the default recipe."""
    from harness.prepare.steps import build_model_artifacts
    from harness.prepare.cache import ContentCache
    from harness.schema.recipes import load_recipe

    recipe = load_recipe("digits_cnn", ROOT / "models")
    return build_model_artifacts(recipe, [], ContentCache(session_cache_dir()))


def artifact_for(fmt: str, variant: str = "reference"):
    _, artifacts = digits_build()
    return next(a for a in artifacts if a.format == fmt and a.variant == variant)


def one_clear_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """A command that refused bad input: exit 3 and one line on stderr holding every fragment, no traceback."""
    assert result.returncode == 3, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]

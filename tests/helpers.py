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


def heavier_dense_onnx(path: Path, interface, hidden=(1536, 1536, 1536, 1536)) -> Path:
    """A model of the digits interface far heavier than digits_cnn: 8x8 -> dense layers of `hidden` -> 10, as
    one ONNX file (a real slowdown under the same name, for tests of speed, energy and the gate)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    name_in, name_out = interface["inputs"][0]["name"], interface["outputs"][0]["name"]
    sizes = [64, *hidden, 10]
    inits = [numpy_helper.from_array(np.array([1, 64], dtype=np.int64), "shape")]
    nodes = [helper.make_node("Reshape", [name_in, "shape"], ["h0"])]
    for i in range(len(sizes) - 1):
        inits.append(numpy_helper.from_array((rng.standard_normal((sizes[i], sizes[i + 1])) * 0.03)
                                             .astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"w{i}"], [name_out if i == len(sizes) - 2 else f"h{i + 1}"]))
    graph = helper.make_graph(nodes, "heavier", [helper.make_tensor_value_info(name_in, TensorProto.FLOAT,
                                                                               [1, 8, 8, 1])],
                              [helper.make_tensor_value_info(name_out, TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path

"""Shared, session-cached builds for tests (imported by test modules; pytest puts tests/ on sys.path).

The digits reference model is trained once per test session into a private
cache, so tests use real model files without each paying for training.
"""
from __future__ import annotations

import functools
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Dict

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


def the_run_dir(tmp_path: Path) -> Path:
    """The one run under <tmp_path>/reports (a CLI run made with --reports-dir there)."""
    (found,) = [p for p in (tmp_path / "reports").iterdir() if (p / "manifest.json").exists()]
    return found


def rows_by_variant_format(run: Path) -> Dict[tuple, Dict]:
    """A run's results.json rows by (variant, format): one model on one target."""
    records = json.loads((run / "results.json").read_text())
    return {(r["variant"], r["format"]): r for r in (records["rows"] if isinstance(records, dict) else records)}


def heavier_dense_onnx(path: Path, interface, hidden=(1536, 1536, 1536, 1536)) -> Path:
    """A model of the digits interface far heavier than digits_cnn: 8x8 -> dense layers of `hidden` -> 10, as
    one ONNX file (a real slowdown under the same name, for tests of speed, energy and the gate)."""
    import numpy as np
    from onnx import helper, numpy_helper
    rng = np.random.default_rng(0)
    name_in, name_out = interface["inputs"][0]["name"], interface["outputs"][0]["name"]
    sizes = [64, *hidden, 10]
    inits = [numpy_helper.from_array(np.array([1, 64], dtype=np.int64), "shape")]
    nodes = [helper.make_node("Reshape", [name_in, "shape"], ["h0"])]
    for i in range(len(sizes) - 1):
        inits.append(numpy_helper.from_array((rng.standard_normal((sizes[i], sizes[i + 1])) * 0.03)
                                             .astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"w{i}"], [name_out if i == len(sizes) - 2 else f"h{i + 1}"]))
    return _save_digits_graph(path, "heavier", nodes, inits, name_in, name_out)


def deep_conv_onnx(path: Path, interface, channels=(16, 24, 32, 48), per_stage=100, side=16) -> Path:
    """A model of the digits interface with many layers to compile: 8x8 -> resized to side x side -> per stage,
    `per_stage` convolutions of 1x1, 3x3 and 5x5 (with ReLU) -> global average -> 10. Its weights are small
    (19 MB at the defaults) and its inference cheap (about 25 ms), but 400 convolutions make OpenVINO's CPU plugin
    work for a few hundred ms on every compile: a model whose compiled-model cache matters."""
    import numpy as np
    from onnx import helper, numpy_helper
    rng = np.random.default_rng(0)
    name_in, name_out = interface["inputs"][0]["name"], interface["outputs"][0]["name"]
    inits = [numpy_helper.from_array(np.array([1, 1, 8, 8], dtype=np.int64), "shape"),
             numpy_helper.from_array(np.array([1.0, 1.0, side / 8, side / 8], dtype=np.float32), "scales")]
    nodes = [helper.make_node("Reshape", [name_in, "shape"], ["r"]),
             helper.make_node("Resize", ["r", "", "scales"], ["h0"], mode="nearest")]
    c_in, k, h = 1, 0, "h0"
    for c in channels:
        for j in range(per_stage):
            size = (1, 3, 5)[j % 3]
            w = (rng.standard_normal((c, c_in, size, size)) * np.sqrt(2.0 / (c_in * size * size))).astype(np.float32)
            inits += [numpy_helper.from_array(w, f"w{k}"), numpy_helper.from_array(np.zeros(c, np.float32), f"b{k}")]
            nodes += [helper.make_node("Conv", [h, f"w{k}", f"b{k}"], [f"c{k}"], pads=[size // 2] * 4),
                      helper.make_node("Relu", [f"c{k}"], [f"a{k}"])]
            h, c_in, k = f"a{k}", c, k + 1
    inits.append(numpy_helper.from_array((rng.standard_normal((c_in, 10)) * 0.05).astype(np.float32), "fc"))
    nodes += [helper.make_node("GlobalAveragePool", [h], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("MatMul", ["f", "fc"], [name_out])]
    return _save_digits_graph(path, "deep_conv", nodes, inits, name_in, name_out)


def _save_digits_graph(path: Path, name: str, nodes, inits, name_in: str, name_out: str) -> Path:
    """An ONNX file of the digits interface (float [1, 8, 8, 1] in, [1, 10] out) from its nodes and weights."""
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info(name_in, TensorProto.FLOAT, [1, 8, 8, 1])],
                              [helper.make_tensor_value_info(name_out, TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def openvino_artifact_of(onnx_path: Path, like, variant: str):
    """The OpenVINO IR of an ONNX file of `like`'s interface (the harness's own ONNX -> OpenVINO converter), as an
    Artifact of the same model under another variant name."""
    import dataclasses
    import hashlib
    from harness.core.files import file_sha256
    from harness.prepare.converters import ConversionContext, artifact_files
    from harness.prepare.converters.onnx import onnx_to_openvino
    from harness.schema.interface import Interface
    out = Path(onnx_path).parent / variant
    out.mkdir(exist_ok=True)
    xml = onnx_to_openvino(Path(onnx_path), ConversionContext(variant, Interface.from_doc(like.interface)), out)
    files = artifact_files(xml, "openvino")
    hashes = tuple(file_sha256(p) for p in files)
    return dataclasses.replace(like, variant=variant, path=str(xml), files=tuple(str(p) for p in files),
                               file_sha256=hashes, sha256=hashlib.sha256("".join(hashes).encode()).hexdigest(),
                               size_bytes=sum(Path(p).stat().st_size for p in files))

"""Interface checks catch artifacts whose inputs/outputs differ from their source's, as data, not crashes."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from harness.prepare.steps import inspect_files
from harness.schema.interface import Interface, TensorSpec, check_interface, normalize_name
from harness.schema.recipes import load_recipe
from helpers import ROOT, artifact_for

RECIPE = load_recipe("digits_cnn", ROOT / "models")
SOURCE = Interface((TensorSpec("image", (1, 8, 8, 1), "float32"),), (TensorSpec("logits", (1, 10), "float32"),))
# What inspect_files reads of a prepared model: its recipe's name and the source's fixed interface.
PREPARED = SimpleNamespace(recipe=RECIPE, interface=SOURCE, produced_outputs=())


def linear_onnx(path: Path, input_name="image", output_name="logits", classes=10, hw=8, extra_output=False):
    """A real ONNX model (flatten + matmul) with a chosen interface."""
    weights = np.random.default_rng(0).normal(size=(hw * hw, classes)).astype(np.float32)
    nodes = [helper.make_node("Flatten", [input_name], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], [output_name])]
    outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", classes])]
    if extra_output:
        nodes.append(helper.make_node("Identity", ["flat"], ["features"]))
        outputs.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", hw * hw]))
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", hw, hw, 1])], outputs,
        [helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_matching_model_has_no_problems(tmp_path):
    artifact = inspect_files(PREPARED, "reference", "onnx", linear_onnx(tmp_path / "ok.onnx"))
    assert artifact.problems == () and artifact.compatible
    assert artifact.operators == {"Flatten": 1, "MatMul": 1}


def test_a_converter_renaming_the_one_input_stays_compatible(tmp_path):
    """Converters rename tensors ('serving_default_x:0', 'StatefulPartitionedCall:0'): one input, one output
    pair up by position."""
    artifact = inspect_files(PREPARED, "reference", "onnx", linear_onnx(tmp_path / "r.onnx", input_name="pixels",
                                                                       output_name="scores"))
    assert artifact.problems == ()


@pytest.mark.parametrize("kwargs, expected", [
    ({"classes": 12}, "output logits: shape"),
    ({"hw": 7}, "input image: shape"),
    ({"extra_output": True}, "expected 1 output(s) (logits), artifact has 2"),
])
def test_mismatched_model_is_incompatible(tmp_path, kwargs, expected):
    artifact = inspect_files(PREPARED, "reference", "onnx", linear_onnx(tmp_path / "bad.onnx", **kwargs))
    assert not artifact.compatible
    assert any(expected in p for p in artifact.problems), artifact.problems


def test_file_the_runtime_rejects_is_a_problem_not_a_crash(tmp_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"\x00garbage")
    artifact = inspect_files(PREPARED, "reference", "onnx", bogus)
    assert not artifact.compatible and "cannot load with the onnx runtime" in artifact.problems[0]


def test_int8_io_allowed_only_when_variant_declares_it():
    interface = Interface((TensorSpec("image", (1, 8, 8, 1), "int8"),), (TensorSpec("logits", (1, 10), "int8"),))
    assert check_interface(SOURCE, interface) != []
    assert check_interface(SOURCE, interface, allowed_dtypes=("int8",)) == []


def test_several_inputs_pair_by_name_whatever_their_order():
    a, b = TensorSpec("a", (1, 6), "float32"), TensorSpec("b", (1, 4, 4, 1), "float32")
    out = (TensorSpec("score", (1, 3), "float32"),)
    assert check_interface(Interface((a, b), out), Interface((b, a), out)) == []
    swapped = Interface((TensorSpec("a", (1, 4, 4, 1), "float32"), TensorSpec("b", (1, 6), "float32")), out)
    assert any("input a: shape" in p for p in check_interface(Interface((a, b), out), swapped))


def test_tflite_tensor_names_are_normalized():
    assert normalize_name("serving_default_image:0") == "image"
    assert normalize_name("logits") == "logits"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "onnx", "openvino"])
def test_converted_reference_matches_recipe_interface(fmt):
    artifact = artifact_for(fmt)
    assert artifact.problems == ()
    assert artifact.interface["inputs"][0]["shape"][1:] == [8, 8, 1]
    assert artifact.operators, "each format lists its operators"


def test_inspection_is_read_once_per_content(tmp_path, monkeypatch):
    """Loading an artifact in its runtime and gzipping it happen once per content, not on every run."""
    import harness.prepare.steps as build
    from harness.prepare.cache import ContentCache

    cache = ContentCache(tmp_path / "cache")
    model = linear_onnx(tmp_path / "m.onnx", output_name="scores")
    first = inspect_files(PREPARED, "reference", "onnx", model, cache=cache)

    def must_not_run(*args):
        raise AssertionError("inspected the same content again")

    monkeypatch.setattr(build, "_read_artifact_facts", must_not_run)
    second = inspect_files(SimpleNamespace(recipe=RECIPE, interface=Interface(SOURCE.inputs, SOURCE.outputs * 2),
                                           produced_outputs=()),
                           "reference", "onnx", model, cache=cache)
    assert second.gzip_bytes == first.gzip_bytes > 0
    assert any("expected 2 output(s)" in p for p in second.problems)  # the check itself still runs every time


def test_a_cached_step_gives_what_a_fresh_one_does(tmp_path):
    """Steps read their results back from the cache entry, so a first run and a cached run see the same."""
    from harness.prepare.cache import ContentCache
    from harness.prepare.sources import SOURCES, content_sha256
    from harness.prepare.reference import describe_source

    model = linear_onnx(tmp_path / "m.onnx", extra_output=True)
    sha, cache = content_sha256(model, "onnx"), ContentCache(tmp_path / "cache")
    from_file = SOURCES.get("onnx")().describe(model)
    assert describe_source(model, "onnx", sha, cache) == from_file == describe_source(model, "onnx", sha, cache)
    uncached = inspect_files(PREPARED, "reference", "onnx", model)
    fresh = inspect_files(PREPARED, "reference", "onnx", model, cache=cache)
    again = inspect_files(PREPARED, "reference", "onnx", model, cache=cache)
    assert uncached == fresh == again and fresh.problems  # the extra output is a problem, found every time

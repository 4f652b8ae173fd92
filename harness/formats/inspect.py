"""Read an artifact's interface and operators, and check it against the recipe.

The interface is read with the same runtime classes the device agent uses,
so the host sees exactly what the device will see. An interface mismatch is
data (a list of problems) that makes the cell 'incompatible', never a crash.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..agent import agent as device_agent

_NOISE = re.compile(r"^(serving_default_)|(:\d+)$")


def normalize_name(name: str) -> str:
    """TFLite names tensors 'serving_default_image:0'; the model's own name is 'image'."""
    return _NOISE.sub("", _NOISE.sub("", name))


def _loaded_runtime(path: Path, fmt: str):
    from ..quiet import native_stderr_quieted

    runtime = device_agent.RUNTIMES[fmt](1, {})
    with native_stderr_quieted():  # LiteRT announces its XNNPACK delegate on fd 2
        runtime.load(str(path))
    return runtime


def read_interface(path: Path, fmt: str) -> Dict[str, Any]:
    return _loaded_runtime(path, fmt).interface()


def list_operators(path: Path, fmt: str) -> Dict[str, int]:
    """Operator type → count, per format."""
    if fmt == "onnx":
        import onnx
        model = onnx.load(str(path), load_external_data=False)
        return dict(Counter(node.op_type for node in model.graph.node))
    if fmt == "openvino":
        import openvino as ov
        model = ov.Core().read_model(str(path))
        skip = {"Parameter", "Result", "Constant"}
        return dict(Counter(op.get_type_name() for op in model.get_ordered_ops() if op.get_type_name() not in skip))
    if fmt == "tflite":
        runtime = _loaded_runtime(path, "tflite")
        try:
            details = runtime.interp._get_ops_details()
        except AttributeError:  # very old runtimes: no op listing
            return {}
        # DELEGATE is the XNNPACK node that took over the real ops listed beside it.
        return dict(Counter(d["op_name"] for d in details if d["op_name"] != "DELEGATE"))
    raise ValueError(f"unknown format {fmt!r}")


def _shape_ok(expected: Sequence[int], actual: Sequence[Optional[int]]) -> bool:
    if len(expected) != len(actual):
        return False
    batch_ok = actual[0] in (None, -1, 1, expected[0])
    return batch_ok and all(a in (None, -1) or a == e for e, a in zip(expected[1:], actual[1:]))


def check_interface(recipe, interface: Dict[str, Any], allowed_io_dtypes: Sequence[str] = ()) -> List[str]:
    """Problems of an artifact's interface against the recipe's input and output spec."""
    problems: List[str] = []
    dtypes = {recipe.input.dtype, *allowed_io_dtypes}
    inputs, outputs = interface.get("inputs", []), interface.get("outputs", [])
    if len(inputs) != 1:
        problems.append(f"expected 1 input, artifact has {len(inputs)}")
    if len(outputs) != 1:
        problems.append(f"expected 1 output, artifact has {len(outputs)}")
    if inputs:
        got = inputs[0]
        if normalize_name(got["name"]) != recipe.input.name:
            problems.append(f"input name {got['name']!r} != {recipe.input.name!r}")
        if not _shape_ok(recipe.input.shape, got["shape"]):
            problems.append(f"input shape {got['shape']} != {list(recipe.input.shape)}")
        if got["dtype"] not in dtypes:
            problems.append(f"input dtype {got['dtype']} not in {sorted(dtypes)}")
    if outputs:
        got = outputs[0]
        expected_shape = [recipe.input.shape[0], recipe.output.classes]
        if normalize_name(got["name"]) != recipe.output.name:
            problems.append(f"output name {got['name']!r} != {recipe.output.name!r}")
        if not _shape_ok(expected_shape, got["shape"]):
            problems.append(f"output shape {got['shape']} != {expected_shape}")
        if got["dtype"] not in dtypes | {"float32"}:
            problems.append(f"output dtype {got['dtype']} not in {sorted(dtypes)}")
    return problems

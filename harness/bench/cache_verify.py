"""What checking a cached file's sha256 before each use costs (`--only cache_verify`).

A 20 MB ONNX model (one MatMul over a 2240x2240 float32 weight) and its inputs sit in a device cache laid out as
the host makes it (<workdir>/cache/<sha256>/<file>); the agent runs the cell with and without --verify-cache,
alternating, as a separate process like every cell. The figure is the agent's own hashing time as a share of
the cell's wall time (the agent process, start to end).
"""
from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np

from harness.core.files import file_sha256
from harness.run.probe import AGENT_PATH

MODEL_SIDE = 2240  # 2240 * 2240 float32 weights: 20.1 MB


def _model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((MODEL_SIDE, MODEL_SIDE)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "big_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, MODEL_SIDE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, MODEL_SIDE])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime a device may have reads
    onnx.save(model, str(path))


def _cached(workdir: Path, source: Path) -> Path:
    """source placed in the cache as the host places it: under its own sha256."""
    entry = workdir / "cache" / file_sha256(source) / source.name
    entry.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, entry)
    return entry


def verify_cost(root: Path, log: Callable[[str], None], rounds: int = 5) -> Dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    source = root / "big_matmul.onnx"
    _model(source)
    inputs = root / "eval_inputs.npz"
    np.savez(inputs, f0=np.ones((8, 1, MODEL_SIDE), np.float32),
             __feeds__=np.array(json.dumps([{"key": "f0", "name": "x", "mode": "sample"}])))
    workdir = root / "device"
    model, feeds = _cached(workdir, source), _cached(workdir, inputs)
    walls: Dict[bool, list] = {True: [], False: []}
    verify_ms = []
    for k in range(rounds):
        for verify in (True, False) if k % 2 == 0 else (False, True):
            result = root / f"result-{k}-{int(verify)}.json"
            argv = [sys.executable, str(AGENT_PATH), "run", "--model", str(model), "--format", "onnx",
                    "--inputs", str(feeds), "--result", str(result), "--outputs", str(root / "outputs.npz"),
                    "--warmup", "2", "--iterations", "20", "--min-duration", "0.2", "--threads", "1"]
            started = time.perf_counter()
            subprocess.run(argv + (["--verify-cache"] if verify else []), check=True, capture_output=True)
            walls[verify].append((time.perf_counter() - started) * 1e3)
            if verify:
                verify_ms.append(json.loads(result.read_text())["verify_ms"])
    cell_ms = statistics.median(walls[True])
    out = {"model_bytes": source.stat().st_size, "inputs_bytes": inputs.stat().st_size, "rounds": rounds,
           "verify_ms_median": statistics.median(verify_ms), "cell_wall_ms_verified": cell_ms,
           "cell_wall_ms_unverified": statistics.median(walls[False]),
           "verify_share_of_cell": statistics.median(verify_ms) / cell_ms}
    log(f"  sha256 of a {out['model_bytes'] / 1e6:.1f} MB model + inputs: {out['verify_ms_median']:.1f} ms, "
        f"{out['verify_share_of_cell']:.1%} of the cell's {cell_ms:.0f} ms")
    return out


def markdown(doc: Dict[str, Any]) -> list:
    return ["## Cache verification (sha256 of each cached file before use)", "",
            "| model | verify (median) | cell wall, verified / not | share of the cell |", "| --- | --- | --- | --- |",
            f"| {doc['model_bytes'] / 1e6:.1f} MB ONNX + {doc['inputs_bytes'] / 1e3:.0f} kB inputs | "
            f"{doc['verify_ms_median']:.1f} ms | {doc['cell_wall_ms_verified']:.0f} / "
            f"{doc['cell_wall_ms_unverified']:.0f} ms | {doc['verify_share_of_cell']:.1%} |", ""]

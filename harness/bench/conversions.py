"""The conversion matrix as measured: real models saved in every source format they take, each profiled with
`--model-file` semantics on this machine, every target format's parity with the source run on the host.

    python -m harness.bench.conversions            # about 3-5 minutes on 2 cores
    -> reports/bench/conversions.json and conversions.md

Models: the Fashion-MNIST CNN (Keras: .h5, .keras, SavedModel, and its TFLite, ONNX and IR conversions as
files) on 500 labelled test images; an ONNX file that converts to OpenVINO only at the run's fixed input
shapes (`shape_dependent_onnx`) on 16 random samples; EfficientNet-Lite0 with its ImageNet weights (torch:
TorchScript, torch.export .pt2, ONNX) on 24 photo crops from scikit-image. Nothing is downloaded.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

OUT = Path("reports/bench")


def shape_dependent_onnx(path: Path, condition_from_data: bool = False) -> Path:
    """x [n, 2, len] → If → Conv1d, a model that converts to OpenVINO only at static input shapes.

    The If's branches have different ranks (x, or x flattened), so the rank of the Conv's input is known
    only once the branch is: OpenVINO folds the If, and converts, when its condition `n > 0` is computed from
    a fixed shape, and never when the condition is read from the `go` input (`condition_from_data`). The file
    declares its output as a scalar, as exporters that could not infer it do; it produces [n, 3, len - 2]."""
    import onnx
    from onnx import TensorProto, helper

    weights = np.random.default_rng(0).normal(size=(3, 2, 3)).astype(np.float32)
    then_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["kept"])], "then", [],
                                    [helper.make_tensor_value_info("kept", TensorProto.FLOAT, [])])
    else_branch = helper.make_graph([helper.make_node("Flatten", ["x"], ["flat"], axis=1)], "else", [],
                                    [helper.make_tensor_value_info("flat", TensorProto.FLOAT, [])])
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, "len"])]
    if condition_from_data:
        inputs.append(helper.make_tensor_value_info("go", TensorProto.BOOL, []))
        condition = [helper.make_node("Identity", ["go"], ["cond"])]
    else:
        condition = [helper.make_node("Shape", ["x"], ["shape"]),
                     helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
                     helper.make_node("Greater", ["n", "zero"], ["cond"])]
    graph = helper.make_graph(
        condition + [helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch),
                     helper.make_node("Conv", ["y", "w"], ["out"])],
        "shape_dependent", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [])],
        [helper.make_tensor("zero", TensorProto.INT64, [], [0]),
         helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def save_sources(work: Path, cache) -> List[tuple]:
    """(file, data file, task) for every source file this bench profiles, written under work/."""
    import torch

    from harness.prepare.reference import load_dataset
    from harness.prepare.steps import build_model_artifacts
    from harness.schema.recipes import load_recipe
    from harness.prepare.sources.tensorflow import load_keras_model
    from harness.zoo.efficientnet import load_efficientnet_lite0
    from harness.zoo.keras_util import import_tf

    tf, _ = import_tf()
    fashion = load_recipe("fashion_cnn")
    prepared, artifacts = build_model_artifacts(fashion, [], cache)
    model = load_keras_model(prepared.model_path)
    shutil.copy(prepared.model_path, work / "fashion.h5")
    model.save(work / "fashion.keras")
    tf.saved_model.save(model, str(work / "fashion_savedmodel"))
    for artifact in artifacts:
        for file in artifact.files:
            shutil.copy(file, work / ("fashion" + Path(file).suffix))
    data = load_dataset(fashion)
    np.savez(work / "fashion_eval.npz", image=data.x_eval[:500, None], labels=data.y_eval[:500])

    lite0 = load_recipe("efficientnet_lite0")
    photos = load_dataset(lite0).x_eval[:24, None]
    network = load_efficientnet_lite0().eval()
    example = (torch.from_numpy(photos[0]),)
    torch.jit.save(torch.jit.trace(network, example), str(work / "lite0.pt"))
    torch.export.save(torch.export.export(network, example), str(work / "lite0.pt2"))
    torch.onnx.export(network, example, str(work / "lite0.onnx"), input_names=["image"], output_names=["logits"],
                      opset_version=17, dynamo=False)
    np.savez(work / "lite0_eval.npz", image=photos)
    np.savez(work / "lite0_eval_torch.npz", inputs=photos)  # torch files name the input after forward(inputs)
    fashion_files = ["fashion.h5", "fashion.keras", "fashion_savedmodel", "fashion.tflite", "fashion.onnx",
                     "fashion.xml"]
    shape_dependent_onnx(work / "shape_dependent.onnx")
    np.savez(work / "shape_dependent_eval.npz",
             x=np.random.default_rng(0).random((16, 1, 2, 10), dtype=np.float32))  # fixes n = 1, len = 10
    return ([(work / f, work / "fashion_eval.npz", "") for f in fashion_files]
            + [(work / "shape_dependent.onnx", work / "shape_dependent_eval.npz", "")]
            + [(work / "lite0.pt", work / "lite0_eval_torch.npz", "classification"),
               (work / "lite0.pt2", work / "lite0_eval_torch.npz", "classification"),
               (work / "lite0.onnx", work / "lite0_eval.npz", "classification")])


def measure(work: Path) -> List[Dict[str, Any]]:
    from harness.prepare.cache import ContentCache
    from harness.run.pipeline import run_profile
    from harness.run.plan import RunSettings
    from harness.prepare.recipes import recipe_for_file
    from harness.schema.targets import run_target

    cache = ContentCache()
    settings = RunSettings(warmup=2, iterations=20, min_duration_s=0.2)
    rows: List[Dict[str, Any]] = []
    for path, data, task in save_sources(work, cache):
        recipe = recipe_for_file(path, data=str(data), task=task, name=path.name.replace(".", "_"))
        started = time.perf_counter()
        outcome = run_profile([recipe], [run_target("local")], {}, settings, reports_dir=work / "runs", cache=cache)
        for r in outcome.frame.to_dict(orient="records"):
            why = r["error_message"] if isinstance(r["error_message"], str) else ""
            rows.append({"source": path.name, "source_format": recipe.source.format, "format": r["format"],
                         "status": r["status"], "why": why, "accuracy": r["accuracy"],
                         "top1_agreement": r["top1_agreement"], "max_abs_diff": r["max_abs_diff"],
                         "output_snr_db": r["output_snr_db"]})
        print(f"{path.name}: {time.perf_counter() - started:.1f}s", flush=True)
    return rows


def markdown(rows: List[Dict[str, Any]]) -> str:
    def cell(r):
        if r["status"] != "ok":
            return f"{r['status']}: {r['why']}"
        return f"{r['max_abs_diff']:.2g} / {r['output_snr_db']:.0f} dB"
    lines = ["| source | format | → tflite | → onnx | → openvino |", "| --- | --- | --- | --- | --- |"]
    for source in dict.fromkeys(r["source"] for r in rows):
        by_format = {r["format"]: r for r in rows if r["source"] == source}
        fmt = next(iter(by_format.values()))["source_format"]
        lines.append(f"| {source} | {fmt} | " + " | ".join(cell(by_format[f]) if f in by_format else ""
                                                          for f in ("tflite", "onnx", "openvino")) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    import tempfile
    with tempfile.TemporaryDirectory(prefix="harness-conversions-") as tmp:
        rows = measure(Path(tmp))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "conversions.json").write_text(json.dumps(rows, indent=1, default=float))
    (OUT / "conversions.md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":  # the litert-torch conversion runs in a spawned process, which re-imports this module
    sys.exit(main())

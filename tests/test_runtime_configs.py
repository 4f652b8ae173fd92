"""Runtime configurations: schemas checked when a target loads, cells per configuration, and the agent running
each configuration on the real runtimes (ONNX Runtime providers, TFLite with and without XNNPACK, OpenVINO
precision and hints, torch on CPU), with provider_unavailable where a GPU provider or device is missing."""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness.core.errors import ConfigError
from harness.schema.results import cell_id
from harness.schema.runtime_configs import compiled_cache_key, wants_cache
from harness.schema.targets import load_target
from helpers import ROOT, artifact_for, digits_build

AGENT = ROOT / "harness" / "agent" / "agent.py"


def write_target(tmp_path, runtimes: str, name: str = "cfg") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ntransport: local\npython: ''\nworkdir: {tmp_path / 'device'}\n"
                    f"lock_timeout_s: 60\nruntimes:\n{runtimes}")
    return path


# ---------------------------------------------------------------- loading
def test_list_form_means_each_runtimes_default_configuration():
    target = load_target(str(ROOT / "targets" / "local.yaml"))
    assert target.runtimes == ("tflite", "onnx", "openvino", "torch")
    assert [(c.runtime, c.name, c.is_default) for c in target.runtime_configs] == [
        ("tflite", "tflite", True), ("onnx", "onnx", True), ("openvino", "openvino", True), ("torch", "torch", True)]


def test_named_configurations_load_with_their_options(tmp_path):
    path = write_target(tmp_path, """  onnx:
    - {name: ort-cpu}
    - {name: ort-trt, providers: [TensorrtExecutionProvider, CPUExecutionProvider],
       provider_options: {TensorrtExecutionProvider: {trt_fp16_enable: true}}, fallback: allow}
  tflite:
    - {name: xnnpack, threads: 4}
  openvino:
    - {name: ov-cpu-f32, device: CPU, precision: f32, cache: true}
  torch:
    - {name: torch-cuda, device: cuda}
""")
    target = load_target(str(path))
    assert target.runtimes == ("onnx", "tflite", "openvino", "torch")
    by_name = {c.name: c for c in target.runtime_configs}
    assert by_name["ort-cpu"].is_default and not by_name["ort-trt"].is_default
    assert by_name["ort-trt"].fallback_allowed
    assert by_name["ort-trt"].options["provider_options"] == {"TensorrtExecutionProvider": {"trt_fp16_enable": True}}
    assert wants_cache(by_name["ort-trt"]) and wants_cache(by_name["ov-cpu-f32"]) and not wants_cache(by_name["xnnpack"])
    key = compiled_cache_key("ab" * 32, by_name["ov-cpu-f32"])
    assert key != compiled_cache_key("cd" * 32, by_name["ov-cpu-f32"])  # keyed by the artifact
    assert key != compiled_cache_key("ab" * 32, replace(by_name["ov-cpu-f32"], options={"precision": "f32"}))


@pytest.mark.parametrize("runtimes, key, words", [
    ("  onnx:\n    - {name: a, provider: [CUDAExecutionProvider]}\n", "runtimes.onnx[0].provider", "unknown onnx option"),
    ("  tflite:\n    - {name: a, threads: four}\n", "runtimes.tflite[0].threads", "expected an integer"),
    ("  tflite:\n    - {name: a, use_xnnpack: 'no'}\n", "runtimes.tflite[0].use_xnnpack", "true or false"),
    ("  openvino:\n    - {name: a, hint: fastest}\n", "runtimes.openvino[0].hint", "must be one of"),
    ("  torch:\n    - {name: a, device: gpu}\n", "runtimes.torch[0].device", "cpu, cuda or cuda:N"),
    ("  onnx:\n    - {name: a, providers: [CPUExecutionProvider], provider_options: {CUDAExecutionProvider: {}}}\n",
     "runtimes.onnx[0].provider_options", "not in providers"),
    ("  onnx:\n    - {name: a}\n    - {name: b}\n", "runtimes.onnx[1]", "both the default"),
    ("  tensorrt:\n    - {name: a}\n", "runtimes.tensorrt", "unknown runtime"),
    ("  onnx:\n    - {providers: [CPUExecutionProvider]}\n", "runtimes.onnx[0].name", "required"),
    ("  - onnx\n  - onnxx\n", "runtimes[1]", "unknown runtime 'onnxx'"),
])
def test_a_bad_option_is_an_error_naming_the_file_and_key(tmp_path, runtimes, key, words):
    path = write_target(tmp_path, runtimes)
    with pytest.raises(ConfigError) as info:
        load_target(str(path))
    assert info.value.key == key and str(path) in str(info.value) and words in str(info.value)


def test_every_target_file_loads():
    for path in sorted((ROOT / "targets").rglob("*.yaml")):
        target = load_target(str(path))
        assert target.runtime_configs, path


def test_default_configurations_keep_their_cell_ids():
    from harness.run.plan import Cell, plan_cells, pick_configs
    artifact = artifact_for("onnx")
    assert Cell(artifact, "local").cell_id == cell_id("digits_cnn", "reference", "onnx", "local") \
        == "digits_cnn__reference__onnx__local"
    target = replace(load_target(str(ROOT / "targets" / "local.yaml")), runtime_configs=(), runtimes={
        "onnx": [{"name": "ort-cpu"}, {"name": "ort-cuda", "providers": ["CUDAExecutionProvider"]}]})
    ids = [c.cell_id for c in plan_cells([artifact], [target])]
    assert ids == ["digits_cnn__reference__onnx__local", "digits_cnn__reference__onnx@ort-cuda__local"]
    picked = pick_configs([target], ["ort-cuda"])
    assert [c.cell_id for c in plan_cells([artifact], picked, ["ort-cuda"])] == ["digits_cnn__reference__onnx@ort-cuda__local"]
    # a format none of the picked configurations runs has no cells (not skipped ones)
    assert plan_cells([artifact_for("tflite")], picked, ["ort-cuda"]) == []
    with pytest.raises(ConfigError, match="no target has configuration"):
        pick_configs([target], ["ort-trt"])


# ---------------------------------------------------------------- the agent on real runtimes
def agent(tmp_path, model, fmt, config=None, *extra, inputs=None, weights=None):
    result = tmp_path / f"result-{fmt}-{(config or {}).get('name', 'default')}.json"
    profile = result.with_suffix(".profile.json")
    argv = [sys.executable, str(AGENT), "run", "--model", str(model), "--format", fmt,
            "--inputs", str(inputs or digits_build()[0].eval_inputs_path), "--result", str(result),
            "--warmup", "1", "--iterations", "5", "--min-duration", "0", "--profile", str(profile),
            "--profile-runs", "3", *extra]
    if config:
        argv += ["--runtime-config", json.dumps(config)]
    if weights:
        argv += ["--weights", str(weights)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    doc = json.loads(result.read_text())
    return proc, doc, (json.loads(profile.read_text()) if profile.exists() else None)


@pytest.mark.slow
def test_a_missing_gpu_provider_fails_the_cell_in_onnxruntimes_words(tmp_path):
    model = artifact_for("onnx").files[0]
    config = {"name": "ort-cuda", "options": {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}}
    proc, doc, _ = agent(tmp_path, model, "onnx", config)
    assert proc.returncode != 0 and doc["status"] == "error"
    assert doc["error_category"] == "provider_unavailable"
    assert "CUDAExecutionProvider" in doc["error_message"] and "not in available provider names" in doc["error_message"]
    # fallback: allow runs on what is there and says so
    config["options"]["fallback"] = "allow"
    proc, doc, profile = agent(tmp_path, model, "onnx", config)
    assert doc["status"] == "ok", doc.get("error_message")
    assert doc["effective_config"]["providers"] == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider" in doc["fallback"]
    assert profile["placement"] == {"CPUExecutionProvider": profile["nodes"]} and profile["nodes"] >= 5
    assert all(layer["time_ms"] >= 0 for layer in profile["layers"])


@pytest.mark.slow
def test_session_options_take_effect(tmp_path):
    config = {"name": "ort-basic", "options": {"graph_optimization_level": "disable", "intra_op_threads": 2}}
    _, doc, profile = agent(tmp_path, artifact_for("onnx").files[0], "onnx", config)
    assert doc["status"] == "ok"
    assert doc["effective_config"]["graph_optimization_level"] == "disable"
    assert doc["effective_config"]["intra_op_threads"] == 2
    _, default, default_profile = agent(tmp_path, artifact_for("onnx").files[0], "onnx")
    # no optimisation keeps every node of the file; the default level fuses some
    assert profile["nodes"] >= default_profile["nodes"]


@pytest.mark.slow
def test_tflite_with_and_without_xnnpack(tmp_path):
    model = artifact_for("tflite").files[0]
    _, on, on_profile = agent(tmp_path, model, "tflite", {"name": "xnnpack", "options": {"threads": 2}})
    _, off, off_profile = agent(tmp_path, model, "tflite", {"name": "ref", "options": {"use_xnnpack": False}})
    assert on["status"] == off["status"] == "ok"
    assert on["threads"] == 2 and on["effective_config"]["delegate"] == "XNNPACK"
    assert on_profile["placement"] == {"XNNPACK": on_profile["nodes"]}
    assert off["effective_config"]["delegate"] is None and off_profile["placement"] == {"builtin": off_profile["nodes"]}
    assert on_profile["nodes"] == off_profile["nodes"] >= 5
    _, missing, _ = agent(tmp_path, model, "tflite", {"name": "vx", "options": {"delegate": "/nonexistent/libvx.so"}})
    assert missing["error_category"] == "provider_unavailable" and "/nonexistent/libvx.so" in missing["error_message"]


@pytest.mark.slow
def test_openvino_precision_hint_device_and_cache(tmp_path):
    artifact = artifact_for("openvino")
    xml, weights = artifact.files
    _, f32, profile = agent(tmp_path, xml, "openvino", {"name": "f32", "options": {"precision": "f32"}},
                            weights=weights)
    _, thr, _ = agent(tmp_path, xml, "openvino", {"name": "thr", "options": {"hint": "throughput"}}, weights=weights)
    assert f32["effective_config"]["INFERENCE_PRECISION_HINT"] == "f32" and f32["precision"] == "f32"
    assert f32["effective_config"]["PERFORMANCE_HINT"] == "LATENCY" and thr["effective_config"]["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert profile["timed"] and all(layer["exec_type"] for layer in profile["layers"])
    assert any((layer.get("precision") or "").upper() in ("F32", "FP32") for layer in profile["layers"])
    cached = {"name": "cached", "options": {"precision": "f32", "cache": True}}
    cache = tmp_path / "compiled"
    _, cold, _ = agent(tmp_path, xml, "openvino", cached, "--cache-dir", str(cache), weights=weights)
    _, warm, _ = agent(tmp_path, xml, "openvino", cached, "--cache-dir", str(cache), weights=weights)
    assert cold["compile_cache"] == "cold" and warm["compile_cache"] == "warm"
    assert cold["load_cold_ms"] > 0 and cold["first_inference_cold_ms"] > 0
    # the cold first use, recorded beside the cache when it was filled
    assert (warm["load_cold_ms"], warm["first_inference_cold_ms"]) == \
        (cold["load_cold_ms"], cold["first_inference_cold_ms"])
    assert any(p.suffix == ".blob" for p in cache.rglob("*"))  # OpenVINO's CACHE_DIR, under the runtime version
    _, gpu, _ = agent(tmp_path, xml, "openvino", {"name": "gpu", "options": {"device": "GPU"}}, weights=weights)
    assert gpu["error_category"] == "provider_unavailable" and "GPU" in gpu["error_message"]


@pytest.mark.slow
def test_torch_runtime_on_cpu_and_cuda_unavailable(tmp_path):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)
            self.fc = torch.nn.Linear(4 * 6 * 6, 10)

        def forward(self, image):
            return self.fc(torch.relu(self.conv(image)).flatten(1))

    torch.manual_seed(0)
    net = Net().eval()
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    x = np.random.default_rng(0).random((6, 1, 1, 8, 8), dtype=np.float32)
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, f0=x, __feeds__=np.array(json.dumps([{"key": "f0", "name": "image", "mode": "sample"}])))
    outputs = tmp_path / "outputs.npz"
    proc, doc, profile = agent(tmp_path, path, "torch", {"name": "torch-cpu", "options": {"device": "cpu"}},
                               "--outputs", str(outputs), inputs=inputs)
    assert doc["status"] == "ok", doc.get("error_message")
    assert doc["runtime"] == "torch" and doc["effective_config"]["device"] == "cpu"
    with np.load(outputs) as out, torch.no_grad():
        expected = np.stack([net(torch.from_numpy(s)).numpy() for s in x])
        np.testing.assert_allclose(out["o0"], expected, rtol=1e-5, atol=1e-6)
    assert profile["timed"] and profile["placement"].get("cpu", 0) >= 1
    if not torch.cuda.is_available():
        _, cuda, _ = agent(tmp_path, path, "torch", {"name": "torch-cuda", "options": {"device": "cuda"}},
                           inputs=inputs)
        assert cuda["error_category"] == "provider_unavailable" and "CUDA is not available" in cuda["error_message"]


# ---------------------------------------------------------------- the pipeline
@pytest.mark.slow
def test_a_run_has_a_row_and_a_profile_per_configuration(tmp_path):
    from harness.report import write_report
    from harness.run.pipeline import run_profile
    from harness.run.plan import RunSettings
    from harness.schema.recipes import load_recipe
    from harness.prepare.cache import ContentCache
    from helpers import session_cache_dir

    path = write_target(tmp_path, """  onnx:
    - {name: ort-cpu}
    - {name: ort-cuda, providers: [CUDAExecutionProvider, CPUExecutionProvider]}
  tflite:
    - {name: reference-kernels, use_xnnpack: false}
  openvino:
    - {name: ov-cpu-f32, precision: f32, cache: true}
""")
    outcome = run_profile([load_recipe("digits_cnn", ROOT / "models")], [load_target(str(path))],
                          settings=RunSettings(warmup=1, iterations=5, min_duration_s=0, max_samples=40),
                          reports_dir=tmp_path / "reports", cache=ContentCache(session_cache_dir()))
    write_report(outcome)
    frame = outcome.frame.set_index("cell_id")
    assert set(frame.index) == {"digits_cnn__reference__onnx__cfg", "digits_cnn__reference__onnx@ort-cuda__cfg",
                                "digits_cnn__reference__tflite@reference-kernels__cfg",
                                "digits_cnn__reference__openvino@ov-cpu-f32__cfg"}
    cuda = frame.loc["digits_cnn__reference__onnx@ort-cuda__cfg"]
    assert cuda["status"] == "failed" and cuda["error_category"] == "provider_unavailable"
    ok = frame[frame["status"] == "ok"]
    assert len(ok) == 3 and (ok["top1_agreement"] == 1.0).all()
    assert frame.loc["digits_cnn__reference__onnx__cfg", "runtime_config"] == "ort-cpu"
    assert frame.loc["digits_cnn__reference__tflite@reference-kernels__cfg", "placement"].startswith("builtin ")
    ov = frame.loc["digits_cnn__reference__openvino@ov-cpu-f32__cfg"]
    assert ov["first_use_cold_ms"] == pytest.approx(ov["load_cold_ms"] + ov["first_inference_cold_ms"])
    assert ov["first_use_warm_ms"] == pytest.approx(ov["load_warm_ms"] + ov["first_inference_warm_ms"])
    assert ov["compile_cache"] == "cold"
    assert frame.loc["digits_cnn__reference__onnx__cfg", ["first_use_cold_ms", "first_use_warm_ms"]].isna().all()
    for cell in ok.index:
        profile = json.loads((outcome.run_dir.root / "profiles" / f"{cell}.json").read_text())
        assert profile["nodes"] > 0 and profile["layers"]
    report = (outcome.run_dir.root / "index.html").read_text()
    assert "ort-cuda" in report and "provider_unavailable" in report


@pytest.mark.slow
def test_an_openvino_cell_with_its_cache_on_reports_cold_and_warm_first_use_and_the_device_lists_the_blob(tmp_path):
    """400 convolutions (tests/helpers.py deep_conv_onnx) take OpenVINO's CPU plugin a few hundred ms to compile;
    from its cache a fresh process loads them faster. The cell's first run fills the cache (cold), its second finds
    it filled; `harness targets --cache` lists the compiled entry, its bytes counted in the device's cache."""
    from harness.run.device_job import run_target_job
    from harness.run.plan import Cell, ModelEval, RunSettings, TargetJob
    from harness.schema.rundir import RunDir
    from helpers import deep_conv_onnx, openvino_artifact_of
    like = artifact_for("openvino")
    artifact = openvino_artifact_of(deep_conv_onnx(tmp_path / "deep.onnx", like.interface), like, "deep")
    target = load_target(str(write_target(tmp_path, "  openvino:\n    - {name: ov-cached, precision: f32, cache: true}\n")))
    prepared, _ = digits_build()
    settings = RunSettings(warmup=1, iterations=5, min_duration_s=0, max_samples=5, profile=False)
    rows = []
    for run_id in ("first", "second"):
        run = RunDir.create(run_id, tmp_path / "reports")
        job = TargetJob(target, (Cell(artifact, target.name, target.runtime_configs[0]),),
                        {"digits_cnn": ModelEval.of(prepared)}, str(run.root.resolve()), settings)
        rows += run_target_job(job)
    first, second = rows
    for row in rows:
        assert row["status"] == "ok", row["error_message"]
        print(f"\n{row['run_id']}: cache {row['compile_cache']}; cold {row['first_use_cold_ms']:.1f} ms (load "
              f"{row['load_cold_ms']:.1f} + first inference {row['first_inference_cold_ms']:.1f}), warm "
              f"{row['first_use_warm_ms']:.1f} ms (load {row['load_warm_ms']:.1f} + first inference "
              f"{row['first_inference_warm_ms']:.1f}); load_ms {row['load_ms']:.1f}")
        assert row["first_use_cold_ms"] == pytest.approx(row["load_cold_ms"] + row["first_inference_cold_ms"])
        assert row["first_use_warm_ms"] == pytest.approx(row["load_warm_ms"] + row["first_inference_warm_ms"])
        assert row["first_use_warm_ms"] < row["first_use_cold_ms"], "the cache saves the compile"
    assert (first["compile_cache"], second["compile_cache"]) == ("cold", "warm")
    assert second["first_use_cold_ms"] == first["first_use_cold_ms"], "the cold first use, kept beside the cache"
    assert second["first_use_warm_ms"] != first["first_use_warm_ms"], "each run times its own warm first use"

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    listed = subprocess.run([sys.executable, "-m", "harness.cli", "targets", str(tmp_path / "cfg.yaml"), "--cache"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    line = next(ln for ln in listed.stdout.splitlines() if "compiled by openvino" in ln)
    print(line)
    assert f"from deep.xml (artifact {artifact.file_sha256[0][:12]})" in line, line
    from harness.agent.agent import cache_entries
    compiled, = [e for e in cache_entries(str(tmp_path / "device")) if e["kind"] == "compiled"]
    blobs = [p for p in Path(compiled["path"]).rglob("*.blob")]
    assert blobs and compiled["bytes"] >= sum(p.stat().st_size for p in blobs) > 1_000_000
    assert compiled["key"][:16] in line, "listed under its key, with its bytes in the cache's total"
    pruned = subprocess.run([sys.executable, "-m", "harness.cli", "targets", str(tmp_path / "cfg.yaml"), "--cache",
                             "--prune"], capture_output=True, text=True, env=env, timeout=120)
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert not Path(compiled["path"]).exists(), "evicted like any entry no run in progress needs"


# ---------------------------------------------------------------- scores, regression keys, report (pure)
def _row(config, options, target="jetson", fmt="onnx", p99=5.0, **extra):
    from harness.schema.results import make_row
    return make_row(run_id="r", cell_id=cell_id("m", "reference", fmt, target, config if options else ""),
                    model="m", variant="reference", format=fmt, target=target, runtime_config=config,
                    runtime_options=options, status="ok", accuracy=0.9, latency_p99_ms=p99,
                    peak_rss_bytes=50e6, **extra)


def test_recommendation_names_the_configuration():
    import pandas as pd
    from harness.judge.scores import recommend
    from harness.schema.targets import Budgets
    frame = pd.DataFrame([_row("ort-cpu", "", p99=30.0), _row("ort-trt", '{"providers":["TensorrtExecutionProvider"]}')])
    rec, = recommend(frame, {"jetson": Budgets(latency_p99_ms=20.0)})
    assert rec.fits and rec.choice == "reference/onnx on ort-trt"
    rec, = recommend(pd.DataFrame([_row("ort-cpu", "")]), {"jetson": Budgets(latency_p99_ms=20.0)})
    assert rec.choice == "reference/onnx"  # a runtime's default configuration reads as before


def test_two_configurations_of_one_cell_are_compared_apart():
    from harness.judge.regression import compare_runs
    trt = '{"providers":["TensorrtExecutionProvider"]}'
    base = [_row("ort-cpu", "", p99=5.0), _row("ort-trt", trt, p99=1.0)]
    now = [_row("ort-cpu", "", p99=5.0), _row("ort-trt", trt, p99=1.0, error_message=None)]
    now[1] = {**now[1], "status": "failed", "error_category": "provider_unavailable"}
    changes = compare_runs(now, base, {}, {})
    status = [c for c in changes if c.metric == "status"]
    assert [c.cell_id for c in status] == ["m__reference__onnx@ort-trt__jetson"]


def test_placement_sentences_and_diff():
    from harness.report.profiles import placement_diffs, placement_sentences, top_layers
    rows = [_row("ort-trt", '{"p":1}'), _row("ort-cuda", '{"p":2}')]
    layers_trt = [{"name": f"n{i}", "placement": "TensorrtExecutionProvider" if i >= 17 else "CPUExecutionProvider",
                   "time_ms": float(i)} for i in range(212)]
    layers_cuda = [{"name": f"n{i}", "placement": "CUDAExecutionProvider", "time_ms": 1.0} for i in range(212)]
    profiles = {rows[0]["cell_id"]: {"timed": True, "placement": {"TensorrtExecutionProvider": 195,
                                                                  "CPUExecutionProvider": 17}, "layers": layers_trt},
                rows[1]["cell_id"]: {"timed": True, "placement": {"CUDAExecutionProvider": 212}, "layers": layers_cuda}}
    sentences = placement_sentences(rows, profiles)
    assert "m/reference/onnx: 17 of 212 nodes ran on CPUExecutionProvider under ort-trt on jetson" in sentences
    assert "m/reference/onnx: all 212 nodes ran on CUDAExecutionProvider under ort-cuda on jetson" in sentences
    diff, = placement_diffs(rows, profiles)
    assert diff.n_nodes == 212 and len(diff.nodes) == 212
    assert [layer["name"] for layer in top_layers(profiles[rows[0]["cell_id"]])][:2] == ["n211", "n210"]


@pytest.mark.slow
def test_a_torchscript_model_runs_as_the_torch_format_next_to_onnx(tmp_path):
    """torch sources convert to the fourth format, which the torch runtime runs; CUDA absent: provider_unavailable."""
    torch = pytest.importorskip("torch")
    from harness.prepare.cache import ContentCache
    from harness.run.pipeline import run_profile
    from harness.run.plan import RunSettings
    from harness.prepare.recipes import recipe_for_file

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 10)).eval()
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 8, 8)), str(path))
    recipe = replace(recipe_for_file(path, shapes={"input": (1, 1, 8, 8)}, random_samples=8),
                     formats=("onnx", "torch"))
    target = write_target(tmp_path, """  onnx:
    - {name: ort-cpu}
  torch:
    - {name: torch-cpu, device: cpu}
    - {name: torch-cuda, device: cuda}
""")
    outcome = run_profile([recipe], [load_target(str(target))],
                          settings=RunSettings(warmup=1, iterations=5, min_duration_s=0),
                          reports_dir=tmp_path / "reports", cache=ContentCache(tmp_path / "cache"))
    frame = outcome.frame.set_index("runtime_config")
    assert frame.loc["torch-cpu", "status"] == "ok", frame.loc["torch-cpu", "error_message"]
    assert frame.loc["torch-cpu", "cell_id"] == "net__reference__torch@torch-cpu__cfg"
    assert frame.loc["torch-cpu", "max_abs_diff"] < 1e-5 and frame.loc["ort-cpu", "max_abs_diff"] < 1e-4
    assert frame.loc["torch-cpu", "effective_providers"] == "cpu"
    if not torch.cuda.is_available():
        assert frame.loc["torch-cuda", "error_category"] == "provider_unavailable"
        assert "CUDA is not available" in frame.loc["torch-cuda", "error_message"]


@pytest.mark.slow
def test_onnxruntime_with_openvinos_execution_provider_in_its_device_env(tmp_path):
    """The sim-intel-ovep device class's own venv (onnxruntime-openvino, never the host's onnxruntime): the
    OpenVINO execution provider takes the graph, outputs agree with ORT's CPU provider, its model cache is cold
    then warm."""
    from harness.farm.devices import EXTRA_DEVICE_CLASSES
    from harness.farm.envs import ensure_env
    from harness.farm.sim import DEFAULT_ENVS_DIR

    cls = next(c for c in EXTRA_DEVICE_CLASSES if c.name == "sim-intel-ovep")
    try:
        python = ensure_env(cls.env, ROOT / DEFAULT_ENVS_DIR)
    except Exception as exc:  # no network and no cached env: nothing to test here
        pytest.skip(f"the intel-ovep env cannot be built here: {exc}")
    model = artifact_for("onnx").files[0]
    configs = {c["name"]: c for c in cls.runtime_configs["onnx"]}
    docs = {}
    for name in ("ort-cpu", "ort-openvino", "ort-openvino"):
        options = {k: v for k, v in configs[name].items() if k != "name"}
        result, outputs = tmp_path / f"{name}.json", tmp_path / f"{name}.npz"
        argv = [python, str(AGENT), "run", "--model", str(model), "--format", "onnx",
                "--inputs", str(digits_build()[0].eval_inputs_path), "--result", str(result), "--outputs", str(outputs),
                "--warmup", "1", "--iterations", "5", "--min-duration", "0", "--max-samples", "50",
                "--cache-dir", str(tmp_path / "compiled"), "--profile", str(tmp_path / f"{name}.profile.json")]
        if options:
            argv += ["--runtime-config", json.dumps({"name": name, "options": options})]
        subprocess.run(argv, capture_output=True, text=True, timeout=300)
        doc = json.loads(result.read_text())
        assert doc["status"] == "ok", doc.get("error_message")
        docs.setdefault(name, []).append((doc, np.load(outputs)["o0"]))
    (cpu, cpu_out), = docs["ort-cpu"]
    (cold, ov_out), (warm, _) = docs["ort-openvino"]
    assert cpu["effective_config"]["providers"] == ["CPUExecutionProvider"]
    assert cold["effective_config"]["providers"][0] == "OpenVINOExecutionProvider"
    assert "OpenVINOExecutionProvider" in cold["profile"]["placement"]
    assert cold["compile_cache"] == "cold" and warm["compile_cache"] == "warm" and cold["load_cold_ms"] > 0
    assert np.abs(cpu_out - ov_out).max() < 1e-4 and (cpu_out.argmax(1) == ov_out.argmax(1)).all()


def test_a_run_recorded_before_configurations_resumes():
    """Its manifest's settings still have ov_precision (now an OpenVINO configuration's precision option)."""
    from harness.run.plan import RunSettings
    settings = RunSettings.from_manifest({"warmup": 3, "ov_precision": "f32", "runtime_configs": ["ov-f32"]})
    assert settings.warmup == 3 and settings.runtime_configs == ("ov-f32",) and settings.profile


def test_targets_pickle_with_their_configurations():
    """Device jobs go to executors (and dask workers) as pickles."""
    import pickle
    target = load_target(str(ROOT / "targets" / "examples" / "jetson.yaml"))
    again = pickle.loads(pickle.dumps(target))
    assert again.runtime_configs == target.runtime_configs and again.runtimes == target.runtimes


def test_the_probe_lists_what_configurations_can_ask_for():
    proc = subprocess.run([sys.executable, str(AGENT), "probe"], capture_output=True, text=True, timeout=120)
    runtimes = json.loads(proc.stdout)["runtimes"]
    assert "CPUExecutionProvider" in runtimes["onnx"]["accelerators"]
    assert "CPU" in runtimes["openvino"]["accelerators"]
    assert runtimes["torch"]["accelerators"][0] == "cpu"

"""The host does not need the device's runtime (issue 29): files are inspected, and a runtime source's reference
outputs computed, where the runtime is: on the host when it has it, else through the agent on a device of the run.

Real parts only: the simulated Raspberry Pi's own Python (numpy<2 + tflite-runtime), real sshd devices, a host
that lacks LiteRT (tests/hide_libraries.py in the fast tests, a venv from the wheel with only [onnx,ssh] in the
slow one), real model files."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.farm.devices import PI_ENV
from harness.farm.envs import ensure_env
from harness.judge.gate import load_policy

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "harness" / "agent" / "agent.py"
HIDE = ROOT / "tests" / "hide_libraries.py"
FARM_ENVS_DIR = ROOT / ".harness" / "farm-envs"
#: what a host without LiteRT lacks: every module the agent's TFLite runtime tries
NO_TFLITE = "ai_edge_litert,tflite_runtime,tensorflow"


def tflite_file(where: Path) -> Path:
    from real_files import keras_batch_tflite
    return Path(shutil.copy(keras_batch_tflite(), where / "model.tflite"))


def pi_python() -> str:
    """The simulated Raspberry Pi's Python: numpy<2 and tflite-runtime 2.14, nothing of the harness."""
    return ensure_env(PI_ENV, FARM_ENVS_DIR)


def agent_inspect(python: str, *argv: str) -> tuple:
    proc = subprocess.run([python, str(AGENT), "inspect", *argv], capture_output=True, text=True, timeout=120)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


# ---------------------------------------------------------------- the agent's inspect command
@pytest.mark.slow
def test_agent_inspect_reads_a_tflite_file_with_the_pis_own_runtime(tmp_path):
    model = tflite_file(tmp_path)
    code, doc, _ = agent_inspect(pi_python(), "--model", str(model), "--format", "tflite",
                                 "--shapes", json.dumps({"input_1": [2, 8, 8, 3]}))
    assert code == 0 and doc["status"] == "ok", doc
    assert (doc["runtime"], doc["runtime_version"]) == ("tflite-runtime", "2.14.0")
    (spec,) = doc["interface"]["inputs"]
    assert spec["name"] == "input_1" and spec["dtype"] == "float32" and spec["shape"][1:] == [8, 8, 3]
    assert doc["operators"] == {"CONV_2D": 1, "MEAN": 1, "FULLY_CONNECTED": 1}
    assert doc["holds_state"] is False
    from harness.agent import agent
    assert set(doc) <= agent.Doc.keys()


def test_agent_inspect_reads_an_onnx_file_and_says_what_it_cannot(tmp_path):
    from test_interface_check import linear_onnx

    model = linear_onnx(tmp_path / "m.onnx")
    code, doc, _ = agent_inspect(sys.executable, "--model", str(model), "--format", "onnx")
    assert code == 0 and doc["runtime"] == "onnxruntime"
    assert [s["name"] for s in doc["interface"]["outputs"]] == ["logits"]
    assert doc["operators"] is None  # ONNX Runtime lists no operators: the host reads them with onnx

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    code, doc, stderr = agent_inspect(sys.executable, "--model", str(broken), "--format", "onnx")
    assert code == 2 and doc["error_category"] == "load_failed" and "broken.onnx" in doc["error_message"]
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    code, doc, _ = agent_inspect(sys.executable, "--model", str(model), "--format", "onnx", "--shapes", "[1, 2]")
    assert code == 4 and doc["error_category"] == "bad_input" and "--shapes" in doc["error_message"]
    code, doc, _ = agent_inspect(sys.executable, "--model", str(tmp_path / "gone.onnx"), "--format", "onnx")
    assert code == 4 and doc["error_category"] == "bad_input" and "gone.onnx" in doc["error_message"]


# ---------------------------------------------------------------- a host without LiteRT, a Pi with tflite-runtime
def profile_without(hidden: str, project: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SSH_AUTH_SOCK", None)
    return subprocess.run([sys.executable, str(HIDE), hidden, "--", "profile", *argv], cwd=project,
                          capture_output=True, text=True, timeout=600, env=env)


def run_dir(project: Path) -> Path:
    (found,) = [p for p in (project / "reports").iterdir() if p.is_dir() and not p.is_symlink()
                and (p / "manifest.json").exists()]
    return found


def copy_targets(farm, project: Path, *names: str) -> None:
    (project / "targets").mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(farm.target_file(name), project / "targets" / f"{name}.yaml")


@pytest.mark.ssh
@pytest.mark.slow
def test_a_host_without_litert_profiles_a_tflite_file_on_the_pi(farm, tmp_path):
    project = tmp_path / "project"
    copy_targets(farm, project, "sim-pi4")
    model = tflite_file(project)
    proc = profile_without(NO_TFLITE, project, "--model-file", str(model), "-t", "sim-pi4", "--formats", "tflite",
                           "--iterations", "5", "--warmup", "1", "--min-duration", "0")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    run = run_dir(project)
    (row,) = json.loads((run / "results.json").read_text())
    assert (row["format"], row["target"], row["status"]) == ("tflite", "sim-pi4", "ok"), row
    manifest = json.loads((run / "manifest.json").read_text())
    (artifact,) = manifest["artifacts"]
    assert artifact["inspected_on"] == "sim-pi4 (tflite-runtime 2.14.0)"
    assert artifact["problems"] == [] and artifact["operators"]["CONV_2D"] == 1
    assert "reference outputs computed on sim-pi4 (tflite-runtime 2.14.0): this host has no tflite runtime" \
        in manifest["data"]["model"]


@pytest.mark.ssh
@pytest.mark.slow
def test_a_format_neither_the_host_nor_a_device_has_is_library_missing_naming_the_devices(farm, tmp_path):
    """The host converts the .tflite to ONNX but has no ONNX Runtime to read it; the Pi has only tflite: the onnx
    cell says so, naming the extra and every device checked, and the tflite cell is measured."""
    project = tmp_path / "project"
    copy_targets(farm, project, "sim-pi4")
    model = tflite_file(project)
    proc = profile_without("onnxruntime", project, "--model-file", str(model), "-t", "sim-pi4",
                           "--formats", "tflite,onnx", "--iterations", "5", "--warmup", "1", "--min-duration", "0")
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    rows = {r["format"]: r for r in json.loads((run_dir(project) / "results.json").read_text())}
    assert rows["tflite"]["status"] == "ok", rows["tflite"]
    onnx = rows["onnx"]
    assert (onnx["status"], onnx["error_category"]) == ("failed", "library_missing"), onnx
    for fragment in ("onnxruntime", "edge-harness[onnx]", "sim-pi4: does not list onnx", "this host"):
        assert fragment in onnx["error_message"], onnx["error_message"]


@pytest.mark.ssh
@pytest.mark.slow
def test_a_tflite_source_no_place_can_read_is_one_clear_line(farm, tmp_path):
    project = tmp_path / "project"
    copy_targets(farm, project, "sim-x86")
    model = tflite_file(project)
    x86 = (project / "targets" / "sim-x86.yaml")
    x86.write_text(x86.read_text().replace("runtimes: [tflite, onnx, openvino]", "runtimes: [onnx]"))
    proc = profile_without(NO_TFLITE, project, "--model-file", str(model), "-t", "sim-x86", "--formats", "tflite")
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "sim-x86: does not list tflite" in lines[0] and "edge-harness[tflite]" in lines[0]


@pytest.mark.ssh
def test_the_device_inspector_picks_the_first_device_with_the_runtime_and_pickles(farm, sim_target, tmp_path):
    import pickle

    from harness.run.device_inspection import DeviceInspector

    pi_with_onnx_only = sim_target("sim-pi4", runtimes=("onnx",), runtime_configs=())
    inspector = DeviceInspector.of([pi_with_onnx_only, sim_target("sim-jetson")])
    assert inspector.has("tflite") and inspector.where("tflite") == "sim-jetson (tflite-runtime 2.14.0)"
    facts = inspector.inspect(tflite_file(tmp_path), "tflite", {"input_1": [1, 8, 8, 3]})
    assert facts["inspected_on"] == "sim-jetson (tflite-runtime 2.14.0)" and facts["load_error"] == ""
    assert facts["interface"]["inputs"][0]["shape"] == [None, 8, 8, 3]
    assert not inspector.has("openvino")
    assert inspector.missing("openvino") == \
        "devices sim-pi4: does not list openvino, sim-jetson: does not list openvino"
    # plain data: what the dask dispatcher ships to a worker, with what the probes found
    again = pickle.loads(pickle.dumps(inspector))
    assert again.chosen == inspector.chosen and again.where("tflite") == inspector.where("tflite")
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"TFL3 but not really")
    facts = again.inspect(broken, "tflite", None)
    assert facts["load_error"].startswith("cannot load with the tflite runtime on sim-jetson:"), facts


# ---------------------------------------------------------------- formats the host only names
def test_required_formats_may_name_torch(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("defaults:\n  required_formats: [onnx, torch]\n")
    assert load_policy(path).for_target("any").required_formats == ("onnx", "torch")


# ---------------------------------------------------------------- a real host environment without LiteRT
from test_package import fresh_venv, wheel  # noqa: E402,F401 (the wheel fixture: built once per module)


@pytest.mark.ssh
@pytest.mark.slow
def test_the_onnx_and_ssh_extras_alone_profile_a_tflite_file_on_the_pi(wheel, farm, tmp_path,  # noqa: F811
                                                                     monkeypatch):
    """`pip install 'edge-harness[onnx,ssh]'` (no LiteRT, no TensorFlow) profiles a .tflite on a Raspberry Pi that
    has tflite-runtime: the interface is checked and the reference outputs computed on the Pi."""
    # a PYTHONPATH naming this checkout (and the egg-info the wheel build leaves in it) would make pip think
    # edge-harness is installed already, and the venv's harness would import this tree
    monkeypatch.delenv("PYTHONPATH", raising=False)
    harness = fresh_venv(tmp_path / "venv", wheel, "onnx,ssh")
    python = tmp_path / "venv" / "bin" / "python"
    lacks = subprocess.run([python, "-c", "import ai_edge_litert"], capture_output=True, text=True)
    assert lacks.returncode != 0, "the [onnx,ssh] host must not have LiteRT"
    project = tmp_path / "project"
    copy_targets(farm, project, "sim-pi4")
    model = tflite_file(project)
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "PYTHONPATH")}
    proc = subprocess.run([str(harness), "profile", "--model-file", str(model), "-t", "sim-pi4", "--formats", "tflite",
                           "--iterations", "5", "--warmup", "1", "--min-duration", "0"], cwd=project,
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    run = run_dir(project)
    (row,) = json.loads((run / "results.json").read_text())
    assert (row["format"], row["target"], row["status"]) == ("tflite", "sim-pi4", "ok"), row
    manifest = json.loads((run / "manifest.json").read_text())
    (artifact,) = manifest["artifacts"]
    assert artifact["inspected_on"] == "sim-pi4 (tflite-runtime 2.14.0)" and artifact["problems"] == []
    assert any(note.startswith("reference outputs computed on sim-pi4") for note in manifest["data"]["model"])

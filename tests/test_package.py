"""`pip install edge-harness[extras]` in fresh virtual environments, as a team's own CI would: the wheel is built
from this tree, installed with chosen extras only (pinned by constraints.txt), and real files are profiled end to
end with the installed `harness` command, from a directory outside this repository."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(cmd, cwd, timeout=900, env=None):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, ROOT],
               cwd=out)
    assert proc.returncode == 0, proc.stderr
    (path,) = out.glob("edge_harness-*.whl")
    return path


def fresh_venv(where: Path, wheel: Path, extras: str, first: tuple = ()) -> Path:
    venv.EnvBuilder(with_pip=True).create(where)
    python = where / "bin" / "python"
    for packages in ([list(first)] if first else []) + [[f"{wheel}[{extras}]" if extras else str(wheel)]]:
        proc = run([python, "-m", "pip", "install", "-q", *packages, "-c", ROOT / "constraints.txt"], cwd=where)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return where / "bin" / "harness"


def onnx_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
                              "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what the pinned ONNX Runtime reads
    onnx.save(model, path)
    return path


def cells(project: Path) -> list:
    (run_dir,) = [p for p in (project / "reports").iterdir() if p.is_dir() and not p.is_symlink()
                  and (p / "results.json").exists()]
    return json.loads((run_dir / "results.json").read_text())


def test_onnx_extra_alone_profiles_an_onnx_file_and_skips_the_rest(wheel, tmp_path):
    harness = fresh_venv(tmp_path / "venv", wheel, "onnx")
    project = tmp_path / "project"
    project.mkdir()
    model = onnx_model(project / "tiny.onnx")
    proc = run([harness, "profile", "--model-file", model, "--iterations", "20", "--warmup", "2",
                "--min-duration", "0"], cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    rows = cells(project)
    by_format = {r["format"]: r for r in rows}
    assert by_format["onnx"]["status"] == "ok"
    skipped = [r for r in rows if r["format"] != "onnx"]
    assert skipped and all(r["status"] == "skipped" for r in skipped)
    assert by_format["openvino"]["error_category"] == "library_missing"
    assert "edge-harness[openvino]" in by_format["openvino"]["error_message"]
    assert (project / "reports" / "latest" / "index.html").exists() or list((project / "reports").glob("*/index.html"))
    policy = project / "policy.yaml"  # the repository's default policy requires tflite, which this host cannot make
    policy.write_text("defaults:\n  max_latency_p99_ms: 1000\n")
    gate = run([harness, "gate", "--run", "latest", "--policy", str(policy)], cwd=project)
    assert gate.returncode in (0, 2), gate.stdout + gate.stderr  # judged, or nothing to compare with yet
    assert "Traceback" not in gate.stderr


def test_torch_extra_profiles_a_pt2_file_on_the_torch_runtime(wheel, tmp_path):
    harness = fresh_venv(tmp_path / "venv", wheel, "torch", first=("torch==2.13.0",))
    project = tmp_path / "project"
    project.mkdir()
    python = tmp_path / "venv" / "bin" / "python"
    script = ("import torch\n"
              "m = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU()).eval()\n"
              "ep = torch.export.export(m, (torch.zeros(1, 16),))\n"
              "torch.export.save(ep, 'tiny.pt2')\n")
    made = run([python, "-c", script], cwd=project)
    assert made.returncode == 0, made.stderr
    proc = run([harness, "profile", "--model-file", "tiny.pt2", "--formats", "torch",
                "--iterations", "20", "--warmup", "2", "--min-duration", "0"], cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = cells(project)
    assert [r["status"] for r in rows] == ["ok"] and rows[0]["format"] == "torch"


@pytest.mark.ssh
def test_onnx_and_ssh_extras_profile_on_a_simulated_device(wheel, tmp_path, farm):
    harness = fresh_venv(tmp_path / "venv", wheel, "onnx,ssh")
    project = tmp_path / "project"
    (project / "targets").mkdir(parents=True)
    target = farm.target_file("sim-x86")
    (project / "targets" / "sim-x86.yaml").write_text(Path(target).read_text())
    model = onnx_model(project / "tiny.onnx")
    proc = run([harness, "profile", "--model-file", model, "--target", "sim-x86", "--formats", "onnx",
                "--iterations", "20", "--warmup", "2", "--min-duration", "0"], cwd=project,
               env={k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = cells(project)
    assert [(r["format"], r["target"], r["status"]) for r in rows] == [("onnx", "sim-x86", "ok")]

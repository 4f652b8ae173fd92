"""Each registry imports only the plugin asked for, and a missing optional library is one clear line naming the
extra that brings it, never a traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.prepare.compress import COMPRESSORS
from harness.prepare.converters import CONVERTERS
from harness.prepare.sources import SOURCES
from harness.core.errors import LibraryMissing, UnknownNameError
from harness.core.optional import install_hint, library_missing
from harness.run.transport import TRANSPORTS
from harness.zoo import BUILDERS, DATASETS

ROOT = Path(__file__).resolve().parents[1]
HIDE = str(ROOT / "tests" / "hide_libraries.py")


@pytest.mark.parametrize("registry", [COMPRESSORS, CONVERTERS, SOURCES, TRANSPORTS, BUILDERS, DATASETS],
                         ids=lambda r: r.kind)
def test_each_registry_knows_which_module_registers_each_name(registry):
    declared = set(registry.keys())
    loaded = registry.load_all()  # every library is installed in the test environment
    assert set(loaded) == declared


def python(code: str, hidden: str = "") -> subprocess.CompletedProcess:
    prelude = f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import hide_libraries; " \
              f"hide_libraries.hide({hidden.split(',')!r}); "
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_a_local_transport_never_imports_paramiko():
    proc = python("from harness.run.transport import TRANSPORTS; TRANSPORTS.get('local'); "
                  "print('paramiko' in sys.modules)", hidden="paramiko")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_ssh_without_paramiko_names_the_extra():
    proc = python("from harness.run.transport import TRANSPORTS\n"
                  "try:\n    TRANSPORTS.get('ssh')\nexcept Exception as exc:\n"
                  "    print(type(exc).__name__, exc)", hidden="paramiko")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("LibraryMissing ")
    assert "paramiko" in proc.stdout and "edge-harness[ssh]" in proc.stdout


def test_a_converter_whose_library_is_missing_names_its_extra():
    proc = python("from harness.prepare.converters import CONVERTERS\n"
                  "print(('onnx', 'openvino') in CONVERTERS)", hidden="openvino")
    assert proc.stdout.strip() == "True"  # known by name without importing anything


def test_unknown_name_lists_the_known_ones_without_importing_plugins():
    with pytest.raises(UnknownNameError, match="known: .*ssh"):
        TRANSPORTS.get("telnet")


def test_install_hint_never_lets_pip_choose_torch():
    package, line = install_hint("torch")
    assert package == "torch" and "install torch for this host first" in line
    assert install_hint("openvino.runtime") == ("openvino", "pip install 'edge-harness[openvino]'")


def test_library_missing_from_an_import_error():
    try:
        import not_a_module_here  # noqa: F401
    except ImportError as exc:
        error = library_missing(exc, "the test")
    assert isinstance(error, LibraryMissing)
    assert "not_a_module_here" in str(error)


def test_cli_turns_an_unexpected_import_error_into_one_line(tmp_path):
    # probing an ssh target needs paramiko: on a host without it, one line naming the extra
    target = tmp_path / "targets" / "dev.yaml"
    target.parent.mkdir()
    target.write_text("name: dev\ntransport: ssh\nhost: 127.0.0.1\nport: 2\nuser: nobody\n"
                      "known_hosts: /dev/null\nworkdir: /tmp/x\n")
    proc = subprocess.run([sys.executable, HIDE, "paramiko", "--", "targets", "--probe", "dev"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "not probed: the transport ssh needs the Python package paramiko" in proc.stdout
    assert "edge-harness[ssh]" in proc.stdout


def hidden_profile(tmp_path, hidden: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, HIDE, hidden, "--", "profile", "--reports-dir", str(tmp_path / "reports"),
                           "--iterations", "5", "--warmup", "1", "--min-duration", "0", "--no-profile", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)


def tiny_onnx(path: Path) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((8, 2), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


@pytest.mark.slow
def test_a_host_without_openvino_skips_its_cells_naming_the_extra(tmp_path):
    proc = hidden_profile(tmp_path, "openvino", "--model-file", str(tiny_onnx(tmp_path / "tiny.onnx")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout + proc.stderr  # progress lines go to stderr
    assert "skipped (library_missing)" in lines and "edge-harness[openvino]" in lines


@pytest.mark.slow
def test_formats_named_by_the_user_fail_when_their_library_is_missing(tmp_path):
    proc = hidden_profile(tmp_path, "openvino", "--model-file", str(tiny_onnx(tmp_path / "tiny.onnx")),
                          "--formats", "onnx,openvino")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a cell the user asked for failed
    assert "failed (library_missing)" in proc.stderr
    assert "tiny/reference/tflite" not in proc.stdout + proc.stderr  # --formats: nothing else is converted


def test_a_zoo_data_set_without_its_library_is_one_line(tmp_path):
    proc = hidden_profile(tmp_path, "sklearn", "--model", "digits_cnn")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "scikit-learn" in proc.stderr and "edge-harness[zoo]" in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("harness:")]) == 1


def test_an_onnx_file_on_a_host_without_onnxruntime_blames_the_host_not_the_file(tmp_path):
    proc = hidden_profile(tmp_path, "onnxruntime", "--model-file", str(tiny_onnx(tmp_path / "tiny.onnx")))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "check that the file" not in proc.stderr
    assert "onnxruntime" in proc.stderr and "edge-harness[onnx]" in proc.stderr


def test_a_scheduler_without_dask_installed_is_a_missing_extra_exit_3(tmp_path):
    # naming a scheduler on a host without dask.distributed is the user's set-up (install the extra), like every
    # other missing library: exit 3 and one line, before anything is built
    proc = hidden_profile(tmp_path, "distributed", "--model-file", str(tiny_onnx(tmp_path / "tiny.onnx")),
                          "--scheduler", "tcp://127.0.0.1:9")
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "dask.distributed is not installed" in proc.stderr and "[distributed]" in proc.stderr

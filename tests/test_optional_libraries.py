"""Each registry imports only the plugin asked for, and a missing optional library is one clear line naming the
extra that brings it, never a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.build.compress import COMPRESSORS
from harness.build.converters import CONVERTERS
from harness.build.sources import SOURCES
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
    proc = python("from harness.build.converters import CONVERTERS\n"
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

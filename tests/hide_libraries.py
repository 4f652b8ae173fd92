"""Run the harness CLI as on a host that lacks some libraries: `python tests/hide_libraries.py openvino,paramiko
-- profile ...`. Importing a hidden top-level module raises ModuleNotFoundError, as it does where the package is
not installed. (A stand-in for a second environment; the wheel test in test_package.py uses real fresh venvs.)"""
from __future__ import annotations

import importlib.abc
import sys


class HiddenLibraries(importlib.abc.MetaPathFinder):
    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named '{fullname}'", name=fullname)
        return None


def hide(names) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in names:
            del sys.modules[name]
    sys.meta_path.insert(0, HiddenLibraries(names))


if __name__ == "__main__":
    hidden = [n for n in sys.argv[1].split(",") if n]
    args = sys.argv[3:] if sys.argv[2:3] == ["--"] else sys.argv[2:]
    hide(hidden)
    from harness.cli import main
    sys.exit(main(args))

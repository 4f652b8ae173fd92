"""Device Python environments for the simulated farm, built once and cached.

Each environment is a venv under `.harness/farm-envs/<name>/` made from a
base Python like the real device's (Python 3.8 for a Jetson stand-in where
one is installed) with its own pinned packages, e.g. numpy<2 and
tflite-runtime for the Raspberry Pi stand-in. A stamp file records what was
installed; a later farm-up with the same recipe reuses it without running pip.
"""
from __future__ import annotations

import fcntl
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

from harness.core.errors import HarnessError
from harness.farm.devices import DeviceEnv

log = logging.getLogger("harness.farm.envs")
STAMP = ".harness-env.json"


class FarmError(HarnessError):
    """The simulated farm could not be started or stopped."""


def _host_base_python() -> str:
    """The base interpreter of the Python running the harness (not its venv)."""
    base = getattr(sys, "_base_executable", "") or sys.executable
    return base


def _usable(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "import venv, ensurepip"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _candidates(version: str) -> List[str]:
    if not version:
        return [_host_base_python()]
    found = [f"/usr/bin/python{version}"]
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found += sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}"), reverse=True)
    which = shutil.which(f"python{version}")
    if which:
        found.append(which)
    return [p for p in found if os.path.exists(p)]


def find_base_python(env: DeviceEnv) -> str:
    for version in env.base_versions:
        for python in _candidates(version):
            if _usable(python):
                return python
    raise FarmError(f"no base Python for the {env.name!r} device environment (looked for "
                    f"{', '.join(v or 'the host Python' for v in env.base_versions)} with the venv module); "
                    f"install python3-venv (`apt-get install -y python3-venv`)")


def _recipe(env: DeviceEnv, base: str) -> dict:
    return {"name": env.name, "base_python": base, "requirements": list(env.requirements)}


def ensure_env(env: DeviceEnv, envs_dir: Path, pip_timeout_s: float = 900.0) -> str:
    """The device Python of this environment, building it if its recipe changed; returns its path."""
    with locked_env_dir(envs_dir, env.name) as directory:
        python = directory / "bin" / "python"
        stamp = _read_stamp(directory)
        if stamp is not None and python.exists() and stamp.get("requirements") == list(env.requirements) \
                and os.path.exists(stamp.get("base_python", "")):
            return str(python)
        base = find_base_python(env)
        log.warning("building the %r device environment (once): %s on %s", env.name,
                    " ".join(env.requirements), base)
        shutil.rmtree(directory, ignore_errors=True)
        _check_call([base, "-m", "venv", str(directory)], f"create the {env.name} venv", 300)
        _check_call([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                     *env.requirements], f"install {' '.join(env.requirements)} into the {env.name} venv",
                    pip_timeout_s, hint="check that the package index is reachable (`pip config list`)")
        imports = "; ".join(f"import {m}" for m in env.check_imports)
        _check_call([str(python), "-c", imports], f"import {', '.join(env.check_imports)} in the {env.name} venv",
                    120)
        (directory / STAMP).write_text(json.dumps(_recipe(env, base), indent=1))
        return str(python)


@contextmanager
def locked_env_dir(envs_dir: Path, name: str) -> Iterator[Path]:
    """The environment's directory under envs_dir, held exclusively while it is checked or built: two
    farm-ups at once (tests and `make farm-up`) must not build the same environment together."""
    envs_dir = Path(envs_dir).resolve()
    envs_dir.mkdir(parents=True, exist_ok=True)
    with open(envs_dir / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield envs_dir / name


def _read_stamp(directory: Path) -> Optional[dict]:
    try:
        return json.loads((directory / STAMP).read_text())
    except (OSError, ValueError):
        return None


def _check_call(argv: List[str], what: str, timeout_s: float, hint: str = "") -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise FarmError(f"could not {what}: no answer after {timeout_s:.0f}s. {hint}".strip()) from None
    except OSError as exc:
        raise FarmError(f"could not {what}: {exc}") from None
    if proc.returncode != 0:
        tail = "\n  ".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise FarmError(f"could not {what} (exit {proc.returncode}): {' '.join(argv)}\n  {tail}"
                        + (f"\n{hint}" if hint else ""))

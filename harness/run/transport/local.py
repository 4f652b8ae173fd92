"""The local transport: the device is this machine; commands are subprocesses."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Mapping, Optional, Sequence

from harness.core.errors import ChecksumMismatch, TransportError
from harness.run.transport import TRANSPORTS
from harness.core.files import DISK_FULL_ERRNOS, file_sha256, raise_if_disk_full
from harness.run.transport.base import CommandResult, stalled_reason, timeout_error


def session_states(sid: int) -> str:
    """The one-letter state of every process in session `sid` (the agent's: it starts a new session)."""
    states = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and fields[3] == str(sid):
            states.append(fields[0])
    return "".join(states)


@TRANSPORTS.register("local")
class LocalTransport:
    def __init__(self, target) -> None:
        self.name = target.name
        self.target = target
        self.workdir = str(Path(target.expanded(target.workdir) or ".harness/devices/local").resolve())
        # An empty `python` means the interpreter running the harness (it has the runtimes).
        self.python = target.python or sys.executable
        self.log = logging.getLogger(f"harness.run.transport.local[{self.name}]")
        Path(self.workdir).mkdir(parents=True, exist_ok=True)

    def run(self, argv: Sequence[str], timeout_s: float, env: Optional[Mapping[str, str]] = None,
            cwd: Optional[str] = None) -> CommandResult:
        argv = tuple(str(a) for a in argv)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.log.debug("run %s (timeout %.0fs)", argv, timeout_s)
        started = time.perf_counter()
        try:
            # start_new_session so that a timeout kills the agent and anything it spawned.
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=full_env, cwd=cwd or self.workdir, start_new_session=True)
        except OSError as exc:
            raise TransportError(f"[{self.name}] cannot start {argv[0]!r}: {exc}") from None
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            states = session_states(proc.pid)
            os.killpg(proc.pid, 9)
            stdout, stderr = proc.communicate()
            raise timeout_error(self.name, " ".join(argv), timeout_s, stalled_reason(states), True) from None
        # A process killed by signal N reports -N; report it as the shell would (128+N), as SSH does.
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        return CommandResult(argv, code, stdout, stderr, time.perf_counter() - started)

    def put(self, local_path: Path, remote_path: str, sha256: Optional[str] = None) -> None:
        expected = sha256 or file_sha256(Path(local_path))
        target = Path(remote_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        try:
            shutil.copyfile(local_path, tmp)
        except OSError as exc:  # the device's workdir refused the file: the same words SSH uploads use
            tmp.unlink(missing_ok=True)
            reason = "No space left on the device" if exc.errno in DISK_FULL_ERRNOS else exc.strerror
            raise TransportError(f"[{self.name}] upload of {local_path} to {remote_path} failed: {reason} "
                                 f"({exc})") from None
        actual = file_sha256(tmp)
        if actual != expected:
            tmp.unlink(missing_ok=True)
            raise ChecksumMismatch(f"[{self.name}] {target}: sha256 {actual} != expected {expected}")
        os.replace(tmp, target)

    def get(self, remote_path: str, local_path: Path) -> None:
        local_path = Path(local_path)
        tmp = local_path.with_name(f".{local_path.name}.{uuid.uuid4().hex}.part")
        try:
            local_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(remote_path, tmp)
            os.replace(tmp, local_path)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            raise TransportError(f"[{self.name}] no such file on device: {remote_path}") from None
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise_if_disk_full(exc, local_path)
            raise

    def remote_sha256(self, remote_path: str) -> str:
        try:
            return file_sha256(Path(remote_path))
        except OSError as exc:
            raise TransportError(f"[{self.name}] cannot hash {remote_path}: {exc}") from None

    def exists(self, remote_path: str) -> bool:
        return Path(remote_path).exists()

    def mkdir(self, remote_path: str) -> None:
        Path(remote_path).mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        pass

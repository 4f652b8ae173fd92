"""The Transport protocol: run a command with a timeout, put a file, get a file.

Like invoke's Local and fabric's Remote, every implementation returns the
same CommandResult, so callers never care where a command ran. Commands are
argv lists; an implementation that needs a shell string quotes every
argument itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class CommandResult:
    argv: tuple
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@runtime_checkable
class Transport(Protocol):
    name: str
    #: absolute working directory on the device (cache, agent, runs live under it)
    workdir: str

    def run(self, argv: Sequence[str], timeout_s: float, env: Optional[Mapping[str, str]] = None,
            cwd: Optional[str] = None) -> CommandResult:
        """Run argv on the device. Never raises for a non-zero exit; raises CommandTimeout."""

    def put(self, local_path: Path, remote_path: str, sha256: Optional[str] = None) -> None:
        """Upload to a temporary name, verify sha256 on the device, rename atomically."""

    def get(self, remote_path: str, local_path: Path) -> None:
        """Download a file from the device."""

    def exists(self, remote_path: str) -> bool:
        ...

    def mkdir(self, remote_path: str) -> None:
        """mkdir -p on the device."""

    def close(self) -> None:
        ...



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

from harness.core.errors import CommandTimeout


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


#: process states that mean a command made no progress through no fault of its own (ps(1) STATE CODES)
_STALLED_STATES = {"T": "stopped (state T)", "t": "stopped by a tracer (state t)",
                   "D": "in uninterruptible I/O (state D)"}


def stalled_reason(states: str) -> str:
    """Why a timed-out command's processes made no progress, from their one-letter states ('' when some ran)."""
    letters = {s for s in states if s.isalpha()}
    if not letters or letters & {"R", "S"}:
        return ""
    return ", ".join(_STALLED_STATES[s] for s in sorted(letters) if s in _STALLED_STATES)


def session_states_script(sid: str) -> str:
    """A POSIX shell snippet that prints the one-letter state of every process in session `sid` (from
    /proc/<pid>/stat: state, ppid, pgrp, session follow the command name's closing parenthesis)."""
    return ("for f in /proc/[0-9]*/stat; do read -r line < \"$f\" 2>/dev/null || continue; rest=${line##*) }; "
            "set -- $rest; [ \"$4\" = \"" + sid + "\" ] && printf %s \"$1\"; done")


def timeout_error(device: str, what: str, timeout_s: float, stalled: str, cleaned: bool) -> CommandTimeout:
    """A command past its timeout, killed: what the message says follows from why it made no progress."""
    if stalled:
        message = (f"[{device}] the command made no progress on the device: its processes were {stalled}; killed "
                   f"after its {timeout_s:.0f}s timeout" + ("" if cleaned else ", though some did not end") +
                   f": {what}")
    elif cleaned:
        message = f"[{device}] command killed after {timeout_s:.0f}s timeout: {what}"
    else:
        message = (f"[{device}] command ran past its {timeout_s:.0f}s timeout; the kill did not end all of its "
                   f"processes, which may still run on the device: {what}")
    return CommandTimeout(message, stalled, cleaned)


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

    def remote_sha256(self, remote_path: str) -> str:
        """sha256 of a file on the device, computed there."""

    def mkdir(self, remote_path: str) -> None:
        """mkdir -p on the device."""

    def close(self) -> None:
        ...



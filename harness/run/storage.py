"""The device's storage, the same over every Transport: its content cache kept within a budget, and trouble named.

The agent does the work on the device (`agent.py cache ACTION`, JSON on stdout), so one command covers what
would otherwise be many round trips, and the device lock (flock on <workdir>/device.lock) is held wherever an
entry is read in full or deleted: a cache operation never disturbs another run's measurement. A run pins the
cache keys it needs (<workdir>/pins/<run>.json) for as long as it lasts; nothing pinned, and never the agent
itself, is evicted.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from harness.core.errors import DeviceBusy, TransportError
from harness.run.transport.base import Transport

#: `agent.py ... --lock` exit code when another run holds the device lock (agent.EXIT_BUSY)
_EXIT_BUSY = 75
#: how the host names a device's storage as suspect (a second sha256 mismatch of a cached file in one run)
SUSPECT_KEY = "storage_suspect"


def _log(transport: Transport) -> logging.Logger:
    return logging.getLogger(f"harness.run.storage[{transport.name}]")


def lock_path(transport: Transport) -> str:
    return f"{transport.workdir}/device.lock"


def entry_key(device_path: str) -> str:
    """The cache key of a file in the device's cache (<workdir>/cache/<key>/<file>)."""
    return device_path.rstrip("/").rsplit("/", 2)[-2]


@dataclass(frozen=True)
class DeviceCache:
    """How to reach one device's cache: its transport, the Python and agent that manage it, the target's budget."""

    transport: Any
    python: str
    agent_path: str
    #: the target's cache_max_bytes / cache_keep_free_bytes (0: the defaults the device derived at its first probe)
    max_bytes: int = 0
    keep_free_bytes: int = 0
    #: where the budget comes from, for messages
    target_file: str = ""
    command_timeout_s: float = 300.0

    @classmethod
    def of(cls, target: Any, transport: Any, python: str, agent_path: str) -> "DeviceCache":
        return cls(transport, python, agent_path, int(getattr(target, "cache_max_bytes", 0) or 0),
                   int(getattr(target, "cache_keep_free_bytes", 0) or 0),
                   target.source_path or f"targets/{target.name}.yaml", float(target.command_timeout_s))

    def call(self, action: str, *extra: str, lock_timeout_s: Optional[float] = None,
             holder: str = "harness") -> Dict[str, Any]:
        """`agent.py cache ACTION ...` on the device; with lock_timeout_s, under the device lock (waiting at most
        that long; DeviceBusy after it)."""
        argv = [self.python, self.agent_path, "cache", action, "--workdir", self.transport.workdir,
                "--max-bytes", str(self.max_bytes), "--keep-free", str(self.keep_free_bytes), *extra]
        if lock_timeout_s is not None:
            argv += ["--lock", lock_path(self.transport), "--lock-timeout", str(lock_timeout_s), "--holder", holder]
        result = self.transport.run(argv, timeout_s=self.command_timeout_s + (lock_timeout_s or 0.0))
        try:
            document = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            document = None
        if result.exit_code == _EXIT_BUSY:
            message = (document or {}).get("error_message") or "the device is locked by another run"
            raise DeviceBusy(f"[{self.transport.name}] {message}")
        if not result.ok or not isinstance(document, dict) or document.get("status") != "ok":
            detail = (document or {}).get("error_message") or (result.stderr or result.stdout).strip()[-300:]
            raise TransportError(f"[{self.transport.name}] `agent.py cache {action}` failed on the device "
                                 f"(exit {result.exit_code}): {detail}")
        return document

    # ---------------------------------------------------------------- a run's use
    def pin(self, run_id: str, keys: Iterable[str]) -> Dict[str, Any]:
        """Keep `keys` (content digests, compiled-cache keys) while this run lasts; returns the cache's state."""
        return self.call("pin", "--run", run_id, "--keys", *sorted(set(keys)))

    def unpin(self, run_id: str) -> None:
        self.call("unpin", "--run", run_id)

    def make_room(self, need_bytes: int, lock_timeout_s: float, holder: str) -> Dict[str, Any]:
        """Evict least-recently-used entries no run needs until need_bytes fit (`fits`), or evict nothing and say
        so with the numbers (`fits` false)."""
        answer = self.call("make-room", "--need-bytes", str(int(need_bytes)), lock_timeout_s=lock_timeout_s,
                           holder=holder)
        if answer.get("evicted"):
            _log(self.transport).info("evicted %d cache entr(ies), %d bytes, to make room for %d bytes",
                                      len(answer["evicted"]), answer.get("freed_bytes", 0), need_bytes)
        return answer

    def evict(self, keys: Sequence[str], lock_timeout_s: float, holder: str) -> List[str]:
        return list(self.call("evict", "--keys", *keys, lock_timeout_s=lock_timeout_s, holder=holder)["evicted"])

    def mark_suspect(self, reason: str) -> None:
        """Record on the device that its storage corrupted files (every later probe shows it until a clean
        `harness targets --cache --verify`)."""
        self.call("suspect", "--reason", reason)

    # ---------------------------------------------------------------- harness targets --cache
    def list(self, lock_timeout_s: float) -> Dict[str, Any]:
        return self.call("list", lock_timeout_s=lock_timeout_s, holder="harness targets --cache")

    def verify(self, lock_timeout_s: float) -> Dict[str, Any]:
        return self.call("verify", lock_timeout_s=lock_timeout_s, holder="harness targets --cache --verify")

    def prune(self, older_than_days: float, lock_timeout_s: float) -> Dict[str, Any]:
        return self.call("prune", "--older-than-days", str(older_than_days), lock_timeout_s=lock_timeout_s,
                         holder="harness targets --cache --prune")


def disk_full_message(device_name: str, files: Sequence[Path], numbers: Dict[str, Any], target_file: str) -> str:
    """Why the files cannot go on the device, with the numbers, and what to do."""
    names = ", ".join(Path(f).name for f in files)
    need, limit = int(numbers.get("need_bytes", 0)), int(numbers.get("max_bytes", 0))
    origin = "cache_max_bytes" if numbers.get("max_bytes_from") == "target" else \
        "the default derived from the device's free space at its first probe"
    text = (f"[{device_name}] No space left on the device's cache for {names} ({need} bytes): the cache budget is {limit} "
            f"bytes ({origin}), it holds {numbers.get('cache_bytes')} bytes of which {numbers.get('pinned_bytes')} "
            f"are needed by runs in progress, {numbers.get('free_bytes')} bytes are free on the device and "
            f"{numbers.get('keep_free_bytes')} must stay free. ")
    if need > limit:
        text += f"The file(s) alone exceed the whole budget: raise `cache_max_bytes:` in {target_file}"
    else:
        text += (f"Raise `cache_max_bytes:` in {target_file}, free space on the device, or run fewer models at "
                 f"once (`harness targets --cache --prune` trims the cache by hand)")
    return text + ", or set `workdir:` to a larger disk"


def suspect_reason(device_name: str, files: Sequence[Dict[str, Any]], run_id: str) -> str:
    names = ", ".join(f"{Path(str(c.get('path'))).name}" for c in files) or "a cached file"
    return (f"{device_name}: {names} corrupted again after a fresh upload in run {run_id}: the device's storage "
            f"(SD card, eMMC) does not keep what is written; check it (`dmesg`, `harness targets {device_name} "
            f"--probe`) or replace it")


__all__ = ["DeviceCache", "SUSPECT_KEY", "disk_full_message", "entry_key", "suspect_reason"]

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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from harness.agent.agent import Doc, STATUS_OK
from harness.core.errors import ConnectError, DeviceBusy, TransportError
from harness.core.files import file_sha256
from harness.run import probe as device
from harness.run.cell_steps import device_run_folder
from harness.run.plan import Cell, TargetJob
from harness.run.rows import CellEnded
from harness.run.transport.base import Transport
from harness.schema.results import FAILED, Category
from harness.schema.rundir import RunDir
from harness.schema.runtime_configs import compiled_cache_key, wants_cache

log = logging.getLogger("harness.run.storage")

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
        # pins are judged by this host's clock, which cannot disagree with itself as a device's clock can
        argv = [self.python, self.agent_path, "cache", action, "--workdir", self.transport.workdir,
                "--max-bytes", str(self.max_bytes), "--keep-free", str(self.keep_free_bytes),
                "--host-now", f"{time.time():.3f}", *extra]
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
        if not result.ok or not isinstance(document, dict) or document.get(Doc.STATUS) != STATUS_OK:
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


class DeviceStorage:
    """One device job's use of the device's cache: its pin, room for each cell's files, the repair of a corrupted
    entry, and the storage marked suspect after a second mismatch."""

    def __init__(self, cache: DeviceCache, run_id: str, lock_timeout_s: float, probe: Dict[str, Any]):
        self.cache, self.run_id, self.lock_timeout_s, self.probe = cache, run_id, float(lock_timeout_s), probe
        #: the job's pin and its folder under <workdir>/runs (cell_steps.device_run_folder)
        self.job_folder = device_run_folder(run_id, cache.transport.name)
        self._digests: Dict[str, str] = {}
        self.pinned = False

    def digest_of(self, local_path: str) -> str:
        if local_path not in self._digests:
            self._digests[local_path] = file_sha256(Path(local_path))
        return self._digests[local_path]

    def pin(self, job: TargetJob, run: RunDir) -> None:
        """Every key the job's cells need, so no run evicts them while this one lasts. A device whose cache
        cannot be managed (an old agent) still runs: its cells just get no eviction."""
        keys = {entry_key(self.cache.agent_path)}
        for cell in job.cells:
            keys.update(s for s in cell.artifact.file_sha256 if s)
            if cell.artifact.sha256 and wants_cache(cell.runtime_config):
                keys.add(compiled_cache_key(cell.artifact.sha256, cell.runtime_config))
        keys.update(self.digest_of(e.eval_inputs_path) for e in job.evals.values()
                    if Path(e.eval_inputs_path).is_file())
        try:
            state = self.cache.pin(self.job_folder, keys)
        except TransportError as exc:
            log.warning("[%s] cache not pinned (%s); eviction is off for this run", self.cache.transport.name, exc)
            return
        self.pinned = True
        self.probe["cache"] = {k: state.get(k) for k in ("n_entries", "bytes", "oldest_use", "newest_use",
                                                         "free_bytes", "total_bytes", "budget")}
        run.write_device(self.cache.transport.name, self.probe)

    def unpin(self) -> None:
        if not self.pinned:
            return
        try:
            self.cache.unpin(self.job_folder)
        except TransportError as exc:  # the pin expires on its own (agent.PIN_TTL_S)
            log.warning("[%s] cache pin of run %s not removed: %s", self.cache.transport.name, self.run_id, exc)

    def make_room(self, transport, wanted: Sequence[Tuple[Path, str]], cell: Cell) -> None:
        """Room in the cache for the files of `wanted` that the device does not have yet."""
        if not self.pinned:
            return
        missing = [(p, sha) for p, sha in wanted if p.is_file() and not transport.exists(device.cache_path(
            transport, p, sha))]
        if not missing:
            return
        need = sum(p.stat().st_size for p, _ in missing)
        try:
            answer = self.cache.make_room(need, self.lock_timeout_s, f"run {self.run_id}")
        except DeviceBusy as exc:
            raise CellEnded(FAILED, Category.DEVICE_BUSY, str(exc)) from None
        except ConnectError:
            raise
        except TransportError as exc:
            log.warning("[%s] no eviction before upload: %s", transport.name, exc)
            return
        if not answer.get("fits", True):
            raise CellEnded(FAILED, Category.DEVICE_DISK_FULL,
                            disk_full_message(transport.name, [p for p, _ in missing], answer, self.cache.target_file))

    def evict_corrupted(self, document: Dict[str, Any], uploaded_inputs: Dict[str, str], cell: Cell) -> str:
        """Evict the entries whose files the agent found changed; returns the note the cell's row carries."""
        corrupted = document.get(Doc.CORRUPTED_FILES) or []
        keys = sorted({entry_key(str(c.get("path", ""))) for c in corrupted if c.get("path")})
        try:
            self.cache.evict(keys, self.lock_timeout_s, f"run {self.run_id}")
        except DeviceBusy as exc:
            raise CellEnded(FAILED, Category.DEVICE_BUSY, str(exc)) from None
        for local, remote in list(uploaded_inputs.items()):
            if entry_key(remote) in keys:
                del uploaded_inputs[local]  # sent again by the next push
        names = ", ".join(f"{Path(str(c.get('path'))).name} (sha256 {str(c.get('actual_sha256'))[:12]}, expected "
                          f"{str(c.get('expected_sha256'))[:12]})" for c in corrupted)
        log.warning("[%s] corrupted cache entries %s evicted; uploading again", self.cache.transport.name, names)
        return f"cache entry corrupted on the device: {names}; evicted, uploaded again and the cell rerun"

    def mark_suspect(self, document: Dict[str, Any], run: RunDir, device_name: str) -> None:
        reason = suspect_reason(device_name, document.get(Doc.CORRUPTED_FILES) or [], self.run_id)
        try:
            self.cache.mark_suspect(reason)
        except TransportError as exc:
            log.warning("[%s] storage not marked suspect on the device: %s", device_name, exc)
        self.probe[SUSPECT_KEY] = reason
        run.write_device(device_name, self.probe)

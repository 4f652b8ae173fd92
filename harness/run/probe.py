"""Device operations the pipeline uses, the same over every Transport.

A content-addressed cache on the device holds artifacts (models, inputs, the
agent) at `<workdir>/cache/<sha256>/<filename>`. An entry appears only by an
atomic rename after its sha256 was verified on the device, so an entry that
exists is complete and correct; an artifact already there is not sent again.
"""
from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional

from harness.core.errors import ChecksumMismatch, CommandTimeout, ConnectError, RemoteCommandFailed, TransportError
from harness.core.files import file_sha256
from harness.run.transport.base import Transport

AGENT_PATH = Path(__file__).resolve().parents[1] / "agent" / "agent.py"
#: exit code of `agent.py run --lock ...` when another run holds the device lock
AGENT_EXIT_BUSY = 75
_NOT_FOUND = 127


def _log(transport: Transport) -> logging.Logger:
    return logging.getLogger(f"harness.run.probe[{transport.name}]")


def cache_path(transport: Transport, local_path: Path, sha256: str) -> str:
    """Where an artifact with this content lives in the device's cache."""
    return f"{transport.workdir}/cache/{sha256}/{Path(local_path).name}"


def ensure_artifact(transport: Transport, local_path: Path, sha256: Optional[str] = None) -> str:
    """Make sure the device has this file in its cache; return its path on the device.

    Sends nothing when the cache already holds the content. A transfer whose
    sha256 on the device differs is discarded and sent once more; a second
    mismatch raises ChecksumMismatch.
    """
    local_path = Path(local_path)
    if not local_path.is_file():
        raise TransportError(f"[{transport.name}] cannot upload {local_path}: no such file on this machine")
    digest = sha256 or file_sha256(local_path)
    remote = cache_path(transport, local_path, digest)
    if transport.exists(remote):
        _log(transport).debug("cache hit %s", remote)
        return remote
    for attempt in (1, 2):
        try:
            transport.put(local_path, remote, digest)
            _log(transport).debug("uploaded %s -> %s", local_path, remote)
            return remote
        except ChecksumMismatch as exc:
            if attempt == 2:
                raise ChecksumMismatch(f"{exc} (twice; check the device's storage and the link, "
                                       f"then run again)") from None
            _log(transport).warning("checksum mismatch uploading %s; sending it again", local_path.name)
    raise AssertionError("unreachable")


@functools.lru_cache(maxsize=1)
def agent_sha256() -> str:
    return file_sha256(AGENT_PATH)


def ensure_agent(transport: Transport) -> str:
    """The device agent (harness/agent/agent.py) in the device's cache; returns its path there.

    Checked on every use, like every other cached file (whose checks the agent itself makes): a copy that changed
    on the device's storage would fail every cell as if the device were unreachable, so it is replaced."""
    digest = agent_sha256()
    remote = cache_path(transport, AGENT_PATH, digest)
    # one round trip on the usual path: hashing a copy that is not there fails, and that failure means "upload it"
    try:
        actual = transport.remote_sha256(remote)
    except (ConnectError, CommandTimeout):
        raise  # the device, not the copy: uploading would meet the same trouble
    except TransportError:
        return ensure_artifact(transport, AGENT_PATH, digest)
    if actual != digest:
        _log(transport).warning("the cached agent %s changed on the device (sha256 %s, expected %s): uploading it "
                                "again", remote, actual[:12], digest[:12])
        transport.put(AGENT_PATH, remote, digest)  # verified on the device, then renamed over the bad copy
    return remote


def lock_path(transport: Transport) -> str:
    """The device lock file the agent holds (flock) while it measures.

    It lives in the device's working directory, so every harness run that uses
    the same target workdir on a device serialises on it.
    """
    return f"{transport.workdir}/device.lock"


def device_python(target: Any, transport: Transport) -> str:
    """The Python that runs the agent on the device (the local transport resolves an empty one)."""
    return getattr(transport, "python", "") or target.python or "python3"


def probe(transport: Transport, python: str, timeout_s: float = 120.0, fresh: bool = False) -> Dict[str, Any]:
    """Health probe: reachable, Python, numpy, runtimes and versions, CPU, memory, disk, governor, temperature.

    Uploads the agent if needed (that time is in `probe_upload_s`) and runs
    `agent.py probe`. The runtimes section and numpy's version are reused from the device's last probe while its
    environment fingerprint is unchanged (`runtimes_reused`), and redone when it changes or with `fresh`. Raises
    RemoteCommandFailed with a hint when the device's Python is missing or the agent fails.
    """
    started = time.perf_counter()
    agent = ensure_agent(transport)
    uploaded = time.perf_counter()
    result = transport.run([python, agent, "probe", "--workdir", transport.workdir, *(["--fresh"] if fresh else [])],
                           timeout_s)
    if result.exit_code == _NOT_FOUND:
        raise RemoteCommandFailed(
            f"{python} {agent} probe", result.exit_code, result.stdout,
            result.stderr + f"\n{python!r} not found on the device: set `python:` in the target file "
                            f"to the device's Python 3 (e.g. /usr/bin/python3)", transport.name)
    if not result.ok:
        raise RemoteCommandFailed(f"{python} {agent} probe", result.exit_code, result.stdout, result.stderr,
                                  transport.name)
    try:
        info = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RemoteCommandFailed(f"{python} {agent} probe", result.exit_code, result.stdout,
                                  "the probe did not print JSON", transport.name) from None
    info["reachable"] = True
    info["target"] = transport.name
    info["workdir"] = transport.workdir
    info["agent_path"] = agent  # the caller runs this same cached copy, without asking the device again
    info["probe_upload_s"] = uploaded - started
    info["probe_command_s"] = result.duration_s
    info["probe_total_s"] = time.perf_counter() - started
    info["probed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return info


def unreachable_probe(target_name: str, error: BaseException) -> Dict[str, Any]:
    """The probe record of a device that could not be reached, for the results."""
    return {"reachable": False, "target": target_name, "error": str(error),
            "error_type": type(error).__name__, "probed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

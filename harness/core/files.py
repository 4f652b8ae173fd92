"""File helpers every stage uses: a content checksum, and writes that a crash never leaves half done."""
from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Union


def file_sha256(path: Union[str, Path], chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> Path:
    """Write through a temporary file in the same directory and rename it over `path`: readers see the old
    file or the new one, never a part (a run directory is read while cells are still being written)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise_if_disk_full(exc, path)
        raise
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise_if_disk_full(exc, path)
        raise
    return path


#: errno values of a full disk or an exhausted quota
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def raise_if_disk_full(exc: OSError, path: Union[str, Path]) -> None:
    """A full disk while writing `path` as the harness's own error, which names the path and what to do."""
    if exc.errno in DISK_FULL_ERRNOS:
        from harness.core.errors import HostDiskFull
        raise HostDiskFull(path, exc.strerror or "") from None


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))

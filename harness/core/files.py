"""File helpers every stage uses: a content checksum, and writes that a crash never leaves half done."""
from __future__ import annotations

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
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))

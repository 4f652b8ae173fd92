"""Content-addressed cache on the host: a key names a directory that is complete or absent.

Entries are built in a temporary directory and renamed into place, so an
interrupted build never leaves a half entry that a later run would trust.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

DEFAULT_CACHE_DIR = Path(".harness/cache")


def content_key(*parts: Any) -> str:
    material = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(material).hexdigest()[:20]


class ContentCache:
    def __init__(self, root: Path | None = None):
        # HARNESS_CACHE_DIR lets CI and tests keep caches apart from a user's.
        self.root = Path(root or os.environ.get("HARNESS_CACHE_DIR") or DEFAULT_CACHE_DIR)

    def entry(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def has(self, kind: str, key: str) -> bool:
        return (self.entry(kind, key) / ".complete").exists()

    @contextmanager
    def build(self, kind: str, key: str) -> Iterator[Path]:
        """Yield a scratch directory; on success it becomes the entry for key."""
        final = self.entry(kind, key)
        scratch = final.parent / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        scratch.mkdir(parents=True)
        try:
            yield scratch
            (scratch / ".complete").touch()
            if final.exists():
                shutil.rmtree(final)
            os.replace(scratch, final)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)

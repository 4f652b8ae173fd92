"""Content-addressed cache on the host: a key names a directory that is complete or absent.

Entries are built in a temporary directory and renamed into place, so an
interrupted build never leaves a half entry that a later run would trust.
Every build step goes through `ContentCache.get_or_build`: look the key up, and
on a miss fill a scratch directory that then becomes the entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Set

DEFAULT_CACHE_DIR = Path(".harness/cache")


def content_key(*parts: Any) -> str:
    material = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(material).hexdigest()[:20]


class CachedEntry(NamedTuple):
    """A complete cache entry, and whether it was there before the step asked for it."""

    path: Path
    #: True: found in the cache; False: built just now
    cached: bool

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())


class ContentCache:
    def __init__(self, root: Path | None = None):
        # HARNESS_CACHE_DIR lets CI and tests keep caches apart from a user's.
        self.root = Path(root or os.environ.get("HARNESS_CACHE_DIR") or DEFAULT_CACHE_DIR)

    @property
    def made_here(self) -> Set[Path]:
        """Entries this object built (not found): a build can tell an entry an earlier step of the same build
        made (a reference conversion a compressor needed) from one an earlier run left."""
        return self.__dict__.setdefault("_made_here", set())

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
            self.made_here.add(final)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)

    def get_or_build(self, kind: str, key: str, fill: Callable[[Path], None]) -> CachedEntry:
        """The entry for key, made by fill(scratch) if it is absent.

        fill runs only on a miss, so a step's work happens only when its entry is missing; if fill raises, no
        entry is made and the exception propagates. Goes through has() and build(), so a subclass that
        tracks or refuses builds (the dask TrackingCache) sees every step.
        """
        if self.has(kind, key):
            return CachedEntry(self.entry(kind, key), True)
        with self.build(kind, key) as scratch:
            fill(scratch)
        return CachedEntry(self.entry(kind, key), False)

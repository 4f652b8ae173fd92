"""What every dask task of the harness shares: the worker it runs on, its own content cache, cache entries sent
as bytes (no shared disk), and events streamed home to the host."""
from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Sequence, Set, Tuple

from harness.prepare.cache import ContentCache

log = logging.getLogger("harness.run.dask")

#: environment variable that names the scheduler when --scheduler is not given (dask's own name for it)
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"

#: a worker's own content cache (default: <the worker's local directory>/harness-cache, which dies with it)
WORKER_CACHE_ENV = "HARNESS_WORKER_CACHE_DIR"

#: the share of a worker's `site-<site>` resource one device job takes: a worker started with `site-lab-a=1`
#: drives as many of its lab's devices at once as it has threads
SITE_SHARE = 0.001

CONNECT_TIMEOUT_S = 10.0

Entry = Tuple[str, str]  # (kind, key) of a ContentCache entry

# ---------------------------------------------------------------- cache entries as bytes
class EntryMissing(Exception):
    """A read-only TrackingCache was asked to build an entry: the step must run on a worker."""

    def __init__(self, kind: str, key: str):
        super().__init__(f"{kind}/{key}")
        self.kind, self.key = kind, key

class TrackingCache(ContentCache):
    """A ContentCache that remembers every complete entry a step looked at or built (`touched`); read-only,
    a build raises EntryMissing instead, so the host learns whether a step is cached without running it."""

    def __init__(self, root: Path, read_only: bool = False):
        super().__init__(root)
        self.read_only = read_only
        #: kinds of entry this cache must not build even when it may build others
        self.read_only_kinds: Set[str] = set()
        self.touched: Set[Entry] = set()

    def has(self, kind: str, key: str) -> bool:
        found = super().has(kind, key)
        if found:
            self.touched.add((kind, key))
        return found

    @contextmanager
    def build(self, kind: str, key: str) -> Iterator[Path]:
        if self.read_only or kind in self.read_only_kinds:
            raise EntryMissing(kind, key)
        with super().build(kind, key) as scratch:
            yield scratch
        self.touched.add((kind, key))

@dataclass(frozen=True)
class Bundle:
    """Files by relative path, as bytes: cache entries or a cell's files on their way between machines."""

    files: Dict[str, bytes] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.files.values())

def pack_entries(cache: ContentCache, entries: Sequence[Entry]) -> Bundle:
    files: Dict[str, bytes] = {}
    for kind, key in sorted(set(entries)):
        root = cache.entry(kind, key)
        for path in sorted(root.rglob("*")):
            if path.is_file():
                files[f"{kind}/{key}/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    return Bundle(files)

def unpack_entries(cache: ContentCache, bundle: Bundle) -> Set[Entry]:
    """Write each entry of bundle into cache (complete entries already there are kept); returns the entries."""
    grouped: Dict[Entry, Dict[str, bytes]] = {}
    for rel, data in bundle.files.items():
        kind, key, inner = rel.split("/", 2)
        grouped.setdefault((kind, key), {})[inner] = data
    plain = ContentCache(cache.root)
    for (kind, key), files in grouped.items():
        if plain.has(kind, key):
            continue
        with plain.build(kind, key) as scratch:
            for inner, data in files.items():
                if inner == ".complete":
                    continue
                target = scratch / inner
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
    return set(grouped)

# ---------------------------------------------------------------- worker side
#: one build step at a time in a worker process: the frameworks' global state (Keras sessions, seeds) is not
#: safe across threads, and a worker given threads for its devices must not train two models at once
BUILD_LOCK = threading.Lock()

def this_worker():
    try:
        from distributed import get_worker
        return get_worker()
    except (ImportError, ValueError):
        return None

def worker_name() -> str:
    worker = this_worker()
    return str(worker.name if worker is not None else "host")

def worker_scratch() -> Path:
    """The worker's own directory (its local_directory; the working directory outside a worker)."""
    worker = this_worker()
    return Path(worker.local_directory if worker is not None else ".harness").resolve()

def worker_cache() -> TrackingCache:
    return TrackingCache(Path(os.environ.get(WORKER_CACHE_ENV) or worker_scratch() / "harness-cache"))

def emit_event(topic: str, message: Dict[str, Any]) -> None:
    """An event to the host (the scheduler adds the worker's address as message['worker'])."""
    worker = this_worker()
    if worker is not None and topic:
        worker.log_event(topic, message)

class EventProgress:
    """Progress lines of a worker's task, sent to the host as events on the run's topic (made on the worker)."""

    def __init__(self, topic: str, job: str = ""):
        self.topic, self.job = topic, job

    def __call__(self, message: str) -> None:
        emit_event(self.topic, {"type": "line", "job": self.job, "name": worker_name(), "line": message})

def scheduler_of(client) -> str:
    """The scheduler's address, for the resume hint (the cells must go back to the same cluster's workers)."""
    try:
        return str(client.scheduler.address) or "tcp://SCHEDULER:PORT"
    except Exception:  # a client whose scheduler is gone: the hint still names the flag
        return "tcp://SCHEDULER:PORT"

def as_finished(client, futures: Sequence[Any], idle: Callable[[Set[Any]], None], every_s: float = 10.0):
    """Each future as it finishes; idle(pending) every every_s seconds that none does."""
    from distributed import wait

    pending = set(futures)
    while pending:
        try:
            with client.as_current():  # wait() asks for the default client; this one need not be it
                done, pending = wait(pending, timeout=every_s, return_when="FIRST_COMPLETED")
        except TimeoutError:
            idle(pending)
            continue
        except Exception:  # FuturesCancelledError: wait() raises for a cancelled future instead of returning it
            done = {f for f in pending if f.cancelled() or f.done()}
            if not done:
                raise
            pending -= done
        yield from done

def client_address(client) -> str:
    try:
        return str(client.scheduler.address)
    except AttributeError:
        return "tcp://SCHEDULER:8786"

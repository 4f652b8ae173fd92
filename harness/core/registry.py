"""A small registry per extension point: sources, converters, compressors, data sets, transports.

A dict filled by a decorator; an unknown name is an error that lists the known ones. Each registry knows which
module registers each name, and imports only the module of the name asked for: a local run never imports the
SSH transport, and a host without OpenVINO can still convert to ONNX. A plugin module whose library is missing
becomes LibraryMissing, naming the extra to install.
"""
from __future__ import annotations

import importlib
import threading
from typing import Callable, Dict, Generic, Hashable, Mapping, Set, TypeVar

from harness.core.errors import UnknownNameError
from harness.core.optional import library_missing

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, plugins: Mapping[Hashable, str] | None = None):
        """`plugins`: each name and the module that registers it (imported on the first lookup of that name)."""
        self.kind = kind
        self._items: Dict[Hashable, T] = {}
        self._plugins: Dict[Hashable, str] = dict(plugins or {})
        self._imported: Set[str] = set()
        # Device workers look names up from several threads at once: import each plugin exactly once, fully.
        self._load_lock = threading.Lock()

    def register(self, name: Hashable) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def _load(self, name: Hashable) -> None:
        module = self._plugins.get(name)
        if module is None or module in self._imported:
            return
        with self._load_lock:
            if module in self._imported:
                return
            try:
                importlib.import_module(module)
            except ImportError as exc:
                if (getattr(exc, "name", "") or "").startswith("harness"):
                    raise  # our own bug, not a missing library
                raise library_missing(exc, f"the {self.kind} {_show(name)}") from None
            self._imported.add(module)

    def get(self, name: Hashable) -> T:
        self._load(name)
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} {_show(name)}; known: {', '.join(self.names()) or 'none'}") \
                from None

    def __contains__(self, name: Hashable) -> bool:
        return name in self._plugins or name in self._items

    def names(self) -> list:
        """Every name, without importing any plugin."""
        return sorted({*map(_show, self._plugins), *map(_show, self._items)})

    def keys(self) -> list:
        """Every key as registered (tuples stay tuples), without importing any plugin."""
        return sorted({*self._plugins, *self._items}, key=str)

    def load_all(self) -> Dict[Hashable, T]:
        """Import every plugin whose library is installed; {name: item}. For listings and tests."""
        for name in list(self._plugins):
            try:
                self._load(name)
            except Exception:  # noqa: BLE001 - a listing shows what loads
                continue
        return dict(self._items)


def _show(name: Hashable) -> str:
    return "->".join(map(str, name)) if isinstance(name, tuple) else str(name)

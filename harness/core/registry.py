"""A small registry per extension point: formats, runtimes, compressors, transports.

A dict filled by a decorator; an unknown name is an error that lists the
known ones. Modules that register heavy things import their heavy
dependencies lazily, inside the registered function.
"""
from __future__ import annotations

import importlib
import threading
from typing import Callable, Dict, Generic, Hashable, Iterable, TypeVar

from harness.core.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, plugin_modules: Iterable[str] = ()):
        self.kind = kind
        self._items: Dict[Hashable, T] = {}
        # Modules imported on first lookup so that registration happens
        # without `import harness` pulling in TensorFlow.
        self._plugin_modules = list(plugin_modules)
        self._loaded = False
        # Device workers look names up from several threads at once: load plugins exactly once, fully.
        self._load_lock = threading.Lock()

    def register(self, name: Hashable) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def _load_plugins(self) -> None:
        if self._loaded:
            return
        with self._load_lock:
            if not self._loaded:
                for module in self._plugin_modules:
                    importlib.import_module(module)
                self._loaded = True

    def get(self, name: Hashable) -> T:
        self._load_plugins()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(map(str, self._items))) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __contains__(self, name: Hashable) -> bool:
        self._load_plugins()
        return name in self._items

    def names(self) -> list:
        self._load_plugins()
        return sorted(self._items, key=str)

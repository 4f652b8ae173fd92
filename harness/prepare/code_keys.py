"""The code that made a cache entry is part of its key: the source of a converter, a compressor or a zoo
builder, and of the harness modules it imports, so an edited step is never answered from the cache."""
from __future__ import annotations

import hashlib
import sys
from typing import List


from harness.zoo import BUILDERS


def module_source(module) -> str:
    import inspect
    try:
        return inspect.getsource(module)
    except (OSError, TypeError):
        return ""

def harness_modules_imported_by(module, source: str) -> List[str]:
    """Names of the harness modules that `module` imports, lazy ones included.

    `from harness.x import name` also yields `harness.x.name`, which counts only if it is a module itself."""
    import ast
    from importlib.util import resolve_name

    package = module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module or ""
            if base.split(".")[0] != "harness":
                continue
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from harness.zoo import keras_util`
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.split(".")[0] == "harness")
    # Import what is not loaded yet (harness modules import heavy libraries lazily, so this is cheap):
    # the key must not depend on what happened to be imported before.
    return sorted(n for n in names if n in sys.modules or _is_module(n))

def _is_module(name: str) -> bool:
    from importlib import import_module
    from importlib.util import find_spec
    try:
        if find_spec(name) is None:
            return False
        import_module(name)
        return True
    except (ImportError, ValueError):
        return False

def source_hash(func, fallback: str) -> str:
    """Hash of the module that defines func and of the harness modules it imports (one level deep), so
    editing a builder, compressor or converter, or a helper it calls, rebuilds its cache entries."""
    import inspect
    module = inspect.getmodule(func)
    source = module_source(module) if module is not None else ""
    if not source:
        return hashlib.sha256(fallback.encode()).hexdigest()[:12]
    digest = hashlib.sha256(source.encode())
    for name in harness_modules_imported_by(module, source):
        digest.update(module_source(sys.modules[name]).encode())
    return digest.hexdigest()[:12]

def builder_source_hash(recipe) -> str:
    return source_hash(BUILDERS.get(recipe.source.builder), recipe.source.builder)

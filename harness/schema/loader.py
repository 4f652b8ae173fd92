"""One strict loader from YAML mappings into frozen dataclasses.

Unknown keys, missing required fields and wrong types are ConfigErrors that
name the file and the dotted field. Normalization happens here, once.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Type, TypeVar

import yaml

from harness.core.errors import ConfigError

T = TypeVar("T")


def read_yaml_mapping(path: Path) -> dict:
    """Read a YAML file that must hold a mapping; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"cannot read file ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, f"is not valid YAML{where}: {problem}") from None
    if data is None:
        raise ConfigError(path, "file is empty; expected a mapping of fields")
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping of fields at the top level, got {type(data).__name__}")
    return data


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: Path, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else ConfigError(
            path, f"expected one of {', '.join(_type_name(a) for a in args)}, got {value!r}", key)
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise ConfigError(path, f"must be one of {', '.join(map(repr, args))}, got {value!r}", key)
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a mapping, got {type(value).__name__} {value!r}", key)
        return load_dataclass(tp, value, path, prefix=key)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {type(value).__name__} {value!r}", key)
        item_tp = args[0] if args else Any
        return tuple(_convert(v, item_tp, path, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a mapping, got {type(value).__name__} {value!r}", key)
        kt, vt = (args or (Any, Any))
        return {_convert(k, kt, path, key): _convert(v, vt, path, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {value!r}", key)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {value!r}", key)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {value!r}", key)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {type(value).__name__} {value!r}", key)
        return value
    return value


def load_dataclass(cls: Type[T], data: Mapping, path: Path, prefix: str = "") -> T:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if not isinstance(key, str) or key not in fields:
            known = ", ".join(sorted(n for n, f in fields.items() if not f.metadata.get("internal")))
            shown = key if isinstance(key, str) and key.isprintable() else repr(key)
            raise ConfigError(path, f"unknown field; known fields here: {known}", f"{prefix}.{shown}" if prefix else shown)
    kwargs = {}
    for name, field in fields.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], path, dotted)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise ConfigError(path, "required field is missing", dotted)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(path, str(exc), prefix or None) from None


def named_file(name_or_path: str, directory: Path) -> Path:
    """`NAME` means `<directory>/NAME.yaml`; anything ending in .yaml/.yml or that exists is a path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    return Path(directory) / f"{name_or_path}.yaml"


def list_names(directory: Path) -> list:
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def load_named(cls: Type[T], name_or_path: str, directory: Path, kind: str, plural: str, hint: str = "") -> T:
    """Load `cls` from a named file in directory; its name defaults to the file's stem."""
    path = named_file(name_or_path, directory)
    if not path.exists():
        known = ", ".join(list_names(directory)) or "none"
        raise ConfigError(path, f"no such {kind}; known {plural}: {known}{hint}")
    data = read_yaml_mapping(path)
    data.setdefault("name", path.stem)
    data["source_path"] = str(path)
    return load_dataclass(cls, data, path)

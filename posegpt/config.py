"""Typed configs: dataclasses loaded from YAML presets with ``key=value`` overrides.

Every config is a dataclass whose fields each carry a docstring (a string literal
right after the field). ``load_config`` builds one from a YAML file and a list of
dotted overrides (``train.lr=1e-4``), checking names and types so that a typo fails
before any worker starts, with the closest valid key in the message.

A YAML mapping may name ``_base_: other.yaml`` (relative to the file): the base is
loaded first and the mapping's own keys override it. Presets use it to share the
model section between the train, eval and serve configs.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import itertools
import textwrap
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

BASE_KEY = "_base_"


class ConfigError(ValueError):
    """A config file or override does not fit its dataclass."""


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    with path.open() as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping, got {type(data).__name__}")
    return _resolve_bases(data, path.parent)


def _resolve_bases(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Expand ``_base_`` includes at every mapping level, depth first."""
    out: dict[str, Any] = {}
    if BASE_KEY in data:
        base = _read_yaml((folder / str(data[BASE_KEY])).resolve())
        out = base
    for key, value in data.items():
        if key == BASE_KEY:
            continue
        if isinstance(value, dict):
            value = _resolve_bases(value, folder)
            if isinstance(out.get(key), dict):
                value = _deep_merge(out[key], value)
        out[key] = value
    return out


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=[1,2]"]`` into a nested dict; values are parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is set both as a value and as a section")
        node[parts[-1]] = value
    return nested


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
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
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} fits none of {[_type_name(a) for a in args]}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for section {_type_name(tp)}, got {value!r}")
        return _build(tp, value, where)
    if origin in (list, Sequence, tuple) or tp in (list, tuple):
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(
                _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            prefix = f"{where}." if where else ""
            raise ConfigError(
                f"unknown config key {prefix}{key!r}{hint}; valid keys of {cls.__name__}: {sorted(fields)}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc
    return obj


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from a plain nested dict, checking keys and types."""
    return _build(cls, data, "")


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Load ``cls`` from an optional YAML preset plus ``key=value`` overrides."""
    data: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    data = _deep_merge(data, parse_overrides(overrides))
    cfg = from_dict(cls, data)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict (YAML/JSON-safe) of a config dataclass."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def dump_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train.lr": 2e-4, ...}``: for MLflow params and run comparison."""
    out: dict[str, Any] = {}
    for key, value in (to_dict(cfg) if not isinstance(cfg, dict) else cfg).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (read from its source)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0]
        if not isinstance(body, ast.ClassDef):
            continue
        stmts = body.body
        for node, nxt in itertools.pairwise(stmts):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs

"""Configuration conventions shared by every job.

Every job (pretraining, fine-tuning, inference, post-processing) takes one *frozen dataclass*
that derives from :class:`Config`. Configs

* round-trip losslessly to JSON (``to_dict`` / ``from_dict``), so a checkpoint stores the configs
  that made it and a model rebuilds itself from them;
* are immutable: change a field with :meth:`Config.replace`, or from the command line with
  :meth:`Config.override` (``"optim.lr=3e-4"``-style dotted assignments, values parsed to the
  field's annotated type);
* carry no hidden state: no globals, no environment variables read at import time.

Example
-------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Optim(Config):
...     lr: float = 1e-4
...     betas: tuple[float, float] = (0.9, 0.95)
>>> @dataclass(frozen=True)
... class Job(Config):
...     steps: int = 100
...     optim: Optim = Optim()
>>> Job().override(["steps=5", "optim.betas=0.9,0.999"]).to_dict()
{'steps': 5, 'optim': {'lr': 0.0001, 'betas': [0.9, 0.999]}}
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import EmsegError

__all__ = ["Config", "ConfigError", "parse_value"]

C = TypeVar("C", bound="Config")


class ConfigError(EmsegError, ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


class Config:
    """Mixin for frozen dataclass configs: JSON round trip, typed overrides."""

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists, nested configs dicts)."""
        return {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], *, strict: bool = True) -> C:
        """Build from a dict as written by :meth:`to_dict`.

        Unknown keys raise :class:`ConfigError` when ``strict`` (the default), so a typo in a
        YAML file is reported rather than ignored; checkpoints written by a newer version can be
        read with ``strict=False``.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        hints = _hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown and strict:
            raise ConfigError(
                f"{cls.__name__}: unknown field(s) {sorted(unknown)}; known: {sorted(names)}"
            )
        kwargs = {k: _from_plain(v, hints[k], f"{cls.__name__}.{k}") for k, v in data.items() if k in names}
        return cls(**kwargs)

    @classmethod
    def from_json(cls: type[C], text: str, *, strict: bool = True) -> C:
        return cls.from_dict(json.loads(text), strict=strict)

    @classmethod
    def from_file(cls: type[C], path: str | Path, *, strict: bool = True) -> C:
        """Read a JSON or YAML file (by suffix)."""
        path = Path(path)
        text = path.read_text()
        if path.suffix.lower() in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        try:
            return cls.from_dict(data, strict=strict)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    # -- modification --------------------------------------------------------------------------
    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (type-checked like :meth:`from_dict`)."""
        return self.from_dict({**self.to_dict(), **{k: _to_plain(v) for k, v in changes.items()}})

    def override(self: C, assignments: Iterable[str]) -> C:
        """Apply ``"a.b=value"`` assignments, parsing each value to the field's type."""
        data = self.to_dict()
        for item in assignments:
            if "=" not in item:
                raise ConfigError(f"override {item!r}: expected FIELD=VALUE, e.g. optim.lr=3e-4")
            key, raw = item.split("=", 1)
            path = key.strip().replace("-", "_").split(".")
            node, hint_cls = data, type(self)
            for part in path[:-1]:
                hints = _hints(hint_cls)
                if part not in hints or not isinstance(node.get(part), dict):
                    raise ConfigError(f"override {item!r}: {part!r} is not a section of {hint_cls.__name__}")
                node, hint_cls = node[part], _unwrap_optional(hints[part])
            leaf = path[-1]
            hints = _hints(hint_cls)
            if leaf not in hints:
                raise ConfigError(
                    f"override {item!r}: {hint_cls.__name__} has no field {leaf!r}; "
                    f"fields: {sorted(hints)}"
                )
            node[leaf] = _to_plain(parse_value(raw.strip(), hints[leaf], key))
        return self.from_dict(data)

    @classmethod
    def field_paths(cls) -> list[str]:
        """All settable dotted field names, e.g. ``["steps", "optim.lr", ...]``."""
        out: list[str] = []
        for name, hint in _hints(cls).items():
            inner = _unwrap_optional(hint)
            if isinstance(inner, type) and issubclass(inner, Config):
                out += [f"{name}.{p}" for p in inner.field_paths()]
            else:
                out.append(name)
        return out


# ---------------------------------------------------------------------------------------------
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _unwrap_optional(hint: Any) -> Any:
    if _is_union(hint):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _is_union(hint: Any) -> bool:
    origin = get_origin(hint)
    return origin is Union or origin is types.UnionType


def _to_plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def _from_plain(value: Any, hint: Any, where: str) -> Any:
    """Coerce a JSON value to ``hint`` (nested configs, tuples, optionals, literals)."""
    if hint is Any:
        return value
    origin = get_origin(hint)
    if _is_union(hint):
        if value is None and type(None) in get_args(hint):
            return None
        for arg in get_args(hint):
            if arg is type(None):
                continue
            try:
                return _from_plain(value, arg, where)
            except (ConfigError, TypeError, ValueError):
                continue
        raise ConfigError(f"{where}: {value!r} matches none of {hint}")
    if origin is Literal:
        if value not in get_args(hint):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(hint))}")
        return value
    if isinstance(hint, type) and issubclass(hint, Config):
        if isinstance(value, hint):
            return value
        return hint.from_dict(value)
    if origin is tuple:
        args = get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a sequence, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_plain(v, args[0], where) for v in value)
        if args and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_from_plain(v, a, where) for v, a in zip(value, args or [Any] * len(value)))
    if origin in (list, typing.List):  # noqa: UP006
        (arg,) = get_args(hint) or (Any,)
        return [_from_plain(v, arg, where) for v in value]
    if origin in (dict, typing.Dict):  # noqa: UP006
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def parse_value(raw: str, hint: Any, where: str = "value") -> Any:
    """Parse a command-line string to ``hint``: ``"3"``, ``"1e-4"``, ``"true"``, ``"6,96,96"``."""
    inner = _unwrap_optional(hint)
    if raw.lower() in {"none", "null"} and (inner is not hint or hint is Any):
        return None
    origin = get_origin(inner)
    if origin is tuple or origin in (list, typing.List):  # noqa: UP006
        args = get_args(inner)
        items = [p for p in raw.strip("[]()").split(",") if p.strip()]
        if args and not (len(args) == 2 and args[1] is Ellipsis) and origin is tuple:
            elem = list(args)
        else:
            elem = [args[0] if args else Any] * len(items)
        if len(elem) != len(items):
            raise ConfigError(f"{where}: expected {len(elem)} comma-separated values, got {raw!r}")
        return _from_plain([parse_value(p.strip(), a, where) for p, a in zip(items, elem)], inner, where)
    if inner is bool:
        low = raw.lower()
        if low in {"1", "true", "yes", "on"}:
            return True
        if low in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{where}: expected true/false, got {raw!r}")
    if inner is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {raw!r}") from None
    if inner is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {raw!r}") from None
    if get_origin(inner) is Literal:
        return _from_plain(raw, inner, where)
    if _is_union(inner):
        for arg in get_args(inner):
            if arg is type(None):
                continue
            try:
                return parse_value(raw, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: cannot parse {raw!r} as {inner}")
    if inner is Any:
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw

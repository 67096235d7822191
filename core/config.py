"""Stage configurations: frozen dataclasses read from TOML files plus ``key=value`` overrides.

:func:`load_config` is shared by every stage. It rejects unknown keys, converts override strings
to each field's type, and lets the dataclass's ``__post_init__`` collect every problem into one
:class:`ConfigError`, so a user fixes a config file in one pass, before any data is read.

:func:`config_changes` is the one rerun policy: a stage that finds its own earlier output compares
the config it was made with against the current one, ignoring the fields listed in the config
class's ``RESUMABLE_CHANGES`` (they do not change what is computed), and refuses to mix the two
unless told to restart.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

__all__ = ["ConfigError", "check", "config_changes", "config_to_json", "load_config", "parse_overrides",
           "with_defaults"]

C = TypeVar("C")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a TOML value or an override string to the field type ``tp``."""
    origin = typing.get_origin(tp)
    if isinstance(value, str) and tp is not str:  # an override string: numbers, true/false, [lists], {tables}
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigError(f"{key}={value!r}: not a valid {getattr(tp, '__name__', tp)}") from None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item = next((a for a in typing.get_args(tp) if a is not Ellipsis), None)
        if item in (int, str, float) and not all(type(v) is item or item is float and type(v) is int for v in value):
            raise ConfigError(f"{key}: expected a list of {item.__name__}, got {value!r}")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return dict(value)
    if tp in (int, float, str, bool) and not (type(value) is tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def load_config(cls: type[C], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """Build ``cls`` from a TOML file (optional) and overrides (``{field: value or string}``).

    Keys may sit at the top of the file or in a table named after the stage (``[generalist]``).
    """
    values: dict[str, Any] = {}
    where = "config"
    if path is not None:
        where = str(path)
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
        section = getattr(cls, "SECTION", None)
        values.update(raw.get(section, raw) if section in raw else raw)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    problems = [f"unknown key {k!r}" for k in unknown]
    kwargs = {}
    for k, v in values.items():
        if k in fields:
            try:
                kwargs[k] = _coerce(v, hints[k], k)
            except ConfigError as e:
                problems.append(str(e))
    if unknown:
        problems.append(f"valid keys are {', '.join(sorted(fields))}")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except TypeError as e:  # a required field is missing
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs and f.init
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        raise ConfigError(f"{where}: missing required key{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(map(repr, missing)) or e}") from None


def parse_overrides(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``["epochs=3", "lr=0.01"]`` -> ``{"epochs": "3", "lr": "0.01"}``."""
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {p!r}: expected key=value")
        out[key.strip()] = value
    return out


def config_to_json(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def with_defaults(saved: dict[str, Any], cls: type) -> dict[str, Any]:
    """A config saved (as JSON) before some of ``cls``'s fields existed, with each of those fields
    at its default, the value that run used implicitly; fields without a default stay absent."""
    out = dict(saved)
    for f in dataclasses.fields(cls):
        if f.name not in out and f.init:
            if f.default is not dataclasses.MISSING:
                out[f.name] = json.loads(json.dumps(f.default))
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = json.loads(json.dumps(f.default_factory()))
    return out


def check(problems: list[str], ok: bool, message: str) -> None:
    """Append ``message`` to ``problems`` unless ``ok``: a config's ``__post_init__`` collects all."""
    if not ok:
        problems.append(message)


def config_changes(saved: dict[str, Any], cfg: Any) -> list[str]:
    """The fields that differ between a config saved as JSON and ``cfg``, as ``"key: old -> new"``
    lines; fields in ``type(cfg).RESUMABLE_CHANGES`` are ignored, and a field the saved config lacks
    (written before the field existed) counts as the field's default."""
    ignore = getattr(type(cfg), "RESUMABLE_CHANGES", frozenset())
    now = config_to_json(cfg)
    saved = with_defaults(saved, type(cfg))
    keys = sorted(k for k in set(saved) | set(now) if k not in ignore and saved.get(k) != now.get(k))
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys]

"""Typed records: the checks every on-disk record's ``from_json`` shares.

A record is a frozen dataclass in the stage that owns its file (the training cost in
:mod:`specens.core.cost`, the training history in :mod:`specens.core.loop`, the generalist's
``model.json`` in :mod:`specens.generalist.checkpoint`, the specialist's ``specialist.json`` and
its gate in :mod:`specens.specialists`), with ``to_json`` and a ``from_json(data, where)`` that
refuses a missing or unknown key and a value of the wrong type with a :class:`CheckpointError`
naming ``where`` and the key. Readers get attributes, never a ``.get(key, default)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

from .errors import CheckpointError
from .io import read_artifact_json


def record_fields(data: Any, cls: type, where: str, optional: Iterable[str] = ()) -> dict[str, Any]:
    """``data`` as the keyword arguments of dataclass ``cls``: an object with every field's key
    (those in ``optional`` may be absent: the field's default) and no other."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{where} must be an object, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [k for k in names if k not in data and k not in set(optional)]
    extra = sorted(set(data) - set(names))
    if missing or extra:
        raise CheckpointError(
            f"{where}: "
            + "; ".join(([f"missing keys {missing}"] if missing else []) + ([f"unknown keys {extra}"] if extra else []))
        )
    return {k: data[k] for k in names if k in data}


HEADER = ("format", "format_version")  # an artifact's header: checked by core.io.read_artifact_json, not a field


def artifact_fields(data: Any, cls: type, where: str, optional: Iterable[str] = ()) -> dict[str, Any]:
    """:func:`record_fields` of an artifact's top-level object, its :data:`HEADER` left out."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{where} must be an object, got {type(data).__name__}")
    return record_fields({k: v for k, v in data.items() if k not in HEADER}, cls, where, optional)


def read_report(cls: type, path, fmt: str, version: int, rerun: str):
    """The artifact at ``path`` as record ``cls`` (its ``from_json(data, where)``), its format and
    version checked; a refusal of those says how to replace the file (``rerun``, a command)."""
    try:
        data = read_artifact_json(path, fmt, version)
    except CheckpointError as e:  # e.g. written by an older specens
        raise CheckpointError(f"{e}; delete it or rerun `{rerun}`") from None
    return cls.from_json(data, str(path))


def check_values(data: dict[str, Any], checks: Iterable[tuple[str, Callable[[Any], bool], str]], where: str) -> None:
    """Refuse the first ``(key, ok, want)`` whose value in ``data`` fails ``ok``, naming the key:
    ``file: 'key'`` for a record's own field, ``file: 'outer'.key`` inside a nested one."""
    for key, ok, want in checks:
        if key in data and not ok(data[key]):
            raise CheckpointError(f"{field_name(where, key)} must be {want}, got {data[key]!r:.60}")


def field_name(where: str, key: str) -> str:
    """How messages name ``key`` of the record at ``where`` (a file, or ``file: 'outer'``)."""
    return f"{where}.{key}" if where.endswith("'") or ": '" in where else f"{where}: {key!r}"


def is_count(v: Any, lo: int = 0) -> bool:
    """An int (not a bool) >= ``lo``."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def is_ratio(v: Any) -> bool:
    """A finite number, or null where a ratio is undefined."""
    return v is None or is_number(v)


def is_dict(v: Any) -> bool:
    return isinstance(v, dict)


def is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) for s in v)

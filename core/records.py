"""Typed records: the schema every on-disk record's ``from_json`` / ``to_json`` shares.

A record is a frozen dataclass in the stage that owns its file (the training cost in
:mod:`specens.core.cost`, the epoch records in :mod:`specens.core.loop`, the generalist's
``model.json`` in :mod:`specens.generalist.checkpoint`, the specialist's ``specialist.json`` and
its gate in :mod:`specens.specialists`), with ``to_json`` and a ``from_json(data, where)`` that
refuses a missing or unknown key and a value of the wrong type with a :class:`CheckpointError`
naming ``where`` and the key. Readers get attributes, never a ``.get(key, default)``.

:class:`Record` derives both from the dataclass itself: each field's annotation is its type
(``int``, ``float``, ``bool``, ``str``, ``X | None``, ``list[X]``, ``tuple[X, ...]`` (a list on
disk), ``dict`` or ``dict[str, X]``, another record, a list or object of records) and its
constraint is declared with :func:`~specens.core.config.param`, the vocabulary the configs use
(``examples: int = param(ge=0)``; on a list or object of numbers, it applies to each). A field
with a default may be absent from the file (it was written before the field existed, or the
value does not apply) and is left out of the file at ``None``; a required field may be null only
where its type says ``| None``. Checks spanning fields go in the record's ``checks()``, as in a
config. A record that is a file of its own names its ``format`` / ``format_version`` header in
``ARTIFACT`` (:class:`Record`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from .config import Bounds, number_text
from .errors import CheckpointError, SpecensError
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


def read_report(cls: type, path, fmt: str, version: int, rerun: str):
    """The artifact at ``path`` as record ``cls`` (its ``from_json(data, where)``), its format and
    version checked; a refusal of those says how to replace the file (``rerun``, a command)."""
    try:
        data = read_artifact_json(path, fmt, version)
    except CheckpointError as e:  # e.g. written by an older specens
        raise CheckpointError(f"{e}; delete it or rerun `{rerun}`") from None
    return cls.from_json(data, str(path))


def field_name(where: str, key: str) -> str:
    """How messages name ``key`` of the record at ``where`` (a file, or ``file: 'outer'``)."""
    return f"{where}.{key}" if where.endswith("'") or ": '" in where else f"{where}: {key!r}"


def is_count(v: Any, lo: int = 0) -> bool:
    """An int (not a bool) >= ``lo``."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool); an int beyond any float (JSON allows ``1000...0``) is not."""
    if not isinstance(v, int | float) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # math.isfinite(10**400): int too large to convert to float
        return False


def is_dict(v: Any) -> bool:
    return isinstance(v, dict)


class Record:
    """Base of a record dataclass: ``from_json`` / ``to_json`` derived from its fields (module
    docstring). A subclass overrides ``checks()`` for constraints spanning fields.

    A record that is a whole artifact (a file of its own) names its header in ``ARTIFACT``,
    ``(format, format_version)``: ``to_json`` writes it first, ``from_json`` leaves it out of
    the fields. The header is checked where the file is read (:func:`read_report`,
    :func:`~specens.core.io.read_artifact_json`), not here."""

    ARTIFACT: ClassVar[tuple[str, int] | None] = None
    ERROR: ClassVar[type[SpecensError]] = CheckpointError  # what a refusal raises (a dataset's: DataError)

    @classmethod
    def from_json(cls, data: Any, where: str):
        """``data`` read as this record: every key known, every required key present, every value
        of its field's type and within its constraint, then ``checks()``. Every problem found is
        listed in one error (:attr:`ERROR`) naming ``where`` and the key, as a config lists all of
        its own, so that a hand-made file is fixed in one pass; the checks run on the fields that
        were read where others were not."""
        if cls.ARTIFACT is not None and isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in HEADER}
        names, optional, plan = _plan(cls)
        problems = []
        try:
            values = record_fields(data, cls, where, optional=optional)
        except CheckpointError as e:
            if not isinstance(data, dict):
                raise cls.ERROR(str(e)) from None
            problems.append(str(e))
            values = {k: v for k, v in data.items() if k in names}
        kwargs, partial = {}, {}
        for name, hint, bounds in plan:
            if name in values:
                try:
                    kwargs[name] = _read_value(values[name], hint, bounds, where, name)
                except SpecensError as e:
                    problems.append(str(e))
                    partial[name] = getattr(e, "partial", None)  # a nested record's fields that were read
        record = cls(**kwargs) if not problems else _partial(cls, {**partial, **kwargs})
        try:
            problems += [f"{where}: {msg}" for ok, msg in record.checks() if not ok]
        except (AttributeError, TypeError, KeyError, IndexError, ValueError):
            if not problems:  # a check that fails on fields read in full is a defect, not a bad file
                raise
        if problems:
            err = cls.ERROR(_joined(problems, where))
            err.partial = record  # what was read: the enclosing record's checks run on it
            raise err
        return record

    def checks(self) -> list[tuple[bool, str]]:
        """``(ok, message)`` pairs for constraints spanning fields."""
        return []

    def to_json(self) -> dict[str, Any]:
        """The record as JSON values; an optional field (one with a default) at ``None`` is left
        out, a required one is written as null. An artifact's header comes first."""
        body = {
            f.name: _json_value(v)
            for f in dataclasses.fields(self)
            if (v := getattr(self, f.name)) is not None or not _has_default(f)
        }
        return body if self.ARTIFACT is None else {**dict(zip(HEADER, self.ARTIFACT, strict=True)), **body}


@functools.cache
def _plan(cls: type) -> tuple[list[str], list[str], list[tuple[str, Any, Bounds | None]]]:
    """A record class's field names, those that may be absent, and each field's resolved
    annotation and constraint: worked out once per class (a file holds many records of one)."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    plan = [(f.name, hints[f.name], f.metadata.get("bounds")) for f in fields]
    return [f.name for f in fields], [f.name for f in fields if _has_default(f)], plan


def _joined(problems: list[str], where: str) -> str:
    """Problems about ``where`` as one message, ``where`` named once at its start."""
    stripped = [p.removeprefix(f"{where}: ") for p in problems]
    if all(p != q for p, q in zip(problems, stripped, strict=True)):
        return f"{where}: " + "; ".join(stripped)
    return "; ".join(problems)


def _partial(cls: type, values: dict[str, Any]) -> Any:
    """An instance of dataclass ``cls`` holding ``values`` and None for the fields that could not
    be read, built without ``__init__``: what ``checks()`` runs on when some fields failed."""
    record = object.__new__(cls)
    for f in dataclasses.fields(cls):
        object.__setattr__(record, f.name, values.get(f.name))
    return record


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _json_value(v: Any) -> Any:
    if isinstance(v, Record):
        return v.to_json()
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    return v


def _read_value(v: Any, tp: Any, bounds: Bounds | None, where: str, key: str) -> Any:
    """``v`` checked against annotation ``tp`` and ``bounds`` (those of a list's items or an
    object's values, for a container of numbers or strings); a nested record is read by its own
    ``from_json``, named ``file: 'key'`` (``file: 'outer'.key`` deeper, ``[i]`` in a list,
    ``.name`` in an object of records). A ``tuple[X, ...]`` is a list on disk."""
    nullable, tp, origin, item, value, (ok, want) = _shape(tp)
    if nullable and v is None:
        return None
    name = field_name(where, key)
    if _is_record(tp):
        return tp.from_json(v, name)
    if _is_record(item):
        if not isinstance(v, list):
            raise CheckpointError(f"{name} must be a list of objects, got {v!r:.60}")
        read = _each(lambda i, x: item.from_json(x, f"{name}[{i}]"), enumerate(v))
        return tuple(read.values()) if origin is tuple else list(read.values())
    if _is_record(value):
        if not is_dict(v):
            raise CheckpointError(f"{name} must be an object of objects, got {v!r:.60}")
        return _each(lambda k, x: value.from_json(x, f"{name}.{k}"), v.items())
    if ok(v) and (bounds is None or all(bounds.problem(key, x) is None for x in _members(v, item, value))):
        return tuple(v) if origin is tuple else v
    if bounds is not None:
        want = _bound_text(bounds) if bounds.choices is not None else f"{want} {_bound_text(bounds)}"
    raise CheckpointError(f"{name} must be {want}{' or null' if nullable else ''}, got {v!r:.60}")


@functools.cache
def _shape(tp: Any) -> tuple[bool, Any, Any, Any, Any, tuple[Callable[[Any], bool], str]]:
    """An annotation, worked out once: (nullable, the type without ``| None``, its origin, a
    list's item type, an object's value type, its value test and how messages name it)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    nullable = origin in (typing.Union, types.UnionType) and type(None) in args
    if nullable:
        (tp,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    value = args[1] if origin is dict and len(args) == 2 else None
    return nullable, tp, origin, _item_type(origin, args), value, _type_check(tp, origin, args)


def _each(read: Callable[[Any, Any], Any], pairs: Iterable[tuple[Any, Any]]) -> dict[Any, Any]:
    """``{k: read(k, x)}`` over ``pairs``, every refusal listed in one error whose ``partial``
    holds what was read of each (what the enclosing record's checks still run on)."""
    out, errors = {}, []
    for k, x in pairs:
        try:
            out[k] = read(k, x)
        except SpecensError as e:
            errors.append(e)
            out[k] = getattr(e, "partial", None)
    if errors:
        err = type(errors[0])("; ".join(map(str, errors)))
        err.partial = out
        raise err
    return out


def _type_check(tp: Any, origin: Any, args: tuple) -> tuple[Callable[[Any], bool], str]:
    """A value test for annotation ``tp`` and how messages say what it wants: a list's items and
    an object's values are checked where they are numbers, strings or booleans."""
    if tp in _SCALARS:
        return _SCALARS[tp][:2]
    item = _item_type(origin, args)
    if origin in (list, tuple):
        if item in _SCALARS:
            ok, _, many = _SCALARS[item]
            return (lambda v: isinstance(v, list) and all(map(ok, v))), f"a list of {many}"
        return (lambda v: isinstance(v, list)), "a list"
    if tp is dict or origin is dict:
        if len(args) == 2 and args[1] in _SCALARS:
            ok, _, many = _SCALARS[args[1]]
            return (lambda v: is_dict(v) and all(map(ok, v.values()))), f"an object of {many}"
        return is_dict, "an object"
    return (lambda v: True), ""


_SCALARS: dict[Any, tuple[Callable[[Any], bool], str, str]] = {  # a test, the value and several, in messages
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an int", "ints"),
    float: (is_number, "a finite number", "finite numbers"),
    bool: (lambda v: isinstance(v, bool), "true or false", "booleans"),
    str: (lambda v: isinstance(v, str), "a string", "strings"),
}


def _is_record(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Record)


def _members(v: Any, item: Any, value: Any) -> Iterable[Any]:
    """What a field's constraint applies to: a list's items, an object's values, or ``v`` itself."""
    return v if item is not None else v.values() if value is not None else (v,)


def _item_type(origin: Any, args: tuple) -> Any:
    """The item type of ``list[X]`` or ``tuple[X, ...]`` (None for any other annotation)."""
    if origin is list and len(args) == 1:
        return args[0]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def _bound_text(b: Bounds) -> str:
    """A constraint as a message shows it after the type (``>= 0``, ``in [0, 1]``, ``one of ...``)."""
    if b.choices is not None:
        return f"one of {', '.join(map(repr, b.choices))}"
    lo = f">= {number_text(b.ge)}" if b.ge is not None else f"> {number_text(b.gt)}" if b.gt is not None else None
    hi = f"<= {number_text(b.le)}" if b.le is not None else f"< {number_text(b.lt)}" if b.lt is not None else None
    return " and ".join(x for x in (lo, hi) if x)

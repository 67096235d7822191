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
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

__all__ = [
    "Bounds",
    "ConfigError",
    "DeviceParts",
    "MissingKeys",
    "Validated",
    "config_changes",
    "config_to_json",
    "field_problems",
    "load_config",
    "param",
    "parse_overrides",
    "part",
    "redefault",
    "with_defaults",
]

C = TypeVar("C")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a TOML value or an override string to the field type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # e.g. int | str | None: the first member the value is
        return _coerce_union(value, typing.get_args(tp), key)
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
    if tp in (int, float, str, bool) and type(value) is not tp:
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def _coerce_union(value: Any, members: tuple, key: str) -> Any:
    """An override string becomes JSON (``null`` for None, numbers) unless the union takes strings
    and the string is not JSON (``auto``); the value must then be one of the members' types."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            if str not in members:
                raise ConfigError(f"{key}={value!r}: not a valid value") from None
    if float in members and type(value) is int and int not in members:
        value = float(value)
    if not any(value is None if m is type(None) else type(value) is m for m in members):
        names = " or ".join("null" if m is type(None) else m.__name__ for m in members)
        raise ConfigError(f"{key}: expected {names}, got {value!r}")
    return value


def load_config(cls: type[C], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """Build ``cls`` from a TOML file (optional) and overrides (``{field: value or string}``).

    Keys at the top of the file apply to every stage; a table named after the stage
    (``[generalist]``) adds its own, which win; other stages' tables are left to them.
    """
    values: dict[str, Any] = {}
    where = "config"
    if path is not None:
        where = str(path)
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text, as TOML must be (byte {e.start}: {e.reason})") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot be read ({e.strerror or e})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
        values.update(_file_values(raw, getattr(cls, "SECTION", None), path))
        _check_file_trust(cls, values, path, overrides or {})
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
        problems.append(f"valid keys are {', '.join(sorted(fields - (FILE_REFUSED if path is not None else set())))}")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except TypeError as e:  # a required field is missing
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in kwargs
            and f.init
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        raise MissingKeys(
            f"{where}: missing required key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing)) or e}",
            missing,
            None if path is None else str(path),
        ) from None


class MissingKeys(ConfigError):
    """:func:`load_config`'s error for required fields that neither the file nor the overrides
    gave; ``keys`` lists them, so that a command can name its own options instead."""

    def __init__(self, message: str, keys: list[str] = (), path: str | None = None):
        super().__init__(message)
        self.keys = list(keys)
        self.path = path


STAGE_SECTIONS = frozenset({"generalist", "cluster", "specialists", "distill"})  # the stages' TOML tables


def _file_values(raw: dict[str, Any], section: str | None, path: str | Path) -> dict[str, Any]:
    """A config file's keys for the stage whose table is ``section``: the keys at the top of the
    file (shared by every stage), then that table's, which win; other stages' tables are theirs."""
    table = raw.get(section, {}) if section else {}
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{section}] must be a table of keys, got {type(table).__name__}")
    return {**{k: v for k, v in raw.items() if k not in STAGE_SECTIONS}, **table}


FILE_REFUSED = frozenset({"trust_code"})  # keys a config file may not set: trust comes from the caller


def _check_file_trust(cls: type, values: dict[str, Any], path: str | Path, overrides: dict[str, Any]) -> None:
    """A config file travels with runs and repositories like any shared directory, so it is read
    as a stranger's (docs/safety.md): it may not grant trust (:data:`FILE_REFUSED`), and a field of
    ``cls.CODE_FIELDS`` naming code (``"package.module:callable"``) is refused unless the caller
    passed ``trust_code`` or set that field itself (on the command line or in the Python call)."""
    for key in sorted(FILE_REFUSED & set(values)):
        raise ConfigError(
            f"{path}: {key!r} is not read from a config file; trust comes only from the command line "
            f"(--trust-code) or the Python call ({key}=True)"
        )
    trusted = str(overrides.get("trust_code")).lower() == "true"
    for key in getattr(cls, "CODE_FIELDS", ()):
        value = values.get(key)
        if isinstance(value, str) and ":" in value and overrides.get(key) is None and not trusted:
            raise ConfigError(
                f"{path}: {key} = {value!r} names code to import, and a config file cannot make specens run "
                f"code; if you wrote it, pass --trust-code (or --set {key}=... on the command line)"
            )


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


@dataclasses.dataclass(frozen=True)
class Bounds:
    """A field's constraint, declared next to it with :func:`param`: a range (``ge``/``gt`` below,
    ``le``/``lt`` above) or a set of ``choices``. ``problem`` says what is wrong, in the one style
    every config's messages share (``"lr must be in (0, 10], got -1.0"``), or None."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None

    def problem(self, name: str, value: Any) -> str | None:
        if self.choices is not None:
            if value in self.choices:
                return None
            want = " or ".join(map(repr, self.choices)) if len(self.choices) == 2 else f"one of {self.choices}"
            return f"{name} must be {want}, got {value!r}"
        lo, hi = (self.ge, self.gt), (self.le, self.lt)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name} must be a number, got {value!r}"
        ok = (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )
        if ok:
            return None
        if lo != (None, None) and hi != (None, None):
            left = f"[{number_text(self.ge)}" if self.ge is not None else f"({number_text(self.gt)}"
            right = f"{number_text(self.le)}]" if self.le is not None else f"{number_text(self.lt)})"
            return f"{name} must be in {left}, {right}, got {value!r}"
        bound = next(
            f"{op} {number_text(b)}"
            for op, b in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
            if b is not None
        )
        return f"{name} must be {bound}, got {value!r}"


def param(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    ge=None,
    gt=None,
    le=None,
    lt=None,
    choices=None,
) -> Any:
    """A config field with its constraint (:class:`Bounds`), checked by :func:`field_problems`."""
    bounds = Bounds(ge, gt, le, lt, tuple(choices) if choices is not None else None)
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"bounds": bounds})


def redefault(cls: type, name: str, default: Any) -> Any:
    """Field ``name`` of the shared part ``cls`` with another default and the same constraint: a
    stage whose default differs (a specialist's lr) declares it without restating the bounds."""
    f = cls.__dataclass_fields__[name]
    return dataclasses.field(default=default, metadata=f.metadata)


P = TypeVar("P")


def part(cls: type[P], cfg: Any, **resolved: Any) -> P:
    """The composed part ``cls`` (``OptimParts``, ...) of a stage's config ``cfg``, its fields
    taken from ``cfg`` unless the stage ``resolved`` them (a specialist's ``epochs = 0`` and
    ``lr = 0`` become the numbers it chose): what a stage hands a shared component instead of its
    whole config. The part checks its own constraints again on the resolved values."""
    return cls(**{**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)}, **resolved})


def number_text(b: float) -> str:
    """A bound as a message shows it: an int in full (2**63 - 1 is not 9.22337e+18), a float short."""
    return str(b) if isinstance(b, int) else f"{b:g}"


def field_problems(cfg: Any) -> list[str]:
    """Every declared constraint ``cfg``'s fields break, as messages (empty when none)."""
    out = []
    for f in dataclasses.fields(cfg):
        bounds = f.metadata.get("bounds")
        if bounds is not None and (msg := bounds.problem(f.name, getattr(cfg, f.name))) is not None:
            out.append(msg)
    return out


class Validated:
    """Base of every stage config: on construction, the declared constraints of every field
    (:func:`param`) and the class's cross-field ``checks()`` are collected into one
    :class:`ConfigError`, so a user fixes a config in one pass, before any data is read."""

    def __post_init__(self) -> None:
        problems = field_problems(self) + [msg for ok, msg in self.checks() if not ok]
        if problems:
            raise ConfigError("; ".join(problems))

    def checks(self) -> list[tuple[bool, str]]:
        """``(ok, message)`` pairs for constraints spanning fields or needing code (a model name)."""
        return []


def config_changes(saved: dict[str, Any], cfg: Any) -> list[str]:
    """The fields that differ between a config saved as JSON and ``cfg``, as ``"key: old -> new"``
    lines; fields in ``type(cfg).RESUMABLE_CHANGES`` are ignored, and a field the saved config lacks
    (written before the field existed) counts as the field's default. A path field
    (``type(cfg).PATH_FIELDS``) is the same when both name the same file from here (relative
    against absolute, through a link); when only paths differ, the last line says so."""
    ignore = getattr(type(cfg), "RESUMABLE_CHANGES", frozenset())
    paths = getattr(type(cfg), "PATH_FIELDS", frozenset())
    now = config_to_json(cfg)
    saved = with_defaults(saved, type(cfg))

    def same(k: str) -> bool:
        return saved.get(k) == now.get(k) or (k in paths and _real(saved.get(k)) == _real(now.get(k)))

    keys = sorted(k for k in set(saved) | set(now) if k not in ignore and not same(k))
    changes = [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys]
    if keys and set(keys) <= paths:
        changes.append(
            "only paths differ: if the run was moved or its inputs are addressed from another directory, "
            "and they are the same files, --restart retrains (or give the paths it was made with)"
        )
    return changes


def _real(value: Any) -> Any:
    """A path field's value with every path resolved (a list of paths too)."""
    if isinstance(value, str):
        return os.path.realpath(value) if value else value
    if isinstance(value, list):
        return [_real(v) for v in value]
    return value


# -- the parts every training stage's config is composed of -------------------------------------
# Flat composition (each stage's dataclass inherits the parts it uses), so TOML files and
# ``--set key=value`` keep one level of keys; a stage whose default differs re-declares the field
# with :func:`redefault`, keeping its constraint.

MAX_EPOCHS = 100_000  # beyond this a schedule's learning rate is ~0 for every epoch a run could reach
MAX_LR = 10.0  # far past any rate that trains; larger ones are typing mistakes
MAX_SEED = 2**63 - 1  # a signed 64-bit int, what torch, NumPy and a JSON reader elsewhere all take
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0  # beyond, z / T or T² leaves float32's range or drowns the soft term
DEVICES = "'auto', 'cpu' or 'cuda[:N]'"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimParts(Validated):
    """How long and how a stage optimises: epochs, batches, the optimiser and its schedule."""

    epochs: int = param(30, ge=1, le=MAX_EPOCHS)  # at most this many epochs (the schedule's length)
    patience: int = param(5, ge=0)  # stop after this many epochs without a better validation score; 0: never
    epoch_size: int = param(0, ge=0)  # examples per epoch; 0: the stage's own (a split's size, ...)
    batch_size: int = param(128, ge=1)
    optimizer: str = param("adamw", choices=("adamw", "sgd"))  # sgd: with Nesterov momentum
    lr: float = param(2e-3, gt=0, le=MAX_LR)  # peak learning rate
    momentum: float = param(0.9, ge=0)  # SGD only
    weight_decay: float = param(0.05, ge=0)
    schedule: str = param("cosine", choices=("cosine", "constant"))  # cosine: to zero, after linear warm-up
    warmup: float = param(0.05, ge=0, lt=1)  # fraction of all steps spent warming up linearly
    bn_batches: int = param(32, ge=0)  # batch norm recomputed over this many training batches each epoch; 0: off


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeviceParts(Validated):
    """Where a stage's models run and whether it may build code a run directory names: what
    every stage that loads a model takes (the clustering's pass, the training stages)."""

    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    trust_code: bool = False  # build models that loaded run directories name as code; never from a config file

    def checks(self) -> list[tuple[bool, str]]:
        return [
            *super().checks(),
            (
                self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"),
                f"device must be {DEVICES}, got {self.device!r}",
            ),
        ]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuntimeParts(DeviceParts):
    """How a training stage runs besides its device; none of it changes what is computed, so a
    run may resume with other values (:data:`RESUMABLE`)."""

    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    threads: int = param(0, ge=0)  # torch CPU threads; 0 leaves torch's default
    num_workers: int = param(0, ge=0)  # DataLoader workers decoding shards
    checkpoint_every: float = param(
        60.0, ge=0
    )  # seconds between resumable checkpoints (and after the last epoch); 0: every epoch
    seed: int = param(0, ge=0, le=MAX_SEED)

    RESUMABLE: typing.ClassVar[frozenset[str]] = frozenset(
        {"num_workers", "device", "threads", "checkpoint_every", "trust_code"}
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class SoftTargetParts(Validated):
    """The soft-target term of docs/method.md §1: its weight and temperature."""

    alpha: float = param(0.9, ge=0, le=1)  # weight of the soft term
    temperature: float = param(1.0, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE)  # T of the soft term

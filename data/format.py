"""The on-disk dataset format: WebDataset tar shards plus one ``dataset.json`` beside them.

A dataset directory holds, for each split (``train``, ``val``, ``test``), shards named
``<split>-000000.tar`` … and one ``dataset.json`` describing all of them::

    {
      "format": "specens.dataset", "format_version": 1,
      "name": "glyphs",
      "classes": ["a U+0061", ...],                  # index = label
      "groups": [[0, 5, 9], [1], ...] | null,        # known grouping of classes (a partition)
      "group_names": ["a", "b", ...] | null,
      "input": {"kind": "image", "encoding": "png", "shape": [1, 32, 32], "dtype": "uint8"},
      "splits": {"train": {"num_samples": 8000, "class_counts": [...],
                           "shards": [{"name": "train-000000.tar", "num_samples": 4000}, ...]}},
      "source": {...},          # importer name and arguments, for provenance
      "featurizer": {...} | null
    }

Each sample in a shard has a key without dots, ``<key>.cls`` (the integer label as text) and
``<key>.input.npy`` (an ``.npy`` array, never pickled) or ``<key>.input.png`` (an image).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from specens.core.errors import DataError

FORMAT = "specens.dataset"
FORMAT_VERSION = 1
INFO_FILE = "dataset.json"
INPUT_KINDS = {"image": "png", "array": "npy"}
DTYPES = ("uint8", "float32", "int64")


@dataclass(frozen=True)
class InputSpec:
    kind: str  # "image" (PNG, decoded to uint8 of shape (C, H, W)) or "array" (.npy)
    shape: tuple[int, ...]  # shape of one decoded input, e.g. (1, 32, 32) or (64,)
    dtype: str  # one of DTYPES: the dtype of one decoded input

    @property
    def encoding(self) -> str:
        return INPUT_KINDS[self.kind]

    @property
    def field(self) -> str:
        """The sample's field that holds the input, e.g. ``input.png``."""
        return f"input.{self.encoding}"


@dataclass(frozen=True)
class ShardInfo:
    name: str  # file name relative to the dataset directory
    num_samples: int


@dataclass(frozen=True)
class SplitInfo:
    shards: tuple[ShardInfo, ...]
    num_samples: int
    class_counts: tuple[int, ...]  # samples per class, length n_classes


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]
    input: InputSpec
    splits: dict[str, SplitInfo]
    groups: tuple[tuple[int, ...], ...] | None = None
    group_names: tuple[str, ...] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    featurizer: dict[str, Any] | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise DataError(f"{INFO_FILE}: no split {name!r}; it has {sorted(self.splits)}")
        return self.splits[name]

    def group_labels(self):
        """Known group index of every class, an int array of shape (n_classes,), or None."""
        if self.groups is None:
            return None
        import numpy as np

        labels = np.full(self.n_classes, -1, dtype=np.int64)
        for g, members in enumerate(self.groups):
            labels[list(members)] = g
        return labels

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["input"] = {
            "kind": self.input.kind,
            "encoding": self.input.encoding,
            "shape": list(self.input.shape),
            "dtype": self.input.dtype,
        }
        # A JSON round trip turns tuples into lists, as they are on disk.
        return json.loads(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **d}))

    @classmethod
    def from_json(cls, d: Any, where: str = INFO_FILE) -> DatasetInfo:
        """Validate a parsed ``dataset.json``; every problem is listed in one :class:`DataError`."""
        if not isinstance(d, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(d).__name__}")
        problems: list[str] = []
        if d.get("format") != FORMAT:
            problems.append(f"'format' is {d.get('format')!r}, expected {FORMAT!r}")
        if d.get("format_version") != FORMAT_VERSION or not isinstance(d.get("format_version"), int):
            got = d.get("format_version")
            kind = "" if isinstance(got, int) else f" (a {type(got).__name__})"
            problems.append(f"'format_version' is {got!r}{kind}; this specens reads version {FORMAT_VERSION}")
        classes = d.get("classes")
        if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
            problems.append("'classes' must be a non-empty list of strings")
            classes = []
        elif len(set(classes)) != len(classes):
            problems.append("'classes' has duplicate names")
        n = len(classes)
        kind, shape, dtype = _read_input(d.get("input"), problems)
        groups = d.get("groups")
        problems += _group_problems(groups, d.get("group_names"), n)
        for key, kinds in (("name", str), ("source", dict), ("featurizer", dict)):
            if d.get(key) is not None and not isinstance(d[key], kinds):
                problems.append(f"{key!r} must be a {kinds.__name__}, got {type(d[key]).__name__}")
        if set(d) - _KEYS:
            problems.append(f"unknown keys {sorted(set(d) - _KEYS)}")
        splits = _read_splits(d.get("splits"), n, problems)
        if problems:
            raise DataError(f"{where}: " + "; ".join(problems))
        return cls(
            name=str(d.get("name", "")),
            classes=tuple(classes),
            input=InputSpec(kind, tuple(shape), dtype),
            splits=splits,
            groups=None if groups is None else tuple(tuple(g) for g in groups),
            group_names=None if d.get("group_names") is None else tuple(d["group_names"]),
            source=dict(d.get("source") or {}),
            featurizer=d.get("featurizer"),
        )


_KEYS = {
    "format",
    "format_version",
    "name",
    "classes",
    "groups",
    "group_names",
    "input",
    "splits",
    "source",
    "featurizer",
}


def _read_input(inp: Any, problems: list[str]) -> tuple[str, list[int], str]:
    """``dataset.json``'s ``input`` as (kind, shape, dtype), its problems appended to ``problems``;
    a missing or malformed part is replaced by a placeholder so that the other checks still run."""
    if not isinstance(inp, dict):
        problems.append("'input' must be an object")
        inp = {}
    kind, shape, dtype = inp.get("kind"), inp.get("shape"), inp.get("dtype")
    kind = kind if isinstance(kind, str) else repr(kind)
    dtype = dtype if isinstance(dtype, str) else repr(dtype)
    if kind not in INPUT_KINDS:
        problems.append(f"'input.kind' is {kind!r}, expected one of {sorted(INPUT_KINDS)}")
    if not (isinstance(shape, list) and shape and all(isinstance(s, int) and s > 0 for s in shape)):
        problems.append(f"'input.shape' must be a list of positive ints, got {shape!r}")
        shape = [1]
    if dtype not in DTYPES:
        problems.append(f"'input.dtype' is {dtype!r}, expected one of {list(DTYPES)}")
    if inp.get("encoding", INPUT_KINDS.get(kind)) != INPUT_KINDS.get(kind):
        problems.append(
            f"'input.encoding' is {inp.get('encoding')!r}, but kind {kind!r} is stored as {INPUT_KINDS.get(kind)!r}"
        )
    if kind == "image" and (dtype != "uint8" or len(shape) != 3):
        problems.append("an 'image' input is uint8 of shape [channels, height, width]")
    return kind, shape, dtype


def _group_problems(groups: Any, names: Any, n: int) -> list[str]:
    """What is wrong with ``dataset.json``'s known grouping (``groups``, ``group_names``)."""
    problems = []
    if groups is None:
        return ["'group_names' given without 'groups'"] if names is not None else []
    ok = isinstance(groups, list) and all(isinstance(g, list) for g in groups)
    flat = [c for g in groups for c in g] if ok else None
    if flat is None or not all(isinstance(c, int) and 0 <= c < n for c in flat):
        problems.append(f"'groups' must be lists of class indices in [0, {n})")
    elif sorted(flat) != list(range(n)):
        problems.append("'groups' must cover every class exactly once")
    if names is not None and not (isinstance(names, list) and all(isinstance(x, str) for x in names)):
        problems.append("'group_names' must be a list of strings")
    elif names is not None and isinstance(groups, list) and len(names) != len(groups):
        problems.append(f"'group_names' has {len(names)} names for {len(groups)} groups")
    return problems


def _read_splits(raw: Any, n: int, problems: list[str]) -> dict[str, SplitInfo]:
    """``dataset.json``'s splits, each checked against itself and the ``n`` classes; every
    problem is appended to ``problems`` (a malformed split is left out)."""
    splits: dict[str, SplitInfo] = {}
    if not isinstance(raw, dict) or not raw:
        problems.append("'splits' must be a non-empty object")
        return splits
    for sname, s in raw.items():
        try:
            shards = tuple(ShardInfo(_name(x["name"]), _count(x["num_samples"])) for x in s["shards"])
            counts = tuple(_count(c) for c in s["class_counts"])
            total = _count(s["num_samples"])
        except (KeyError, TypeError, ValueError) as e:
            problems.append(f"'splits.{sname}' is malformed ({e!r})")
            continue
        if not shards:
            problems.append(f"'splits.{sname}.shards' is empty")
        if len(counts) != n:
            problems.append(f"'splits.{sname}.class_counts' has {len(counts)} entries for {n} classes")
        if sum(counts) != total:
            problems.append(f"'splits.{sname}.class_counts' sums to {sum(counts)}, not num_samples={total}")
        if sum(x.num_samples for x in shards) != total:
            problems.append(
                f"'splits.{sname}.shards' hold {sum(x.num_samples for x in shards)} samples, not num_samples={total}"
            )
        splits[sname] = SplitInfo(shards, total, counts)
    return splits


def _count(v: Any) -> int:
    """A count as dataset.json stores it: a non-negative int (not a bool, not a float)."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"expected a count (an int >= 0), got {v!r}")
    return v


def _name(v: Any) -> str:
    """A shard's file name: a plain name in the dataset directory, never a path out of it."""
    if not isinstance(v, str) or not v or "/" in v or "\\" in v or v in (".", "..") or v.startswith("."):
        raise ValueError(f"expected a shard file name, got {v!r}")
    return v


def load_info(root: str | os.PathLike) -> DatasetInfo:
    """Read and validate ``<root>/dataset.json`` and check that every listed shard exists.

    ``root`` may be a URL (:mod:`specens.data.remote`); its shards are then checked as they are
    read, each error naming the shard's URL.
    """
    from .remote import is_url, join, local_path, read_bytes

    if is_url(root):
        where = join(str(root), INFO_FILE)
        text = read_bytes(where).decode("utf-8", errors="replace")
    else:
        root = local_path(root)
        path = Path(root) / INFO_FILE
        where = str(path)
        if not path.is_file():
            raise DataError(
                f"{path}: missing; a dataset directory needs its {INFO_FILE} "
                "(an import that was interrupted writes it last)"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{where}: not UTF-8 text ({e})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e})") from None
    info = DatasetInfo.from_json(raw, where=where)
    if is_url(root):
        return info
    missing = [s.name for sp in info.splits.values() for s in sp.shards if not (Path(root) / s.name).is_file()]
    if missing:
        raise DataError(
            f"{where}: lists shards that do not exist: {', '.join(missing[:5])}" + (" …" if len(missing) > 5 else "")
        )
    return info

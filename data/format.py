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
import math
import os
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from specens.core.config import param
from specens.core.errors import CheckpointError, DataError
from specens.core.io import check_header
from specens.core.records import Record

FORMAT = "specens.dataset"
FORMAT_VERSION = 1
INFO_FILE = "dataset.json"
INPUT_KINDS = {"image": "png", "array": "npy"}
# Sizes a dataset.json states that a stage allocates from (a model's input layer, a text model's
# embedding table): a stranger's file stating more is refused, not allocated.
MAX_INPUT_ELEMENTS = 2**24  # one input's values (a 3 x 2048 x 2048 image is 12.6 M)
MAX_BUCKETS = 2**24  # hash buckets, each a row of a text model's embedding (the default is 2**18)
DTYPES = ("uint8", "float32", "int64")


@dataclass(frozen=True)
class InputSpec(Record):
    """``input``: the kind (``"image"``: PNG, decoded to uint8 of shape (C, H, W); ``"array"``:
    ``.npy``), the shape and dtype of one decoded input, and (on disk) the kind's encoding."""

    ERROR: ClassVar = DataError

    kind: str = param(choices=tuple(INPUT_KINDS))
    shape: tuple[int, ...] = param(ge=1)  # e.g. (1, 32, 32) or (64,)
    dtype: str = param(choices=DTYPES)

    @property
    def encoding(self) -> str:
        return INPUT_KINDS[self.kind]

    @property
    def field(self) -> str:
        """The sample's field that holds the input, e.g. ``input.png``."""
        return f"input.{self.encoding}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "encoding": self.encoding, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: Any, where: str) -> InputSpec:
        """The encoding on disk must be the kind's (it may be absent)."""
        encoding = data["encoding"] if isinstance(data, dict) and "encoding" in data else None
        if isinstance(data, dict):  # a copy: the caller's object is left as it was
            data = {k: v for k, v in data.items() if k != "encoding"}
        spec = super().from_json(data, where)
        if encoding is not None and encoding != spec.encoding:
            raise DataError(f"{where}.encoding is {encoding!r}, but kind {spec.kind!r} is stored as {spec.encoding!r}")
        return spec

    def checks(self) -> list[tuple[bool, str]]:
        image_ok = (
            self.kind != "image" or None in (self.dtype, self.shape) or (self.dtype == "uint8" and len(self.shape) == 3)
        )
        return [
            (self.shape is None or bool(self.shape), "'shape' must be a non-empty list of positive ints"),
            (
                self.shape is None or math.prod(self.shape) <= MAX_INPUT_ELEMENTS,
                f"'shape' {list(self.shape or ())} holds more than {MAX_INPUT_ELEMENTS} values per input",
            ),
            (image_ok, "an 'image' input is uint8 of shape [channels, height, width]"),
        ]


@dataclass(frozen=True)
class ShardInfo(Record):
    ERROR: ClassVar = DataError

    name: str  # file name relative to the dataset directory
    num_samples: int = param(ge=0)

    def checks(self) -> list[tuple[bool, str]]:
        ok = self.name is None or _is_shard_name(self.name)
        return [(ok, f"'name' {self.name!r:.60} is not a shard file name in the directory")]


@dataclass(frozen=True)
class SplitInfo(Record):
    ERROR: ClassVar = DataError

    shards: tuple[ShardInfo, ...]
    num_samples: int = param(ge=0)
    class_counts: tuple[int, ...] = param(ge=0)  # samples per class, length n_classes

    def checks(self) -> list[tuple[bool, str]]:
        if None in (self.shards, self.num_samples, self.class_counts):  # reported where it was read
            return [(bool(self.shards) or self.shards is None, "'shards' is empty")]
        held = sum(x.num_samples for x in self.shards if x is not None and x.num_samples is not None)
        total = self.num_samples
        return [
            (bool(self.shards), "'shards' is empty"),
            (
                sum(self.class_counts) == total,
                f"'class_counts' sum to {sum(self.class_counts)}, not num_samples={total}",
            ),
            (held == total, f"'shards' hold {held} samples, not num_samples={total}"),
        ]


@dataclass(frozen=True, kw_only=True)
class Featurizer(Record):
    """``featurizer``: how texts became the stored inputs (:mod:`specens.data.text`). ``kind``
    ``"hashed-ngrams"``: the hashing's settings (``buckets`` is what a model reads); ``"tokenizer"``:
    a transformers tokenizer, named by the SHA-256 of its ``tokenizer.json`` (``fingerprint``)."""

    ERROR: ClassVar = DataError

    kind: str = param(choices=("hashed-ngrams", "tokenizer"))
    buckets: int | None = param(None, ge=2, le=MAX_BUCKETS)
    max_tokens: int | None = param(None, ge=1)
    word_ngrams: int | None = param(None, ge=1)
    char_ngrams: int | None = param(None, ge=0)
    char_min: int | None = param(None, ge=1)
    unique: bool | None = None
    fingerprint: str | None = None
    max_length: int | None = param(None, ge=1)
    pad_token_id: int | None = param(None, ge=0)
    vocab_size: int | None = param(None, ge=1)
    source: str | None = None  # the model directory the tokenizer was read from

    def checks(self) -> list[tuple[bool, str]]:
        if self.kind == "hashed-ngrams":
            char_min_ok = not self.char_ngrams or self.char_min is None or 1 <= self.char_min <= self.char_ngrams
            return [
                (self.buckets is not None, "hashed n-grams need 'buckets'"),
                (char_min_ok, f"char_min must be in [1, char_ngrams={self.char_ngrams}], got {self.char_min}"),
            ]
        return [(bool(self.fingerprint), "a tokenizer needs its 'fingerprint'")]


@dataclass(frozen=True, kw_only=True)
class DatasetInfo(Record):
    """``dataset.json`` (the module docstring): read by :func:`load_info`, every problem listed in
    one :class:`DataError`."""

    ARTIFACT: ClassVar = (FORMAT, FORMAT_VERSION)
    ERROR: ClassVar = DataError

    name: str = ""
    classes: tuple[str, ...]
    input: InputSpec
    splits: dict[str, SplitInfo]
    groups: tuple[tuple[int, ...], ...] | None = None  # a known partition of the classes
    group_names: tuple[str, ...] | None = None
    source: dict[str, Any] = field(default_factory=dict)  # the importer and its arguments (provenance)
    featurizer: Featurizer | None = None  # how text became inputs (data.text), None for others

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str, where: str | os.PathLike = INFO_FILE) -> SplitInfo:
        """The split ``name``; a missing one is refused naming ``where`` (the file read)."""
        if name not in self.splits:
            raise DataError(f"{where}: no split {name!r}; it has {sorted(self.splits)}")
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
        """``dataset.json``: its header, then every field (null where there is none)."""
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        body.update(input=self.input.to_json(), splits={k: v.to_json() for k, v in self.splits.items()})
        body.update(featurizer=None if self.featurizer is None else self.featurizer.to_json())
        # A JSON round trip turns tuples into lists, as they are on disk.
        return json.loads(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **body}))

    @classmethod
    def from_json(cls, d: Any, where: str = INFO_FILE) -> DatasetInfo:
        """Validate a parsed ``dataset.json``: the header (:func:`~specens.core.io.check_header`),
        then the fields; every problem is listed in one :class:`DataError`."""
        try:
            check_header(d, where, FORMAT, FORMAT_VERSION)
        except CheckpointError as e:
            raise DataError(str(e)) from None
        optional = {f.name for f in fields(cls) if f.default is not MISSING or f.default_factory is not MISSING}
        info = super().from_json({k: v for k, v in d.items() if v is not None or k not in optional}, where)
        if info.groups is not None:
            info = replace(info, groups=tuple(tuple(g) for g in info.groups))
        return info

    def checks(self) -> list[tuple[bool, str]]:
        n = len(self.classes or ())
        problems = [
            (n > 0, "'classes' must be a non-empty list of strings"),
            (len(set(self.classes or ())) == n, "'classes' has duplicate names"),
            (self.splits is None or bool(self.splits), "'splits' must be a non-empty object"),
        ]
        for name, sp in (self.splits or {}).items():
            if sp is not None and sp.class_counts is not None and len(sp.class_counts) != n:
                problems.append(
                    (False, f"'splits'.{name}.class_counts has {len(sp.class_counts)} entries for {n} classes")
                )
        return problems + [(False, p) for p in _group_problems(self.groups, self.group_names, n)]


def _is_shard_name(v: str) -> bool:
    """A plain file name in the dataset directory, never a path out of it."""
    return bool(v) and "/" not in v and "\\" not in v and v not in (".", "..") and not v.startswith(".")


def _group_problems(groups: Any, names: Any, n: int) -> list[str]:
    """What is wrong with ``dataset.json``'s known grouping (``groups``, ``group_names``)."""
    problems = []
    if groups is None:
        return ["'group_names' given without 'groups'"] if names is not None else []
    ok = isinstance(groups, list | tuple) and all(isinstance(g, list | tuple) for g in groups)
    flat = [c for g in groups for c in g] if ok else None
    if flat is None or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < n for c in flat):
        problems.append(f"'groups' must be lists of class indices in [0, {n})")
    elif sorted(flat) != list(range(n)):
        problems.append("'groups' must cover every class exactly once")
    if names is not None and not (isinstance(names, list | tuple) and all(isinstance(x, str) for x in names)):
        problems.append("'group_names' must be a list of strings")
    elif names is not None and isinstance(groups, list | tuple) and len(names) != len(groups):
        problems.append(f"'group_names' has {len(names)} names for {len(groups)} groups")
    return problems


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

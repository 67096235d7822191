"""Text datasets: rows of (text, class) featurised into a dataset directory
(:func:`write_text_dataset`, which the CLINC150 and Banking77 importers use too), and users' own
CSV, TSV and JSON Lines tables of text, label and optional group columns (:func:`read_table`,
:func:`read_text_splits`, :func:`import_text`)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specens.core.errors import DataError

from .format import InputSpec
from .splitting import three_way_split
from .text import HashedNgrams, Tokenized
from .writer import write_splits

DEFAULT_FEATURIZER = HashedNgrams()  # frozen: one shared default is safe


def write_text_dataset(
    out,
    name,
    classes,
    splits_text,
    featurizer: HashedNgrams | Tokenized,
    groups=None,
    group_names=None,
    source=None,
    shard_size=10_000,
):
    """A text dataset: each split's ``(text, class name)`` rows featurised into token ids (hashed
    n-grams, or a transformers tokenizer's ids and attention mask)."""
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split, rows in splits_text.items():
        texts = [t for t, _ in rows]
        labels = np.array([index[c] for _, c in rows], dtype=np.int64)
        splits[split] = ((lambda i, texts=texts: featurizer(texts[i])), labels)
    shape = featurizer.shape if isinstance(featurizer, Tokenized) else (featurizer.max_tokens,)
    spec = InputSpec("array", shape, "int64")
    write_splits(
        out,
        name,
        classes,
        spec,
        splits,
        groups=groups,
        group_names=group_names,
        source=source,
        featurizer=featurizer.to_json(),
        shard_size=shard_size,
    )


@dataclass(frozen=True)
class Row:
    """One example of a text table; ``where`` is ``file:line`` for error messages."""

    text: str
    label: str
    group: str | None
    where: str


_TABLE_KINDS = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".ndjson": None}


def read_table(
    path: str | Path, text: str = "text", label: str = "label", group: str | None = None, encoding: str = "utf-8"
) -> list[Row]:
    """The rows of a CSV, TSV (header line first) or JSON Lines file (one object a line), by suffix.

    ``text``, ``label`` and ``group`` name the columns (fields); integer labels in JSON Lines are
    read as their decimal text. Every problem raises a :class:`DataError` naming ``file:line``: a
    missing column, a malformed line, an empty text, label or group, bytes that are not
    ``encoding``. Blank lines are skipped.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _TABLE_KINDS:
        raise DataError(
            f"{path}: unknown table format {suffix or '(no suffix)'!r}: expected .csv, .tsv, .jsonl or .ndjson"
        )
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    codec = "utf-8-sig" if encoding.lower().replace("-", "").replace("_", "") == "utf8" else encoding
    try:
        content = raw.decode(codec)
    except LookupError:
        raise DataError(f"{path}: unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid {encoding} (byte 0x{raw[e.start]:02x}); convert the file to "
            f"{encoding} or give its encoding"
        ) from None
    columns = [c for c in (text, label, group) if c is not None]
    records = (
        _csv_records(path, content, _TABLE_KINDS[suffix], columns)
        if _TABLE_KINDS[suffix]
        else _jsonl_records(path, content, columns)
    )
    rows = []
    for line, rec in records:
        where = f"{path}:{line}"
        values = {}
        for role, col in (("text", text), ("label", label), ("group", group)):
            if col is None:
                continue
            v = rec[col]
            if isinstance(v, int) and not isinstance(v, bool) and role != "text":
                v = str(v)
            if not isinstance(v, str):
                raise DataError(f"{where}: {role} {col!r} is {type(v).__name__} {v!r}, expected a string")
            if not v.strip():
                raise DataError(f"{where}: empty {role} in column {col!r}")
            values[role] = v if role == "text" else v.strip()
        rows.append(Row(values["text"], values["label"], values.get("group"), where))
    if not rows:
        raise DataError(f"{path}: no examples")
    return rows


def _csv_records(path: Path, content: str, delimiter: str, columns: list[str]):
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty (expected a header line naming the columns)")
        header = [h.strip() for h in header]
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{path}:1: no column {missing[0]!r} (the header has {header})")
        at = {c: header.index(c) for c in columns}
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1  # a quoted field may span lines: report the first
            if not row or row == [""]:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
            yield line, {c: row[i] for c, i in at.items()}
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed ({e})") from None


def _jsonl_records(path: Path, content: str, columns: list[str]):
    for line, text in enumerate(content.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not text.strip():
            continue
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{line}: not valid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{line}: expected a JSON object, got {type(rec).__name__}")
        missing = [c for c in columns if c not in rec]
        if missing:
            raise DataError(f"{path}:{line}: no field {missing[0]!r} (the object has {sorted(rec)})")
        yield line, rec


def _class_order(labels) -> list[str]:
    """Sorted class names; numerically when every label is an integer."""
    labels = set(labels)
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def read_text_splits(
    train: str,
    val: str | None = None,
    test: str | None = None,
    text: str = "text",
    label: str = "label",
    group: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    encoding: str = "utf-8",
):
    """Users' text tables as ``(classes, {split: [Row]}, groups, group_names)``.

    Classes are the training file's labels. A split without its own file is carved from the
    training file, stratified and seeded (``val_fraction`` / ``test_fraction`` of it; a fraction
    of 0 leaves the split out). A label of the validation or test file that training never saw is
    an error, as is a label given two groups; ``groups`` (class indices per group, groups sorted by
    name) is None without a group column.
    """

    def read(p):
        return read_table(p, text, label, group, encoding)

    rows = read(train)
    classes = _class_order(r.label for r in rows)
    index = {c: i for i, c in enumerate(classes)}
    of: dict[str, Row] = {}  # label -> its first row, whose group every other row of the label must share

    def check(part: list[Row]) -> list[Row]:
        for r in part:
            if r.label not in index:
                raise DataError(
                    f"{r.where}: label {r.label!r} is not in the training data ({train}); "
                    "every class needs training examples"
                )
            first = of.setdefault(r.label, r)
            if first.group != r.group:
                raise DataError(
                    f"{r.where}: label {r.label!r} in group {r.group!r}, but in group {first.group!r} at {first.where}"
                )
        return part

    check(rows)
    y = np.array([index[r.label] for r in rows])
    carved = three_way_split(y, 0.0 if val else val_fraction, 0.0 if test else test_fraction, seed, str(train))
    splits = {"train": [rows[i] for i in carved["train"]]}
    for name, given in (("val", val), ("test", test)):
        if given:
            splits[name] = check(read(given))
        elif len(carved[name]):
            splits[name] = [rows[i] for i in carved[name]]
    if group is None:
        return classes, splits, None, None
    names = sorted({r.group for r in of.values()})
    groups = [sorted(index[c] for c, r in of.items() if r.group == g) for g in names]
    return classes, splits, groups, names


def import_text(
    train: str,
    out: str,
    val: str | None = None,
    test: str | None = None,
    text: str = "text",
    label: str = "label",
    group: str | None = None,
    featurizer: HashedNgrams = DEFAULT_FEATURIZER,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    encoding: str = "utf-8",
    name: str | None = None,
    shard_size: int = 10_000,
) -> None:
    """A dataset from users' own CSV / TSV / JSON Lines files (:func:`read_text_splits`), featurised
    like CLINC150 and Banking77; the group column, when given, becomes the known groups."""
    classes, splits, groups, names = read_text_splits(
        train, val, test, text, label, group, val_fraction, test_fraction, seed, encoding
    )
    source = dict(
        importer="text",
        train=str(train),
        val=val and str(val),
        test=test and str(test),
        text=text,
        label=label,
        group=group,
        val_fraction=None if val else val_fraction,
        test_fraction=None if test else test_fraction,
        seed=seed,
        encoding=encoding,
    )
    write_text_dataset(
        out,
        name or Path(out).name,
        classes,
        {k: [(r.text, r.label) for r in v] for k, v in splits.items()},
        featurizer,
        groups=groups,
        group_names=names,
        source=source,
        shard_size=shard_size,
    )

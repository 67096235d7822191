"""Importers from the real datasets' original files and from users' own data layouts.

Each writes a dataset directory (train/val/test shards and ``dataset.json``); see
``../shared/data/README.md`` for where the real datasets come from.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import train_test_split

from specens.core.errors import DataError

from .format import InputSpec
from .shards import DatasetWriter
from .text import HashedNgrams

DEFAULT_FEATURIZER = HashedNgrams()  # frozen: one shared default is safe


def _split_indices(y: np.ndarray, fraction: float, seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split by scikit-learn: sorted (rest, held_out) index arrays with
    ``fraction`` of the examples held out in the classes' proportions. ``where`` names the source
    in the error raised when the classes are too small to stratify."""
    idx = np.arange(len(y))
    if fraction <= 0:
        return idx, idx[:0]
    try:
        rest, held = train_test_split(idx, test_size=fraction, stratify=y, random_state=seed)
    except ValueError as e:  # a class with one example, or fewer held-out examples than classes
        raise DataError(
            f"{where}: cannot hold out a stratified {fraction:g} of {len(y)} examples in "
            f"{len(np.unique(y))} classes ({e})"
        ) from None
    return np.sort(rest), np.sort(held)


def _write_splits(out, name, classes, spec, splits: dict[str, tuple[np.ndarray, np.ndarray]], **kw):
    """Write {split: (inputs, labels)}; inputs is an array or a callable index -> input."""
    with DatasetWriter(out, name, classes, spec, **kw) as w:
        for split, (xs, ys) in splits.items():
            with w.split(split) as s:
                for i in range(len(ys)):
                    s.write(f"{split}_{i:08d}", xs(i) if callable(xs) else xs[i], int(ys[i]))


# ----------------------------------------------------------------------------- MNIST-like idx files


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (``.gz`` or plain) of unsigned bytes: images (N, H, W) or labels (N,)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
    if len(data) < 8 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{path}: not an idx file of unsigned bytes")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims}, but holds {body.size} values (truncated?)")
    return body.reshape(dims)


def import_idx(
    source: str,
    out: str,
    name: str,
    classes: Sequence[str],
    val_size: int = 5000,
    seed: int = 0,
    shard_size: int = 10_000,
) -> None:
    """MNIST-format data: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` in ``source``.

    The last ``val_size`` training images become the validation split.
    """

    def load(prefix):
        src = Path(source)
        found = {}
        for kind, tag in (("images", "idx3"), ("labels", "idx1")):
            cands = [src / f"{prefix}-{kind}-{tag}-ubyte.gz", src / f"{prefix}-{kind}-{tag}-ubyte"]
            path = next((p for p in cands if p.is_file()), None)
            if path is None:
                raise DataError(f"{cands[0]}: missing (nor the uncompressed file)")
            found[kind] = read_idx(path)
        x, y = found["images"], found["labels"]
        if len(x) != len(y):
            raise DataError(f"{source}: {prefix} has {len(x)} images but {len(y)} labels")
        if y.max() >= len(classes):
            raise DataError(f"{source}: {prefix} labels reach {y.max()}, expected < {len(classes)}")
        return x[:, None], y  # images as (N, 1, H, W)

    xtr, ytr = load("train")
    xte, yte = load("t10k")
    n_tr = len(ytr) - val_size
    splits = {"train": (xtr[:n_tr], ytr[:n_tr]), "val": (xtr[n_tr:], ytr[n_tr:]), "test": (xte, yte)}
    if val_size == 0:
        del splits["val"]
    spec = InputSpec("image", tuple(xtr.shape[1:]), "uint8")
    _write_splits(
        out,
        name,
        classes,
        spec,
        splits,
        source=dict(importer=name, source=str(source), val_size=val_size),
        shard_size=shard_size,
    )


MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


# ----------------------------------------------------------------------------- text intents


def _import_text(
    out,
    name,
    classes,
    splits_text,
    featurizer: HashedNgrams,
    groups=None,
    group_names=None,
    source=None,
    shard_size=10_000,
):
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split, rows in splits_text.items():
        texts = [t for t, _ in rows]
        labels = np.array([index[c] for _, c in rows], dtype=np.int64)
        splits[split] = ((lambda i, texts=texts: featurizer(texts[i])), labels)
    spec = InputSpec("array", (featurizer.max_tokens,), "int64")
    _write_splits(
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


def read_clinc150(source: str) -> tuple[list[str], dict[str, list[tuple[str, str]]], list[list[int]], list[str]]:
    """CLINC150's in-scope examples from ``data_full.json`` (+ ``domains.json``): the class names
    (sorted intents), ``{split: [(text, intent)]}`` for train/val/test, and the 10 domains as
    groups of class indices with their names. The out-of-scope examples are left out."""
    src = Path(source)
    try:
        data = json.loads((src / "data_full.json").read_text())
        domains = json.loads((src / "domains.json").read_text())
    except FileNotFoundError as e:
        raise DataError(f"{e.filename}: missing") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{src}: not valid JSON ({e})") from None
    for key in ("train", "val", "test"):
        if key not in data:
            raise DataError(f"{src / 'data_full.json'}: no {key!r} list")
    classes = sorted({c for _, c in data["train"]})
    index = {c: i for i, c in enumerate(classes)}
    names = sorted(domains)
    unknown = sorted({c for d in names for c in domains[d]} - set(classes))
    if unknown:
        raise DataError(f"{src / 'domains.json'}: intents not in the training data: {unknown[:5]}")
    groups = [sorted(index[c] for c in domains[d]) for d in names]
    return classes, {k: [(t, c) for t, c in data[k]] for k in ("train", "val", "test")}, groups, names


def import_clinc150(
    source: str, out: str, featurizer: HashedNgrams = DEFAULT_FEATURIZER, shard_size: int = 10_000
) -> None:
    """CLINC150 (:func:`read_clinc150`) as a dataset whose known groups are the 10 domains."""
    classes, splits, groups, names = read_clinc150(source)
    _import_text(
        out,
        "clinc150",
        classes,
        splits,
        featurizer,
        groups=groups,
        group_names=names,
        source=dict(importer="clinc150", source=str(source)),
        shard_size=shard_size,
    )


def read_banking77(
    source: str, val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[str], dict[str, list[tuple[str, str]]]]:
    """Banking77 from ``train.csv``/``test.csv`` (+ ``categories.json``): the class names and
    ``{split: [(text, category)]}``, a stratified ``val_fraction`` of train held out as val."""
    src = Path(source)
    train, test = (
        [(r.text, r.label) for r in read_table(src / name, "text", "category")] for name in ("train.csv", "test.csv")
    )
    cats = src / "categories.json"
    classes = json.loads(cats.read_text()) if cats.is_file() else sorted({c for _, c in train})
    unknown = sorted({c for _, c in train + test} - set(classes))
    if unknown:
        raise DataError(f"{src}: categories not in categories.json: {unknown[:5]}")
    y = np.array([classes.index(c) for _, c in train])
    rest, held = _split_indices(y, val_fraction, seed, str(src / "train.csv"))
    return classes, {"train": [train[i] for i in rest], "val": [train[i] for i in held], "test": test}


def import_banking77(
    source: str,
    out: str,
    featurizer: HashedNgrams = DEFAULT_FEATURIZER,
    val_fraction: float = 0.1,
    seed: int = 0,
    shard_size: int = 10_000,
) -> None:
    """Banking77 (:func:`read_banking77`) as a dataset; no known groups."""
    classes, splits = read_banking77(source, val_fraction, seed)
    _import_text(
        out,
        "banking77",
        classes,
        splits,
        featurizer,
        source=dict(importer="banking77", source=str(source), val_fraction=val_fraction, seed=seed),
        shard_size=shard_size,
    )


# ----------------------------------------------------------------------------- users' own layouts


def import_folder(
    source: str,
    out: str,
    size: int | None = None,
    grayscale: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    shard_size: int = 10_000,
) -> None:
    """Images in ``source/<class>/<file>.png|jpg|jpeg``; classes are the folder names, sorted.

    All images must share one size unless ``size`` resizes them to ``size``×``size``. Stratified
    seeded splits of ``val_fraction`` and ``test_fraction``.
    """
    src = Path(source)
    classes = sorted(p.name for p in src.iterdir() if p.is_dir()) if src.is_dir() else []
    if not classes:
        raise DataError(f"{src}: expected one sub-folder of images per class")
    files, labels = [], []
    for c, name in enumerate(classes):
        for f in sorted((src / name).iterdir()):
            if f.suffix.lower() in (".png", ".jpg", ".jpeg"):
                files.append(f)
                labels.append(c)
    if not files:
        raise DataError(f"{src}: no .png/.jpg/.jpeg files in its class folders")

    def load(i: int) -> np.ndarray:
        try:
            with Image.open(files[i]) as img:
                img = img.convert("L" if grayscale else "RGB")
                if size:
                    img = img.resize((size, size), Image.Resampling.BILINEAR)
                x = np.asarray(img)
        except OSError as e:
            raise DataError(f"{files[i]}: cannot be read as an image ({e})") from None
        x = x[None] if x.ndim == 2 else np.transpose(x, (2, 0, 1))
        if shape is not None and x.shape != shape:
            raise DataError(f"{files[i]}: image is {list(x.shape)}, others are {list(shape)}; pass size= to resize")
        return x

    shape = None
    shape = load(0).shape  # the first image fixes the shape every other must have
    y = np.array(labels)
    splits = _three_way(y, val_fraction, test_fraction, seed, str(src))
    _write_splits(
        out,
        src.name,
        classes,
        InputSpec("image", shape, "uint8"),
        {k: ((lambda i, idx=idx: load(int(idx[i]))), y[idx]) for k, idx in splits.items()},
        source=dict(importer="folder", source=str(source), size=size, grayscale=grayscale, seed=seed),
        shard_size=shard_size,
    )


def _three_way(y, val_fraction, test_fraction, seed, where: str) -> dict[str, np.ndarray]:
    rest, test = _split_indices(y, test_fraction, seed, where)
    inner_train, inner_val = _split_indices(y[rest], val_fraction / max(1e-9, 1 - test_fraction), seed + 1, where)
    return {"train": rest[inner_train], "val": rest[inner_val], "test": test}


def import_arrays(
    x_path: str,
    y_path: str,
    out: str,
    classes: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    shard_size: int = 10_000,
) -> None:
    """``x.npy`` (N, ...) float or integer inputs and ``y.npy`` (N,) integer labels."""
    try:
        x = np.load(x_path, allow_pickle=False, mmap_mode="r")
        y = np.load(y_path, allow_pickle=False)
    except FileNotFoundError as e:
        raise DataError(f"{e.filename}: missing") from None
    except ValueError as e:
        raise DataError(f"{x_path} / {y_path}: not plain .npy arrays ({e})") from None
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{y_path}: labels must be a 1-d integer array, got {y.dtype}{list(y.shape)}")
    if len(x) != len(y):
        raise DataError(f"{x_path} has {len(x)} rows but {y_path} has {len(y)} labels")
    if x.dtype.kind == "f":
        dtype = "float32"
        bad = np.flatnonzero(~np.isfinite(np.asarray(x)).reshape(len(x), -1).all(1))
        if len(bad):
            raise DataError(f"{x_path}: row {bad[0]} has non-finite values ({len(bad)} rows in all)")
    elif x.dtype.kind in "iu":
        dtype = "int64"
    else:
        raise DataError(f"{x_path}: inputs must be float or integer, got {x.dtype}")
    n_classes = int(y.max()) + 1
    classes = list(classes) if classes is not None else [str(c) for c in range(n_classes)]
    if y.min() < 0 or n_classes > len(classes):
        raise DataError(f"{y_path}: labels span [{y.min()}, {y.max()}], outside [0, {len(classes)})")
    splits = _three_way(y, val_fraction, test_fraction, seed, str(y_path))
    _write_splits(
        out,
        Path(x_path).stem,
        classes,
        InputSpec("array", tuple(x.shape[1:]), dtype),
        {k: ((lambda i, idx=idx: np.asarray(x[idx[i]], dtype=dtype)), y[idx]) for k, idx in splits.items()},
        source=dict(importer="arrays", x=str(x_path), y=str(y_path), seed=seed),
        shard_size=shard_size,
    )


# ----------------------------------------------------------------------------- users' own text


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
    carved = _three_way(y, 0.0 if val else val_fraction, 0.0 if test else test_fraction, seed, str(train))
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
    _import_text(
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

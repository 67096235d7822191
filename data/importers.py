"""Importers from the real datasets' original files and from users' own data layouts.

Each writes a dataset directory (train/val/test shards and ``dataset.json``); docs/data.md says
where the real datasets come from and which files each importer reads.
"""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from specens.core.errors import DataError
from specens.core.io import check_outside_inputs

from .format import InputSpec
from .splitting import stratified_split, three_way_split
from .tables import DEFAULT_FEATURIZER, read_table, write_text_dataset
from .text import HashedNgrams
from .writer import write_splits

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
    check_outside_inputs(out, "--out", source=source)

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
    write_splits(
        out,
        name,
        classes,
        spec,
        splits,
        source=dict(importer=name, source=str(source), val_size=val_size),
        shard_size=shard_size,
        shuffle=False,  # the idx files are in random order already (and the MNIST figures were measured so)
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
    check_outside_inputs(out, "--out", source=source)
    classes, splits, groups, names = read_clinc150(source)
    write_text_dataset(
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
    rest, held = stratified_split(y, val_fraction, seed, str(src / "train.csv"))
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
    check_outside_inputs(out, "--out", source=source)
    classes, splits = read_banking77(source, val_fraction, seed)
    write_text_dataset(
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
    grayscale: bool | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    shard_size: int = 10_000,
) -> None:
    """Images in ``source/<class>/<file>.png|jpg|jpeg``; classes are the folder names, sorted.

    All images must share one size unless ``size`` resizes them to ``size``×``size``. One channel
    (``grayscale``) or three; None: one when every image is stored greyscale (a three-channel copy
    of grey pixels triples the input and the first layer's cost for nothing). Stratified seeded
    splits of ``val_fraction`` and ``test_fraction``.
    """
    check_outside_inputs(out, "--out", source=source)
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
    if grayscale is None:
        grayscale = all(_stored_grey(f) for f in files)

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
    splits = three_way_split(y, val_fraction, test_fraction, seed, str(src))
    write_splits(
        out,
        src.name,
        classes,
        InputSpec("image", shape, "uint8"),
        {k: ((lambda i, idx=idx: load(int(idx[i]))), y[idx]) for k, idx in splits.items()},
        source=dict(importer="folder", source=str(source), size=size, grayscale=grayscale, seed=seed),
        shard_size=shard_size,
    )


GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # PIL modes of one-channel images


def _stored_grey(path: Path) -> bool:
    """Whether the image file holds one channel (its header only is read)."""
    try:
        with Image.open(path) as img:
            return img.mode in GREY_MODES
    except OSError as e:
        raise DataError(f"{path}: cannot be read as an image ({e})") from None


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a UTF-8 text file, one a line (blank lines skipped): refused in one line
    naming the file when it is not UTF-8, names no class, or names one twice."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); class names are one a line") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    names = [line for line in text.splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: names no class (class names are one a line)")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise DataError(f"{path}: class name {name!r} is given twice (names {seen[name] + 1} and {i + 1})")
        seen[name] = i
    return names


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
    if not len(y):
        raise DataError(f"{y_path}: no labels (an empty array); there is nothing to import")
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
    named = f" ({len(classes)} class names given)" if classes is not None else ""
    classes = list(classes) if classes is not None else [str(c) for c in range(n_classes)]
    if y.min() < 0 or n_classes > len(classes):
        raise DataError(f"{y_path}: labels span [{y.min()}, {y.max()}], outside [0, {len(classes)}){named}")
    splits = three_way_split(y, val_fraction, test_fraction, seed, str(y_path))
    write_splits(
        out,
        Path(x_path).stem,
        classes,
        InputSpec("array", tuple(x.shape[1:]), dtype),
        {k: ((lambda i, idx=idx: np.asarray(x[idx[i]], dtype=dtype)), y[idx]) for k, idx in splits.items()},
        source=dict(importer="arrays", x=str(x_path), y=str(y_path), seed=seed),
        shard_size=shard_size,
    )

"""Writing a dataset directory of WebDataset shards in the format of :mod:`specens.data.format`.

Writing is atomic: a dataset is built in a hidden sibling of its directory (shards under hidden
temporary names until closed, ``dataset.json`` last) and published in one rename, so a crashed or
failed import leaves the directory as it was, an earlier dataset there included.
:mod:`specens.data.shards` reads what this writes.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from specens.core.errors import DataError
from specens.core.io import check_target, flocked, replace_dir, temp_sibling, temp_suffix, write_json_atomic

from .format import INFO_FILE, DatasetInfo, Featurizer, InputSpec, ShardInfo, SplitInfo

_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


# ----------------------------------------------------------------------------- encoding


def encode_input(x: np.ndarray, spec: InputSpec) -> bytes:
    """Encode one input array of shape ``spec.shape`` as PNG or ``.npy`` bytes."""
    buf = io.BytesIO()
    if spec.kind == "image":
        c = x.shape[0]
        img = x[0] if c == 1 else np.transpose(x, (1, 2, 0))  # (C, H, W) -> (H, W[, C])
        Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=6)
    else:
        np.save(buf, np.ascontiguousarray(x), allow_pickle=False)
    return buf.getvalue()


# ----------------------------------------------------------------------------- writing


def sample_record(key: str, x: np.ndarray, label: int, spec: InputSpec) -> dict:
    """One sample as WebDataset writes it: ``__key__``, ``cls`` and the encoded input field."""
    return {"__key__": key, "cls": str(int(label)).encode(), spec.field: encode_input(x, spec)}


class _SplitWriter:
    """Writes one split's shards; use through :meth:`DatasetWriter.split`."""

    def __init__(self, parent: DatasetWriter, split: str):
        self.parent, self.split = parent, split
        self.shards: list[ShardInfo] = []
        self.class_counts = np.zeros(len(parent.classes), dtype=np.int64)
        self._in_shard = 0
        root = str(parent.build_dir).replace("%", "%%")
        self._suffix = temp_suffix()  # ShardWriter numbers its files itself: one token per writer
        self._writer = wds.ShardWriter(
            f"{root}/.{split}-%06d.tar{self._suffix}",
            maxcount=parent.shard_size,
            post=self._finish_shard,
            verbose=0,
            mtime=0,  # an int: a float mtime gives every member a pax header, doubling small shards
        )

    def _finish_shard(self, partial: str) -> None:
        partial = Path(partial)
        if self._in_shard == 0:  # ShardWriter opens its first shard eagerly
            partial.unlink()
            return
        final = partial.with_name(partial.name[1:].removesuffix(self._suffix))
        os.replace(partial, final)
        self.shards.append(ShardInfo(final.name, self._in_shard))
        self._in_shard = 0

    def write(self, key: str, x: np.ndarray, label: int) -> None:
        """Write one sample. ``x`` has the dataset's input shape and dtype."""
        p, spec = self.parent, self.parent.input
        if not _KEY.match(key):
            raise DataError(f"sample key {key!r}: keys may hold only letters, digits, '_' and '-'")
        if not 0 <= int(label) < len(p.classes):
            raise DataError(f"sample {key!r}: label {label} outside [0, {len(p.classes)})")
        if tuple(x.shape) != spec.shape or x.dtype != np.dtype(spec.dtype):
            raise DataError(
                f"sample {key!r}: input {x.dtype}{list(x.shape)} does not match the "
                f"dataset's {spec.dtype}{list(spec.shape)}"
            )
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise DataError(f"sample {key!r}: input has non-finite values")
        self._writer.write(sample_record(key, x, label, spec))
        self._in_shard += 1
        self.class_counts[int(label)] += 1

    def _close(self, ok: bool) -> None:
        if ok:
            self._writer.close()
            self.parent._splits[self.split] = SplitInfo(
                tuple(self.shards), int(self.class_counts.sum()), tuple(int(c) for c in self.class_counts)
            )
        else:  # abandon the open shard: it must never look complete
            stream = self._writer.tarstream
            if stream is not None:
                stream.close()
                Path(self._writer.fname).unlink(missing_ok=True)

    def __enter__(self) -> _SplitWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        self._close(exc_type is None)


DATASET_FILES = (INFO_FILE, "*-[0-9][0-9][0-9][0-9][0-9][0-9].tar")  # what a dataset directory holds


def _drop_leftovers(root: Path, keep: Path) -> None:
    """Remove what killed imports into ``root`` left beside it (their hidden build folders, an old
    dataset renamed aside); called holding the import lock, so no live import owns them."""
    for pattern in (f".{glob.escape(root.name)}.*.tmp", f".{glob.escape(root.name)}.*.old"):
        for p in root.parent.glob(pattern):
            if p != keep and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)


class DatasetWriter:
    """Writes a dataset directory: shards per split, then ``dataset.json``.

    Everything is written into a hidden sibling of ``root`` and published in one rename when the
    writer closes without error, replacing an earlier dataset there; on any error the temporary is
    removed and ``root`` is exactly as it was. A ``root`` that holds anything but a dataset's own
    files (``dataset.json`` and shards) is refused (:func:`specens.core.io.check_target`).

    Example::

        with DatasetWriter(root, "mine", classes, InputSpec("array", (64,), "float32")) as w:
            with w.split("train") as s:
                for i, (x, y) in enumerate(zip(xs, ys)):
                    s.write(f"{i:08d}", x, y)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        name: str,
        classes: Sequence[str],
        input: InputSpec,
        *,
        groups: Sequence[Sequence[int]] | None = None,
        group_names: Sequence[str] | None = None,
        source: dict | None = None,
        featurizer: dict | None = None,
        shard_size: int = 10_000,
    ):
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {shard_size}")
        self.root = Path(os.path.realpath(root))  # a link to a dataset directory: that directory is replaced
        check_target(self.root, DATASET_FILES, "a dataset directory", INFO_FILE)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self._held = contextlib.ExitStack()  # the import's lock, until close or abandon
        lock = self.root.parent / f".{self.root.name}.lock.tmp"
        self._held.enter_context(flocked(lock, f"{self.root}: another import is writing it now", remove=True))
        _drop_leftovers(self.root, keep=lock)
        self.build_dir = temp_sibling(self.root)  # where the shards go until the dataset is complete
        self.build_dir.mkdir()
        self.name, self.classes, self.input = name, tuple(classes), input
        self.groups, self.group_names = groups, group_names
        self.source, self.featurizer, self.shard_size = source or {}, featurizer, shard_size
        self._splits: dict[str, SplitInfo] = {}

    def split(self, split: str) -> _SplitWriter:
        if split in self._splits:
            raise ValueError(f"split {split!r} was already written")
        return _SplitWriter(self, split)

    def close(self) -> DatasetInfo:
        """Write ``dataset.json`` and publish the directory; returns its description."""
        try:
            info = DatasetInfo(
                name=self.name,
                classes=self.classes,
                input=self.input,
                splits=dict(self._splits),
                groups=None if self.groups is None else tuple(tuple(int(c) for c in g) for g in self.groups),
                group_names=None if self.group_names is None else tuple(self.group_names),
                source=self.source,
                featurizer=None if self.featurizer is None else Featurizer.from_json(self.featurizer, "featurizer"),
            )
            DatasetInfo.from_json(info.to_json(), where=str(self.root / INFO_FILE))  # validate
            write_json_atomic(self.build_dir / INFO_FILE, info.to_json())
            replace_dir(self.build_dir, self.root)
        except BaseException:
            self.abandon()
            raise
        self._held.close()
        return info

    def abandon(self) -> None:
        """Drop everything written so far; ``root`` stays as it was."""
        shutil.rmtree(self.build_dir, ignore_errors=True)
        self._held.close()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


def write_splits(
    out, name, classes, spec, splits: dict[str, tuple[np.ndarray, np.ndarray]], shuffle: bool = True, **kw
):
    """Write {split: (inputs, labels)}; inputs is an array or a callable index -> input.

    ``shuffle`` writes each split in a seeded random order (the keys keep each example's index in
    the source, so key-hash subsets do not change): sources listed class by class (CLINC150's
    intents, a CSV sorted by label, a folder per class) would otherwise reach the training stream,
    whose shuffle buffer holds a few thousand examples, as batches of a handful of classes, which
    a net trained from scratch may not survive. False for a source already in random order."""
    with DatasetWriter(out, name, classes, spec, **kw) as w:
        for split, (xs, ys) in splits.items():
            order = np.random.default_rng(0).permutation(len(ys)) if shuffle else range(len(ys))
            with w.split(split) as s:
                for i in order:
                    s.write(f"{split}_{i:08d}", xs(i) if callable(xs) else xs[i], int(ys[i]))

"""One split written out again as parts, in one pass: each sample goes to any number of parts
(for the specialists, a group's classes, or the validation examples routed to a group), and
each part becomes its own shards, readable by a :class:`~specens.data.shards.Pipeline` through
:meth:`Parts.info`.

Why: M readers that each want a small subset of a split would otherwise each walk the whole
split (M·N sample reads); a partition costs one pass (N reads) plus what each reader takes.

Layout: one flat directory of shards named ``<prefix>-<part:04d>-<n:06d>.tar`` in the dataset's
own sample format (:mod:`specens.data.format`). Samples are buffered in memory up to ``memory``
bytes; when the buffer is full the largest part is written out as one shard, so the number of
open files never depends on the number of parts. Each shard is written under a hidden temporary
name and renamed when closed; publishing the directory as a whole is the caller's business.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

from specens.core.config import param
from specens.core.errors import CheckpointError
from specens.core.io import temp_suffix
from specens.core.records import Record, is_count

from .format import DatasetInfo, ShardInfo, SplitInfo
from .shards import InOrder, Pipeline, Read, Split, to_model_input
from .writer import sample_record


@dataclass(frozen=True)
class Part(Record):
    """One part as its manifest stores it: its shards as ``[name, num_samples]`` pairs (names
    relative to the parts' root) and its class counts, sparse (a part is small)."""

    shards: list[list[Any]]
    counts: dict[str, int] = param(ge=0)  # class index (as a JSON key) -> samples

    def checks(self) -> list[tuple[bool, str]]:
        pairs = all(
            isinstance(s, list) and len(s) == 2 and isinstance(s[0], str) and s[0] == Path(s[0]).name and is_count(s[1])
            for s in self.shards or ()
        )
        classes = all(k.isascii() and k.isdigit() for k in self.counts or ())  # int("²") fails, "²".isdigit()
        return [
            (pairs, "'shards' must be [file name, count] pairs"),
            (classes, "'counts' must be keyed by class indices"),
        ]


@dataclass(frozen=True)
class Parts:
    """The parts of one split (:class:`Part`). A part's :class:`SplitInfo` is built only when
    asked for: with hundreds of parts of a 10,000-class split, building every part's dense class
    counts took most of a second, and each reader wants one part."""

    root: Path
    parts: tuple[Part, ...]
    n_classes: int

    def split(self, part: int) -> SplitInfo:
        """Part ``part`` as a split: its shards, sample count and dense class counts."""
        p = self.parts[part]
        counts = np.zeros(self.n_classes, dtype=np.int64)
        for c, n in p.counts.items():
            counts[int(c)] = n
        shards = tuple(ShardInfo(name, n) for name, n in p.shards)
        return SplitInfo(shards, int(counts.sum()), tuple(int(n) for n in counts))

    def info(self, dataset: DatasetInfo, part: int, split: str) -> DatasetInfo:
        """``dataset`` with one split, ``split``, holding part ``part``'s shards: open it with
        ``Split.of(parts.root, split, parts.info(dataset, part, split))``."""
        return dataclasses.replace(dataset, splits={split: self.split(part)})

    @property
    def num_samples(self) -> int:
        """Samples in all parts (a sample in several parts counts in each)."""
        return sum(n for p in self.parts for _, n in p.shards)

    def to_json(self) -> list[dict]:
        return [p.to_json() for p in self.parts]

    @classmethod
    def from_json(cls, root: str | os.PathLike, parts: Any, n_classes: int, where: str = "") -> Parts:
        """Parts as stored (:class:`Part`), their classes below ``n_classes``; anything else is a
        :class:`CheckpointError` naming ``where``."""
        where = where or str(root)
        if not isinstance(parts, list):
            raise CheckpointError(f"{where}: its parts must be a list, got {type(parts).__name__}")
        read = tuple(Part.from_json(p, f"{where}: part {i}") for i, p in enumerate(parts))
        outside = [(i, k) for i, p in enumerate(read) for k in p.counts if int(k) >= n_classes]
        if outside:
            i, k = outside[0]
            raise CheckpointError(f"{where}: part {i} counts class {k}, beyond the {n_classes} classes")
        return cls(Path(root), read, n_classes)


class PartWriter:
    """Writes samples into ``n_parts`` parts under ``root`` (see the module doc)."""

    def __init__(
        self,
        root: str | os.PathLike,
        prefix: str,
        n_parts: int,
        info: DatasetInfo,
        *,
        shard_size: int = 10_000,
        memory: int = 256 * 2**20,
    ):
        self.root, self.prefix, self.info = Path(root), prefix, info
        self.shard_size, self.memory = shard_size, memory
        self.root.mkdir(parents=True, exist_ok=True)
        self._buffers: list[list[dict]] = [[] for _ in range(n_parts)]
        self._sizes = np.zeros(n_parts, dtype=np.int64)  # buffered bytes per part
        self._shards: list[list[ShardInfo]] = [[] for _ in range(n_parts)]
        self._counts = np.zeros((n_parts, info.n_classes), dtype=np.int64)

    def write(self, part: int, key: str, x: np.ndarray, label: int) -> None:
        """Append one sample (as stored: the dataset's input dtype and shape) to part ``part``."""
        record = sample_record(key, x, label, self.info.input)
        self._buffers[part].append(record)
        self._sizes[part] += len(record[self.info.input.field]) + 64
        self._counts[part, label] += 1
        if len(self._buffers[part]) >= self.shard_size:
            self._flush(part)
        elif self._sizes.sum() > self.memory:
            self._flush(int(self._sizes.argmax()))

    def _flush(self, part: int) -> None:
        records = self._buffers[part]
        if not records:
            return
        name = f"{self.prefix}-{part:04d}-{len(self._shards[part]):06d}.tar"
        tmp = self.root / f".{name}{temp_suffix()}"
        with wds.TarWriter(str(tmp), mtime=0) as tar:
            for r in records:
                tar.write(r)
        os.replace(tmp, self.root / name)
        self._shards[part].append(ShardInfo(name, len(records)))
        self._buffers[part], self._sizes[part] = [], 0

    def close(self) -> Parts:
        """Write what is buffered; returns the parts."""
        for p in range(len(self._buffers)):
            self._flush(p)
        parts = tuple(
            Part(
                shards=[[sh.name, sh.num_samples] for sh in shards],
                counts={str(int(c)): int(counts[c]) for c in np.flatnonzero(counts)},
            )
            for shards, counts in zip(self._shards, self._counts, strict=True)
        )
        return Parts(self.root, parts, self.info.n_classes)


def partition_split(
    root: str | os.PathLike,
    split: str,
    out: str | os.PathLike,
    n_parts: int,
    assign: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    info: DatasetInfo,
    prefix: str | None = None,
    batch_size: int = 512,
    **writer,
) -> Parts:
    """Read ``split`` of the dataset at ``root`` once and write it into ``n_parts`` parts in ``out``.

    assign(inputs, labels) -> Tensor of shape (B, n_parts), bool: which parts each sample of a
    batch goes to (inputs as models take them, shape (B, *input_shape); labels (B,)). A sample may
    go to several parts or to none. ``writer`` goes to :class:`PartWriter`.
    """
    samples = Pipeline(Split.of(root, split, info), InOrder(Read()))
    out_parts = PartWriter(out, prefix or split, n_parts, info, **writer)
    items: list = []

    def flush():
        keys, xs, ys = zip(*items, strict=True)
        labels = torch.tensor(ys, dtype=torch.int64)
        where = assign(torch.from_numpy(to_model_input(np.stack(xs))), labels)
        if tuple(where.shape) != (len(items), n_parts):
            raise ValueError(f"assign returned shape {tuple(where.shape)}, expected {(len(items), n_parts)}")
        for b, p in where.nonzero().tolist():
            out_parts.write(p, keys[b], xs[b], ys[b])
        items.clear()

    for item in samples:
        items.append(item)
        if len(items) == batch_size:
            flush()
    if items:
        flush()
    return out_parts.close()

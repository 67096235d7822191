"""Streaming WebDataset shards in the format of :mod:`specens.data.format` (written by
:mod:`specens.data.writer`).

Reading is a :class:`Pipeline` that its caller composes from small stages, in webdataset's style:
for training (shards and samples shuffled with a seeded buffer, epochs of a fixed length, shards
split across nodes and DataLoader workers) or for evaluation (in order, every sample exactly once);
the stages wrap the generators of :mod:`specens.data.stages`. Bad samples raise :class:`DataError`
naming the shard and the sample key; ``on_error="skip"`` drops them instead and counts them.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from specens.core.errors import DataError

from .format import INFO_FILE, DatasetInfo, ShardInfo, load_info
from .remote import is_url, join, local_path
from .stages import (
    Batch,
    ErrorPolicy,
    Sample,
    batched,
    checked_count,
    decode_sample,
    decoded,
    keep_fraction,
    keep_labels,
    key_fraction,
    raw_samples,
    shuffled,
    split_shards,
    to_model_input,
)

__all__ = ["Batch", "Batches", "Cached", "Cycle", "Fraction", "InOrder", "Labels", "MixedLoader", "Pipeline", "Read"]
__all__ += ["ShardLoader", "Shuffle", "Split", "decode_sample", "iter_split", "key_fraction", "to_model_input"]
__all__ += ["SHUFFLE_BUFFER", "verify_dataset"]

SHUFFLE_BUFFER = 2000  # samples in a training pipeline's shuffle buffer, where its caller sets none


@dataclass(frozen=True)
class Split:
    """Where a pipeline reads: one split of a dataset directory or URL, all its shards or ``only``
    those named (e.g. one shard at a time for per-shard outputs)."""

    root: str | Path  # a URL as given, a local directory as a Path
    info: DatasetInfo
    name: str
    shards: tuple[ShardInfo, ...]

    @classmethod
    def of(
        cls, root: str | os.PathLike, name: str, info: DatasetInfo | None = None, only: Sequence[str] | None = None
    ) -> Split:
        info = info if info is not None else load_info(root)
        root = str(root) if is_url(root) else Path(local_path(root))
        where = join(root, INFO_FILE) if isinstance(root, str) else root / INFO_FILE
        shards = info.split(name, where).shards
        if only is not None:
            known = {s.name: s for s in shards}
            unknown = [n for n in only if n not in known]
            if unknown:
                raise DataError(f"{where}: split {name!r} has no shard {unknown[0]!r}")
            shards = tuple(known[n] for n in only)
        return cls(root, info, name, tuple(shards))

    @property
    def num_samples(self) -> int:
        return sum(s.num_samples for s in self.shards)

    @property
    def remote(self) -> bool:
        return isinstance(self.root, str)

    def url(self, shard: str) -> str:
        return join(self.root, shard) if self.remote else str(self.root / shard)


@dataclass
class Reader:
    """What one reader's pass over a pipeline knows: its shards (:func:`split_shards`), its index
    among ``n_readers``, the epoch's generator and the bad-sample policy."""

    split: Split
    shards: list[ShardInfo]
    index: int
    n_readers: int
    rng: random.Random
    errors: ErrorPolicy


class Pipeline(torch.utils.data.IterableDataset):
    """An epoch of a split through ``stages``, in webdataset's style: the first stage takes this
    reader's shards, each later one the iterator before it (``stage(items, reader)``); a pass of
    ``__iter__`` is one epoch. The caller composes it, e.g. the evaluation order

        Pipeline(Split.of(root, "val"), InOrder(Read()), Batches(512))

    and the training order (seeded shuffles of shards and of a sample buffer, shards cycled until
    the epoch's samples are drawn)

        Pipeline(Split.of(root, "train"), Cycle(Read()), Shuffle(2000, n), Batches(128), seed=0)

    ``seed``: epoch ``e`` of reader ``r`` draws from ``Random(f"{seed}/{e}/{r}")``, so an epoch is
    reproducible on its own (what makes resumption exact). ``on_error``: ``"raise"`` or ``"skip"``,
    which drops bad samples and counts them in :attr:`Batch.skipped`."""

    def __init__(self, split: Split, *stages, seed: int = 0, on_error: str = "raise"):
        super().__init__()
        ErrorPolicy(on_error)  # checks the value
        self.split, self.stages, self.seed, self.on_error, self.epoch = split, stages, seed, on_error, 0

    @property
    def info(self) -> DatasetInfo:
        return self.split.info

    @property
    def endless(self) -> bool:
        """Whether it cycles its shards (each reader needs one)."""
        return isinstance(self.stages[0], Cycle)

    @property
    def batch_size(self) -> int:
        return next(s.size for s in self.stages if isinstance(s, Batches))

    @property
    def epoch_size(self) -> int:
        """Samples an epoch draws: the shuffle's count, else the split's."""
        return next((s.samples for s in self.stages if isinstance(s, Shuffle)), self.split.num_samples)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next ``__iter__`` produces."""
        self.epoch = epoch

    def __iter__(self) -> Iterator:
        shards, index, n_readers = split_shards(self.split.shards)
        rng = random.Random(f"{self.seed}/{self.epoch}/{index}")
        reader = Reader(self.split, shards, index, n_readers, rng, ErrorPolicy(self.on_error))
        items = iter(shards)
        for stage in self.stages:
            items = stage(items, reader)
        return items


class Labels:
    """A filter of raw samples: those whose label is in ``labels`` (``exclude``: not in it), read
    before the input is decoded, so filtered samples cost little."""

    def __init__(self, labels, exclude: bool = False):
        self.labels, self.exclude = np.asarray(list(labels), dtype=np.int64), exclude

    def __call__(self, raw: Iterable[dict], reader: Reader) -> Iterator[dict]:
        keep = np.zeros(reader.split.info.n_classes, dtype=bool)
        keep[self.labels] = True
        return keep_labels(raw, ~keep if self.exclude else keep)


@dataclass(frozen=True)
class Fraction:
    """A filter of raw samples: the ``fraction`` chosen by a stable hash of each key
    (:func:`key_fraction`): the same subset on every machine, epoch and worker, and the subset at a
    smaller fraction lies inside the one at a larger fraction."""

    fraction: float

    def __post_init__(self):
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")

    def __call__(self, raw: Iterable[dict], reader: Reader) -> Iterator[dict]:
        return keep_fraction(raw, self.fraction)


class Read:
    """One shard's samples: raw, count-checked against ``dataset.json``, through ``filters``
    (:class:`Labels`, :class:`Fraction`), decoded to ``(key, x as stored, label)``."""

    def __init__(self, *filters):
        self.filters = filters

    def __call__(self, shard: ShardInfo, reader: Reader) -> Iterator[Sample]:
        url, errors = reader.split.url(shard.name), reader.errors
        raw = checked_count(raw_samples(url, reader.split.remote, errors), url, shard.num_samples, errors)
        for f in self.filters:
            raw = f(raw, reader)
        return decoded(raw, reader.split.info.input, reader.split.info.n_classes, errors)


class Cached:
    """A :class:`Read` whose shards, once read cleanly, come from memory, up to ``max_bytes`` of
    inputs: for a filtering read that a cycling pipeline repeats (a specialist's classes, a 10%
    fraction), so a pass does not re-read every shard to find a small subset. Same samples either
    way; a shard with skipped samples is read again."""

    def __init__(self, read: Read, max_bytes: int = 256 * 2**20):
        self.read, self.max_bytes = read, max_bytes
        self._shards: dict[str, list] = {}
        self._bytes = 0

    def __call__(self, shard: ShardInfo, reader: Reader) -> Iterator[Sample]:
        if shard.name in self._shards:
            yield from self._shards[shard.name]
            return
        kept, skipped = [], reader.errors.total
        for s in self.read(shard, reader):
            kept.append(s)
            yield s
        size = sum(x.nbytes for _, x, _ in kept)
        if reader.errors.total == skipped and self._bytes + size <= self.max_bytes:
            self._shards[shard.name] = kept
            self._bytes += size


class InOrder:
    """This reader's shards once, in order, each through ``read``: every sample exactly once."""

    def __init__(self, read: Read | Cached):
        self.read = read

    def __call__(self, shards: Iterator[ShardInfo], reader: Reader) -> Iterator[Sample]:
        return (s for shard in shards for s in self.read(shard, reader))


class Cycle:
    """This reader's shards through ``read``, in an order shuffled anew on each pass, endlessly
    (a :class:`Shuffle` after it ends the epoch)."""

    def __init__(self, read: Read | Cached):
        self.read = read

    def __call__(self, shards: Iterator[ShardInfo], reader: Reader) -> Iterator[Sample]:
        shards = list(shards)
        if not shards:
            raise DataError(
                f"{reader.split.root}: split {reader.split.name!r} has {len(reader.split.shards)} shard(s), "
                f"too few for {reader.n_readers} reader(s); write smaller shards or use fewer workers"
            )
        while True:
            order = shards[:]
            reader.rng.shuffle(order)
            produced = 0
            for shard in order:
                for s in self.read(shard, reader):
                    produced += 1
                    yield s
            if produced == 0:
                raise DataError(
                    f"{reader.split.root}: no sample of split {reader.split.name!r} in this reader's shards "
                    "passes the filters or could be read"
                )


@dataclass(frozen=True)
class Shuffle:
    """``samples`` an epoch (over all readers; each draws its share) through a seeded shuffle
    buffer of ``buffer`` samples."""

    buffer: int
    samples: int

    def __call__(self, samples: Iterator[Sample], reader: Reader) -> Iterator[Sample]:
        return shuffled(samples, reader.rng, math.ceil(self.samples / reader.n_readers), self.buffer)


@dataclass(frozen=True)
class Batches:
    """:class:`Batch` es of ``size`` (the last of an epoch may be smaller), each reporting the
    samples skipped since the one before."""

    size: int

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.size}")

    def __call__(self, samples: Iterable[Sample], reader: Reader) -> Iterator[Batch]:
        return batched(samples, self.size, reader.errors)


class ShardLoader:
    """Iterates a :class:`Pipeline` of batches through a DataLoader and totals skipped samples.

    ``for batch in loader`` yields only non-empty batches; ``loader.skipped`` counts what the
    ``"skip"`` policy dropped over all epochs so far.
    """

    def __init__(self, stream: Pipeline, num_workers: int = 0):
        n_shards = len(stream.split.shards)
        if stream.endless and num_workers > n_shards:  # a worker without a shard could not fill its quota
            raise DataError(
                f"{stream.split.root}: split {stream.split.name!r} has {n_shards} shard(s), too few for "
                f"{num_workers} DataLoader workers; write smaller shards or use fewer workers"
            )
        self.stream, self.num_workers, self.skipped = stream, num_workers, 0

    def __iter__(self) -> Iterator[Batch]:
        dl = torch.utils.data.DataLoader(
            self.stream, batch_size=None, num_workers=self.num_workers, collate_fn=_identity, persistent_workers=False
        )
        for batch in dl:
            self.skipped += batch.skipped
            if len(batch):
                yield batch

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)


class MixedLoader:
    """The batches of several :class:`ShardLoader` s, interleaved: each epoch consumes one epoch of
    every loader, in a random order of sources that depends only on (``seed``, epoch), so a resumed
    epoch is the same as an uninterrupted one. Yields ``(source, batch)``, ``source`` the loader's
    index. With one loader it yields exactly that loader's batches.

    Used to train on a labelled split together with extra transfer sets (docs/method.md §1: unlabelled
    transfer data), a batch never mixing the two, so that the hard term is dropped per batch.
    """

    def __init__(self, loaders: Sequence[ShardLoader], seed: int = 0):
        self.loaders, self.seed, self.epoch = list(loaders), seed, 0

    def batches_per_epoch(self) -> list[int]:
        return [math.ceil(ld.stream.epoch_size / ld.stream.batch_size) for ld in self.loaders]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for ld in self.loaders:
            ld.set_epoch(epoch)

    @property
    def skipped(self) -> int:
        return sum(ld.skipped for ld in self.loaders)

    def __iter__(self) -> Iterator[tuple[int, Batch]]:
        order = [i for i, n in enumerate(self.batches_per_epoch()) for _ in range(n)]
        random.Random(f"{self.seed}/{self.epoch}/mix").shuffle(order)
        iterators = [iter(ld) for ld in self.loaders]
        for i in order:
            batch = next(iterators[i], None)
            if batch is not None:
                yield i, batch
        for i, it in enumerate(iterators):  # a loader with more batches than expected: nothing is dropped
            for batch in it:
                yield i, batch


def _identity(x):
    return x


def iter_split(
    root,
    split: str,
    batch_size: int = 256,
    *,
    info: DatasetInfo | None = None,
    shards: Sequence[str] | None = None,
    filters: Sequence = (),
    num_workers: int = 0,
    on_error: str = "raise",
) -> ShardLoader:
    """Evaluation-order batches of one split (or of its ``shards``): in order, each sample once,
    through ``filters`` (:class:`Labels`, :class:`Fraction`)."""
    stages = InOrder(Read(*filters)), Batches(batch_size)
    pipeline = Pipeline(Split.of(root, split, info, only=shards), *stages, on_error=on_error)
    return ShardLoader(pipeline, num_workers)


def verify_dataset(root: str | os.PathLike, progress: bool = False) -> DatasetInfo:
    """Read every sample of every split of ``root`` once and check all that a training or
    evaluation reader checks, up front: each shard's sample count against ``dataset.json``
    (truncation), each sample's fields, label range, shape, dtype and finiteness, and each split's
    class counts. Raises :class:`DataError` naming the shard (and sample) at fault; returns the
    dataset's description."""
    from specens.core.progress import progress_bar

    info = load_info(root)
    where = join(str(root), INFO_FILE) if is_url(root) else str(Path(local_path(root)) / INFO_FILE)
    for name, split in info.splits.items():
        counts = np.zeros(info.n_classes, dtype=np.int64)
        samples = Pipeline(Split.of(root, name, info), InOrder(Read()))
        for _, _, label in progress_bar(
            samples, total=split.num_samples, desc=f"check {name}", unit="ex", enabled=progress
        ):
            counts[label] += 1
        if tuple(int(c) for c in counts) != split.class_counts:
            c = int(np.flatnonzero(counts != np.asarray(split.class_counts))[0])
            raise DataError(
                f"{where}: splits.{name}.class_counts[{c}] is {split.class_counts[c]}, but the shards "
                f"hold {int(counts[c])} samples of class {c} ({info.classes[c]!r})"
            )
    return info

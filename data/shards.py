"""Streaming WebDataset shards in the format of :mod:`specens.data.format` (written by
:mod:`specens.data.writer`).

Reading streams :class:`Batch` objects, either for training (shards and samples shuffled with a
seeded buffer, epochs of a fixed length, shards split across nodes and DataLoader workers) or for
evaluation (in order, every sample exactly once), composed from the stages of
:mod:`specens.data.stages`. Bad samples raise :class:`DataError` naming the shard and the sample
key; ``on_error="skip"`` drops them instead and counts them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from collections.abc import Iterator, Sequence
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

__all__ = ["Batch", "MixedLoader", "ShardLoader", "ShardStream", "decode_sample", "iter_split", "key_fraction"]
__all__ += ["to_model_input", "verify_dataset"]


class ShardStream(torch.utils.data.IterableDataset):
    """Batches from one split of a dataset directory; one pass of ``__iter__`` is one epoch.

    Args:
        root: dataset directory (holding ``dataset.json``).
        split: split name, e.g. ``"train"``.
        batch_size: samples per batch; the last batch of an epoch may be smaller.
        train: True for training order (seeded shuffle of shards and of a sample buffer, shards
            cycled until ``epoch_size`` samples); False for evaluation (in order, each sample once).
        epoch_size: samples per training epoch over all workers (default: the split's size).
        buffer: shuffle buffer size in samples (training only).
        seed: base seed; epoch ``e`` of worker ``w`` on node ``r`` shuffles with its own derived seed,
            so an epoch is reproducible on its own (this is what makes resumption exact).
        on_error: ``"raise"`` (default) or ``"skip"``, which drops bad samples and counts them in
            :attr:`Batch.skipped`.
        labels: keep only samples whose label is in this collection (``exclude=True``: not in
            it). The label is read before the input is decoded, so filtered samples cost little.
        shards: read only these shards of the split (names as in ``dataset.json``), e.g. one
            shard at a time for per-shard outputs.
        fraction: keep only this fraction of the samples, chosen by a stable hash of each sample's
            key (:func:`key_fraction`): the same subset on every machine, epoch and worker, and
            the subset at a smaller fraction lies inside the one at a larger fraction.
        cache_bytes: a training stream that filters (``labels`` or ``fraction``) keeps the samples
            it kept from each shard in memory after reading it once, up to this many bytes of
            inputs, so cycling through the split again does not re-read every shard to find a small
            subset (a specialist's classes, a 10% fraction). The batches are the same either way.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        batch_size: int,
        *,
        train: bool = False,
        epoch_size: int | None = None,
        buffer: int = 2000,
        seed: int = 0,
        on_error: str = "raise",
        info: DatasetInfo | None = None,
        labels=None,
        exclude: bool = False,
        shards: Sequence[str] | None = None,
        fraction: float = 1.0,
        cache_bytes: int = 256 * 2**20,
    ):
        super().__init__()
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        ErrorPolicy(on_error)  # checks the value
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.root = str(root) if is_url(root) else Path(local_path(root))
        self.info = info if info is not None else load_info(root)
        self.split_info = self.info.split(split)
        if shards is not None:
            known = {s.name: s for s in self.split_info.shards}
            unknown = [n for n in shards if n not in known]
            if unknown:
                raise DataError(f"{self._url(INFO_FILE)}: split {split!r} has no shard {unknown[0]!r}")
            self.split_info = dataclasses.replace(
                self.split_info,
                shards=tuple(known[n] for n in shards),
                num_samples=sum(known[n].num_samples for n in shards),
            )
        self.split, self.batch_size, self.train = split, batch_size, train
        self.epoch_size = epoch_size if epoch_size is not None else self.split_info.num_samples
        self.buffer, self.seed, self.on_error = buffer, seed, on_error
        self.epoch, self.fraction = 0, fraction
        self.cache_bytes = cache_bytes
        self._cache: dict[str, list] = {}  # shard name -> the samples it kept (filtering training streams)
        self._cached_bytes = 0
        self._keep = None  # bool (n_classes,): which labels pass the filter
        if labels is not None:
            keep = np.zeros(self.info.n_classes, dtype=bool)
            keep[np.asarray(list(labels), dtype=np.int64)] = True
            self._keep = ~keep if exclude else keep

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next ``__iter__`` produces."""
        self.epoch = epoch

    # -- one reader's view, composed from :mod:`specens.data.stages` ---------------------------

    def samples(self) -> Iterator[Sample]:
        """Every sample of this reader's shards once, in order, as ``(key, x, label)`` with ``x``
        as stored (images not scaled): what re-writing the split reads
        (:mod:`specens.data.parts`). Filters apply; ``on_error="skip"`` drops bad samples."""
        errors = ErrorPolicy(self.on_error)
        for shard in split_shards(self.split_info.shards)[0]:
            yield from self._shard_samples(shard, errors)

    def __iter__(self) -> Iterator[Batch]:
        shards, reader, n_readers = split_shards(self.split_info.shards)
        errors = ErrorPolicy(self.on_error)
        if self.train:
            rng = random.Random(f"{self.seed}/{self.epoch}/{reader}")
            quota = math.ceil(self.epoch_size / n_readers)
            samples = shuffled(self._cycle(shards, n_readers, rng, errors), rng, quota, self.buffer)
        else:
            samples = (s for shard in shards for s in self._shard_samples(shard, errors))
        yield from batched(samples, self.batch_size, errors)

    def _url(self, name: str) -> str:
        return join(self.root, name) if isinstance(self.root, str) else str(self.root / name)

    def _shard_samples(self, shard: ShardInfo, errors: ErrorPolicy) -> Iterator[Sample]:
        """One shard: raw samples, count check, filters, decoded."""
        url = self._url(shard.name)
        raw = checked_count(raw_samples(url, isinstance(self.root, str), errors), url, shard.num_samples, errors)
        if self._keep is not None:
            raw = keep_labels(raw, self._keep)
        if self.fraction < 1:
            raw = keep_fraction(raw, self.fraction)
        return decoded(raw, self.info.input, self.info.n_classes, errors)

    def _cached_samples(self, shard: ShardInfo, errors: ErrorPolicy) -> Iterator[Sample]:
        """``_shard_samples``, from memory once a filtering stream has read the whole shard cleanly."""
        if shard.name in self._cache:
            yield from self._cache[shard.name]
            return
        if self._keep is None and self.fraction == 1:
            yield from self._shard_samples(shard, errors)
            return
        kept, skipped = [], errors.total
        for s in self._shard_samples(shard, errors):
            kept.append(s)
            yield s
        size = sum(x.nbytes for _, x, _ in kept)
        if errors.total == skipped and self._cached_bytes + size <= self.cache_bytes:  # a shard with skips is re-read
            self._cache[shard.name] = kept
            self._cached_bytes += size

    def _cycle(self, shards, n_readers, rng, errors) -> Iterator[Sample]:
        """The training order: this reader's shards, shuffled anew on each pass, endlessly."""
        if not shards:
            raise DataError(
                f"{self.root}: split {self.split!r} has {len(self.split_info.shards)} shard(s), "
                f"too few for {n_readers} reader(s); write smaller shards or use fewer workers"
            )
        while True:
            order = shards[:]
            rng.shuffle(order)
            produced = 0
            for shard in order:
                for s in self._cached_samples(shard, errors):
                    produced += 1
                    yield s
            if produced == 0:
                why = "passes the label filter" if self._keep is not None else "could be read"
                raise DataError(f"{self.root}: no sample of split {self.split!r} in this reader's shards {why}")


class ShardLoader:
    """Iterates a :class:`ShardStream` through a DataLoader and totals skipped samples.

    ``for batch in loader`` yields only non-empty batches; ``loader.skipped`` counts what the
    ``"skip"`` policy dropped over all epochs so far.
    """

    def __init__(self, stream: ShardStream, num_workers: int = 0):
        n_shards = len(stream.split_info.shards)
        if stream.train and num_workers > n_shards:  # a worker without a shard could not fill its quota
            raise DataError(
                f"{stream.root}: split {stream.split!r} has {n_shards} shard(s), too few for "
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


def iter_split(root, split: str, batch_size: int = 256, **kw) -> ShardLoader:
    """Evaluation-order batches of one split: in order, each sample once."""
    num_workers = kw.pop("num_workers", 0)
    return ShardLoader(ShardStream(root, split, batch_size, train=False, **kw), num_workers)


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
        stream = ShardStream(root, name, 1, info=info)
        for _, _, label in progress_bar(
            stream.samples(), total=split.num_samples, desc=f"check {name}", unit="ex", enabled=progress
        ):
            counts[label] += 1
        if tuple(int(c) for c in counts) != split.class_counts:
            c = int(np.flatnonzero(counts != np.asarray(split.class_counts))[0])
            raise DataError(
                f"{where}: splits.{name}.class_counts[{c}] is {split.class_counts[c]}, but the shards "
                f"hold {int(counts[c])} samples of class {c} ({info.classes[c]!r})"
            )
    return info

"""Enriched batches for a specialist (docs/method.md §4): a fraction ρ (= 0.5) of each batch from
examples whose label is in S, the rest from the other classes, each part at random.

Design: two pipelines (:class:`~specens.data.shards.Pipeline`) and a mixing stage that joins
their batches one to one (:func:`enriched_batches`); within each part the natural class
proportions are kept, nothing is loaded into memory beyond a pipeline's own cache, and shards are
still split across nodes and DataLoader workers. The rest is the split with S filtered out: it is
most of the split, so reading the epoch's share of it costs about that share. The special part is
read from the group's own shards (the specialists' one-pass partition,
:mod:`specens.specialists.partition`), so a specialist never walks the whole split to find its
group's examples.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from specens.data.shards import (
    SHUFFLE_BUFFER,
    Batch,
    Batches,
    Cached,
    Cycle,
    Labels,
    Pipeline,
    Read,
    ShardLoader,
    Shuffle,
    Split,
)


def special_count(rho: float, batch_size: int) -> int:
    """The examples of S in a batch of ``batch_size``: ``round(rho * batch_size)``, leaving room
    for both parts."""
    n_special = int(round(rho * batch_size))
    if not 0 < n_special < batch_size:
        raise ValueError(f"rho={rho} leaves no room for one of the two parts in batches of {batch_size}")
    return n_special


class EnrichedBatches:
    """The mixing stage: batch ``i`` of an epoch is batch ``i`` of ``special`` followed by batch
    ``i`` of ``rest`` (two loaders of the same number of batches an epoch)."""

    def __init__(self, special: ShardLoader, rest: ShardLoader):
        self.special, self.rest = special, rest

    def set_epoch(self, epoch: int) -> None:
        self.special.set_epoch(epoch)
        self.rest.set_epoch(epoch)

    def __iter__(self) -> Iterator[Batch]:
        for a, b in zip(self.special, self.rest, strict=False):
            yield Batch(
                torch.cat([a.inputs, b.inputs]), torch.cat([a.labels, b.labels]), a.keys + b.keys, a.skipped + b.skipped
            )

    @property
    def skipped(self) -> int:
        return self.special.skipped + self.rest.skipped


def enriched_batches(
    split: Split, group, special: Split, batch_size: int, batches: int, rho: float, seed: int, num_workers: int = 0
) -> EnrichedBatches:
    """``batches`` batches an epoch of ``batch_size``: ``round(rho * batch_size)`` from ``special``
    (a split holding exactly the examples of S: its part of the partition), the rest from ``split``
    less the classes of ``group``; epoch e's batches depend only on (``seed``, e)."""
    n_special = special_count(rho, batch_size)
    n_rest = batch_size - n_special
    ours = Pipeline(
        special, Cycle(Read()), Shuffle(SHUFFLE_BUFFER, n_special * batches), Batches(n_special), seed=seed * 2 + 1
    )
    rest = Pipeline(
        split,
        Cycle(Cached(Read(Labels(group, exclude=True)))),  # the pass repeats: keep what the filter kept
        Shuffle(SHUFFLE_BUFFER, n_rest * batches),
        Batches(n_rest),
        seed=seed * 2,
    )
    # a part may hold fewer shards than there are workers: each worker needs one
    return EnrichedBatches(ShardLoader(ours, min(num_workers, len(special.shards))), ShardLoader(rest, num_workers))

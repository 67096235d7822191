"""Enriched batches for a specialist (docs/method.md §4): a fraction ρ (= 0.5) of each batch from
examples whose label is in S, the rest from the other classes, each part at random.

Design: two streams, mixed batch by batch, each an ordinary
:class:`~specens.data.shards.ShardStream`, so within each part the natural class proportions are
kept, nothing is loaded into memory, and shards are still split across nodes and DataLoader
workers. The rest is the split with S filtered out: it is most of the split, so reading the
epoch's share of it costs about that share. The special part is read from the group's own shards
(``special_source``: the specialists' one-pass partition, :mod:`specens.specialists.partition`),
so a specialist never walks the whole split to find its group's examples.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from specens.data.shards import Batch, ShardLoader, ShardStream


class EnrichedStream:
    """Batches of ``batch_size`` with ``round(rho * batch_size)`` examples from ``group``.

    Args:
        root, split: the dataset and split to read.
        group: class indices of S.
        batches_per_epoch: batches in one epoch.
        rho: the special fraction of each batch.
        seed: seeds both streams; epoch e's batches depend only on (seed, e).
        special_source: ``(root, info)`` of a dataset whose split ``split`` holds exactly the
            examples of S (a part of :mod:`specens.data.parts`).
    """

    def __init__(
        self,
        root: str,
        split: str,
        group,
        batch_size: int,
        batches_per_epoch: int,
        rho: float = 0.5,
        seed: int = 0,
        buffer: int = 2000,
        num_workers: int = 0,
        on_error: str = "raise",
        info=None,
        *,
        special_source: tuple,
    ):
        n_special = int(round(rho * batch_size))
        if not 0 < n_special < batch_size:
            raise ValueError(f"rho={rho} leaves no room for one of the two parts in batches of {batch_size}")
        group = np.asarray(group, dtype=np.int64)
        common = dict(train=True, buffer=buffer, on_error=on_error, info=info)
        special = dict(epoch_size=n_special * batches_per_epoch, seed=seed * 2 + 1)
        part_root, part_info = special_source
        stream = ShardStream(part_root, split, n_special, **special, **{**common, "info": part_info})
        # a part may hold fewer shards than there are workers: each worker needs one
        self.special = ShardLoader(stream, min(num_workers, len(stream.split_info.shards)))
        self.rest = ShardLoader(
            ShardStream(
                root,
                split,
                batch_size - n_special,
                epoch_size=(batch_size - n_special) * batches_per_epoch,
                seed=seed * 2,
                labels=group,
                exclude=True,
                **common,
            ),
            num_workers,
        )
        self.batches_per_epoch = batches_per_epoch

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

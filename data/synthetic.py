"""A seeded hierarchical Gaussian mixture with planted groups of confusable classes.

Classes come in ``n_groups`` super-groups: each group has a centre, each class a mean near its
group's centre, and each sample is its class mean plus isotropic noise. Classes of one group are
confused with each other far more than with other groups', so the planted groups are the ground
truth the clustering stage must recover. Fast to build, for unit tests and quick benchmarks.
"""

from __future__ import annotations

import numpy as np

from specens.core.errors import ConfigError

from .format import InputSpec
from .writer import DatasetWriter


def make_synthetic(
    n_classes: int = 20,
    n_groups: int = 4,
    dim: int = 16,
    n_per_class: int = 100,
    group_spread: float = 4.0,
    class_spread: float = 1.0,
    noise: float = 1.0,
    seed: int = 0,
):
    """Sample the mixture.

    Returns:
        x: float32 array of shape (n_classes * n_per_class, dim);
        y: int64 array of shape (n_classes * n_per_class,), class labels;
        groups: list of ``n_groups`` sorted int arrays, the planted partition of the classes.
    """
    if not 1 <= n_groups <= n_classes:
        raise ConfigError(f"need 1 <= n_groups <= n_classes, got n_groups={n_groups}, n_classes={n_classes}")
    rng = np.random.default_rng(seed)
    group_of = np.arange(n_classes) % n_groups
    centres = rng.normal(0.0, group_spread, size=(n_groups, dim))
    means = centres[group_of] + rng.normal(0.0, class_spread, size=(n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = means[y] + rng.normal(0.0, noise, size=(len(y), dim))
    order = rng.permutation(len(y))
    groups = [np.flatnonzero(group_of == g) for g in range(n_groups)]
    return x[order].astype(np.float32), y[order].astype(np.int64), groups


def import_synthetic(
    out: str,
    *,
    n_classes: int = 20,
    n_groups: int = 4,
    dim: int = 16,
    n_train: int = 200,
    n_val: int = 50,
    n_test: int = 50,
    noise: float = 1.0,
    seed: int = 0,
    shard_size: int = 10_000,
):
    """Write train/val/test shards of the mixture (``n_*`` samples per class) to ``out``."""
    import math

    if not (isinstance(noise, int | float) and math.isfinite(noise) and noise >= 0):
        raise ConfigError(f"noise must be a finite number >= 0, got {noise!r}")
    n = n_train + n_val + n_test
    x, y, groups = make_synthetic(n_classes, n_groups, dim, n, noise=noise, seed=seed)
    # Split per class so that every split has every class in the same proportions.
    split_of = np.empty(len(y), dtype=object)
    for c in range(n_classes):
        idx = np.flatnonzero(y == c)
        split_of[idx[:n_train]] = "train"
        split_of[idx[n_train : n_train + n_val]] = "val"
        split_of[idx[n_train + n_val :]] = "test"
    classes = [f"class{c:03d}" for c in range(n_classes)]
    source = dict(
        importer="synthetic",
        n_classes=n_classes,
        n_groups=n_groups,
        dim=dim,
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        noise=noise,
        seed=seed,
    )
    with DatasetWriter(
        out,
        "synthetic",
        classes,
        InputSpec("array", (dim,), "float32"),
        groups=[g.tolist() for g in groups],
        group_names=[f"group{g}" for g in range(n_groups)],
        source=source,
        shard_size=shard_size,
    ) as w:
        for split in ("train", "val", "test"):
            with w.split(split) as s:
                for i in np.flatnonzero(split_of == split):
                    s.write(f"{split}_{i:08d}", x[i], int(y[i]))
    return w


def synthetic_predictions(
    n_samples: int,
    n_classes: int,
    group_size: int,
    *,
    batch_size: int = 2000,
    in_group: float = -2.0,
    out_group: float = -9.0,
    spread: float = 1.0,
    seed: int = 0,
):
    """A stream of soft predictions with planted confusable groups, for clustering at any scale.

    Classes are split into groups of ``group_size`` (a seeded permutation, so groups are not
    contiguous index ranges). For an example of class c the logits are 0 for c, ``in_group`` ±
    ``spread`` for the rest of c's group and ``out_group`` ± ``spread`` elsewhere, then a softmax.

    Returns (groups, batches): the planted groups (sorted int arrays) and a generator of
    (probs float32 (batch, n_classes), labels int64 (batch,)) pairs, ``n_samples`` in all.
    """
    import torch

    if not 1 <= group_size <= n_classes:
        raise ConfigError(f"group_size must be in [1, n_classes], got {group_size}")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_classes, generator=gen)
    group_of = torch.empty(n_classes, dtype=torch.int64)
    group_of[perm] = torch.arange(n_classes) // group_size
    groups = [np.sort(perm[i : i + group_size].numpy()) for i in range(0, n_classes, group_size)]

    def batches():
        done = 0
        while done < n_samples:
            b = min(batch_size, n_samples - done)
            y = torch.randint(0, n_classes, (b,), generator=gen)
            same = group_of[None, :] == group_of[y][:, None]  # (b, C)
            z = torch.randn(b, n_classes, generator=gen) * spread
            z += torch.where(same, in_group, out_group)
            z[torch.arange(b), y] = 0.0
            yield torch.softmax(z, dim=1), y
            done += b

    return groups, batches()

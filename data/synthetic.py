"""A seeded hierarchical Gaussian mixture with planted groups of confusable classes.

Classes come in ``n_groups`` super-groups: each group has a centre, each class a mean near its
group's centre, and each sample is its class mean plus isotropic noise. Classes of one group are
confused with each other far more than with other groups', so the planted groups are the ground
truth the clustering stage must recover. Fast to build, for unit tests and quick benchmarks.
"""

from __future__ import annotations

import numpy as np

from .format import InputSpec
from .shards import DatasetWriter


def make_synthetic(n_classes: int = 20, n_groups: int = 4, dim: int = 16, n_per_class: int = 100,
                   group_spread: float = 4.0, class_spread: float = 1.0, noise: float = 1.0,
                   seed: int = 0):
    """Sample the mixture.

    Returns:
        x: float32 array of shape (n_classes * n_per_class, dim);
        y: int64 array of shape (n_classes * n_per_class,), class labels;
        groups: list of ``n_groups`` sorted int arrays, the planted partition of the classes.
    """
    if not 1 <= n_groups <= n_classes:
        raise ValueError(f"need 1 <= n_groups <= n_classes, got n_groups={n_groups}, n_classes={n_classes}")
    rng = np.random.default_rng(seed)
    group_of = np.arange(n_classes) % n_groups
    centres = rng.normal(0.0, group_spread, size=(n_groups, dim))
    means = centres[group_of] + rng.normal(0.0, class_spread, size=(n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = means[y] + rng.normal(0.0, noise, size=(len(y), dim))
    order = rng.permutation(len(y))
    groups = [np.flatnonzero(group_of == g) for g in range(n_groups)]
    return x[order].astype(np.float32), y[order].astype(np.int64), groups


def import_synthetic(out: str, *, n_classes: int = 20, n_groups: int = 4, dim: int = 16,
                     n_train: int = 200, n_val: int = 50, n_test: int = 50, noise: float = 1.0,
                     seed: int = 0, shard_size: int = 10_000):
    """Write train/val/test shards of the mixture (``n_*`` samples per class) to ``out``."""
    n = n_train + n_val + n_test
    x, y, groups = make_synthetic(n_classes, n_groups, dim, n, noise=noise, seed=seed)
    # Split per class so that every split has every class in the same proportions.
    split_of = np.empty(len(y), dtype=object)
    for c in range(n_classes):
        idx = np.flatnonzero(y == c)
        split_of[idx[:n_train]] = "train"
        split_of[idx[n_train:n_train + n_val]] = "val"
        split_of[idx[n_train + n_val:]] = "test"
    classes = [f"class{c:03d}" for c in range(n_classes)]
    source = dict(importer="synthetic", n_classes=n_classes, n_groups=n_groups, dim=dim, n_train=n_train,
                  n_val=n_val, n_test=n_test, noise=noise, seed=seed)
    with DatasetWriter(out, "synthetic", classes, InputSpec("array", (dim,), "float32"),
                       groups=[g.tolist() for g in groups], group_names=[f"group{g}" for g in range(n_groups)],
                       source=source, shard_size=shard_size) as w:
        for split in ("train", "val", "test"):
            with w.split(split) as s:
                for i in np.flatnonzero(split_of == split):
                    s.write(f"{split}_{i:08d}", x[i], int(y[i]))
    return w

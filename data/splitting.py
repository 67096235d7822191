"""Seeded, stratified splits of a labelled set (scikit-learn's ``train_test_split``), for
importers of sources that come without a validation or test split."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from specens.core.errors import DataError


def stratified_split(y: np.ndarray, fraction: float, seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
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


def three_way_split(y, val_fraction, test_fraction, seed, where: str) -> dict[str, np.ndarray]:
    """Train / val / test index arrays holding out ``test_fraction`` and ``val_fraction`` of ``y``."""
    rest, test = stratified_split(y, test_fraction, seed, where)
    inner_train, inner_val = stratified_split(y[rest], val_fraction / max(1e-9, 1 - test_fraction), seed + 1, where)
    return {"train": rest[inner_train], "val": rest[inner_val], "test": test}

"""Any model's predictions on a labelled transfer set, read from one file (``specens cluster
--predictions``), so that groups and their report need no generalist trained here.

The file is an ``.npz`` as ``np.savez`` writes it, from PyTorch, JAX, TensorFlow or scikit-learn
arrays alike::

    logits   float (N, C)   the model's scores before the softmax, or
    probs    float (N, C)   its probabilities, each row on the simplex (within 1e-3): one of the two
    labels   int (N,)       each row's true class, in [0, C)
    classes  str (C,)       the class names, in the columns' order

Other keys are ignored. The file is read with ``allow_pickle=False``: an array that only
unpickling could read (an object array, a pickle named ``.npz``) is refused, never loaded.

The soft predictions clustered are p = softmax_T(z) of the logits, as for a generalist
(docs/method.md §3). Probabilities q stand for the logits log q, so at temperature T they become
q^(1/T) renormalised: a file of logits and one of their softmax give the same groups. At T = 1
probabilities are used as they are.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from specens.core.errors import DataError
from specens.core.io import fingerprint

from .covariance import check_probabilities, soft_predictions

SCORES = ("logits", "probs")  # exactly one of them
KEYS = (*SCORES, "labels", "classes")
MIN_ROWS = 2  # a covariance needs two examples


@dataclass(frozen=True)
class Predictions:
    """A checked predictions file: ``scores`` float64 (N, C) are its logits or probabilities
    (``kind``), ``labels`` int64 (N,), ``classes`` the C names, ``fingerprint`` the file's."""

    path: str
    kind: str
    scores: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    fingerprint: str

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def soft(self, temperature: float) -> np.ndarray:
        """The soft predictions at ``temperature`` (see the module docstring): float64 (N, C)."""
        z = torch.from_numpy(self.scores)
        if self.kind == "probs":
            if temperature == 1:
                return self.scores
            z = torch.log(z)  # log 0 = -inf: a zero stays zero at any T
        return soft_predictions(z, temperature).numpy()

    def top1(self) -> np.ndarray:
        """The model's top-1 class per row: int64 (N,)."""
        return self.scores.argmax(1)


def load_predictions(path: str | Path) -> Predictions:
    """Read and check a predictions file (layout in the module docstring); every problem is a
    :class:`DataError` naming the file and the key at fault."""
    path = str(path)
    arrays, names = _read(path)
    held = ", ".join(repr(k) for k in names) or "no arrays"
    present = [k for k in SCORES if k in arrays]
    if len(present) == 2:
        raise DataError(f"{path}: holds both 'logits' and 'probs'; keep one")
    if not present:
        raise DataError(f"{path}: holds neither 'logits' nor 'probs' (it holds {held})")
    kind = present[0]
    for key in ("labels", "classes"):
        if key not in arrays:
            raise DataError(f"{path}: no key {key!r} (it holds {held})")
    scores, labels, classes = arrays[kind], arrays["labels"], arrays["classes"]
    if scores.dtype.kind != "f" or scores.ndim != 2:
        raise DataError(f"{path}: key {kind!r} must be a 2-d float array (N, C), got {scores.dtype} {scores.shape}")
    n, c = scores.shape
    scores = scores.astype(np.float64)
    if not np.isfinite(scores).all():
        raise DataError(f"{path}: key {kind!r} holds NaN or infinite values")
    if labels.dtype.kind not in "iu" or labels.shape != (n,):
        raise DataError(
            f"{path}: key 'labels' must be integers of shape ({n},), one per row of {kind!r}, "
            f"got {labels.dtype} {labels.shape}"
        )
    if classes.dtype.kind != "U" or classes.shape != (c,):
        raise DataError(
            f"{path}: key 'classes' must be {c} strings, one per column of {kind!r}, got {classes.dtype} "
            f"{classes.shape}"
        )
    if kind == "probs":
        try:
            check_probabilities(scores, name="the probabilities of key 'probs'")
        except ValueError as e:
            raise DataError(f"{path}: {e}") from None
    class_names = tuple(str(x) for x in classes)
    if c < 2:
        raise DataError(f"{path}: key 'classes' names {c} class(es); clustering needs at least 2")
    seen: set[str] = set()
    twice = next((x for x in class_names if x in seen or seen.add(x)), None)
    if twice is not None:
        raise DataError(f"{path}: key 'classes' names {twice!r} twice")
    if n < MIN_ROWS:
        raise DataError(f"{path}: key {kind!r} has {n} row(s); a covariance needs at least {MIN_ROWS}")
    out = labels[(labels < 0) | (labels >= c)]
    if len(out):
        raise DataError(f"{path}: key 'labels' holds {int(out[0])}, outside the {c} classes [0, {c})")
    return Predictions(path, kind, scores, labels.astype(np.int64), class_names, fingerprint(path))


def _read(path: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays of :data:`KEYS` in the ``.npz`` at ``path``, read without unpickling anything, and
    the names of every array it holds."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file" if not Path(path).exists() else f"{path}: not a file")
    try:
        f = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        if "pickled" in str(e):  # neither a zip nor an .npy: numpy would try it as a pickle
            raise DataError(
                f"{path}: not an .npz file (numpy could read it only by unpickling, which specens never does); "
                "save the arrays with np.savez"
            ) from None
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: one .npy array, not an .npz holding logits or probs, labels and classes")
    arrays = {}
    with f:
        for key in [k for k in KEYS if k in f.files]:
            try:
                arrays[key] = f[key]
            except ValueError as e:
                if "allow_pickle" not in str(e):  # a damaged member
                    raise DataError(f"{path}: key {key!r} cannot be read ({e})") from None
                raise DataError(
                    f"{path}: key {key!r} is an object array, which only unpickling could read and specens never "
                    "unpickles; save numbers, and class names as strings (np.array(names, dtype=str))"
                ) from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                raise DataError(f"{path}: key {key!r} cannot be read ({e})") from None
        return arrays, list(f.files)

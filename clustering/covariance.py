"""The covariance of soft predictions, accumulated batch by batch (docs/method.md §3; the paper's §5.3).

    Σ = E[p pᵀ] − E[p] E[p]ᵀ        (population normalisation: divides by N, as ``np.cov(bias=True)``)

over a transfer set, with p = softmax_T(generalist(x)). Partial sums (count, Σp, Σppᵀ) are kept
in float64 and are mergeable, so shards or workers can each accumulate and be combined in any
order. Each batch's ``PᵀP`` is computed in the storage dtype, in blocks of rows so that the
temporary stays small, and added to the float64 (or, to halve memory, float32) running sum.

At very large C the dense update costs C²·N multiply-adds (15,000 classes × 100,000 examples is
2.3·10¹³: minutes on a few cores). ``top_k`` keeps, for the second-moment term only, each row's
k largest probabilities: the update becomes N·k² scatter-adds, exact for the pairs of classes an
example really confuses, while E[p] stays exact. The mass this ignores is reported
(:attr:`CovarianceAccumulator.dropped_mass`): for each example it is 1 − (Σ_top-k p)², an upper
bound on the second-moment mass left out.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch


class CovarianceAccumulator:
    """Streaming Σ = E[ppᵀ] − E[p]E[p]ᵀ of probability rows.

    Args:
        n_classes: C.
        top_k: None for the exact dense update; k < C for the sparse top-k second moment.
        dtype: ``"float64"`` (default) or ``"float32"`` storage of the C×C running sum.
        block: rows of ``PᵀP`` computed at a time (bounds the temporary to block × C).
        check: validate each batch (finite, non-negative, rows summing to 1 within ``atol``).
    """

    def __init__(
        self,
        n_classes: int,
        top_k: int | None = None,
        dtype: str = "float64",
        block: int = 2048,
        check: bool = True,
        atol: float = 1e-3,
    ):
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}")
        if top_k is not None and not 1 <= top_k <= n_classes:
            raise ValueError(f"top_k must be in [1, n_classes={n_classes}], got {top_k}")
        if dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
        self.n_classes, self.top_k, self.block, self.check, self.atol = n_classes, top_k, block, check, atol
        self.dtype = getattr(torch, dtype)
        self.count = 0
        self.sum = torch.zeros(n_classes, dtype=torch.float64)  # Σ_x p(x)
        self.outer = torch.zeros(n_classes, n_classes, dtype=self.dtype)  # Σ_x p(x) p(x)ᵀ
        self.dropped_mass = 0.0  # Σ_x (1 − (top-k mass)²); 0 for the dense update

    def update(self, probs: torch.Tensor | np.ndarray) -> CovarianceAccumulator:
        """Add a batch: probs of shape (batch, n_classes), rows on the simplex."""
        p = torch.as_tensor(probs)
        if p.ndim != 2 or p.shape[1] != self.n_classes:
            raise ValueError(f"probabilities must have shape (batch, {self.n_classes}), got {tuple(p.shape)}")
        if self.check:
            check_probabilities(p, self.atol)
        p = p.to(self.dtype)
        self.count += p.shape[0]
        self.sum += p.sum(0, dtype=torch.float64)
        if self.top_k is None or self.top_k == self.n_classes:
            for start in range(0, self.n_classes, self.block):
                rows = slice(start, start + self.block)
                self.outer[rows] += p[:, rows].T @ p  # (block, C)
        else:
            v, i = p.topk(self.top_k, dim=1)  # (B, k) each
            self.dropped_mass += float((1 - v.sum(1, dtype=torch.float64) ** 2).sum())
            flat = (i[:, :, None] * self.n_classes + i[:, None, :]).reshape(-1)  # (B·k·k,) positions in C×C
            self.outer.view(-1).index_add_(0, flat, (v[:, :, None] * v[:, None, :]).reshape(-1))
        return self

    def merge(self, other: CovarianceAccumulator) -> CovarianceAccumulator:
        """Add another accumulator's partial sums (same C, same top_k) into this one."""
        if (other.n_classes, other.top_k) != (self.n_classes, self.top_k):
            raise ValueError(
                f"cannot merge accumulators of (C, top_k) = {(other.n_classes, other.top_k)} "
                f"into {(self.n_classes, self.top_k)}"
            )
        self.count += other.count
        self.sum += other.sum
        self.outer += other.outer.to(self.dtype)
        self.dropped_mass += other.dropped_mass
        return self

    def mean(self) -> np.ndarray:
        """E[p], float64 of shape (n_classes,)."""
        self._nonempty()
        return (self.sum / self.count).numpy()

    def covariance(self) -> np.ndarray:
        """Σ, of shape (n_classes, n_classes), in the storage dtype, symmetrised."""
        self._nonempty()
        mu = self.sum / self.count
        cov = self.outer.to(torch.float64, copy=True).div_(self.count)
        cov.addr_(mu, mu, alpha=-1.0)  # in place: at C = 15,000 every C×C temporary is 1.8 GB
        _symmetrize_(cov, self.block)  # blocks of PᵀP summed in different orders differ in the last bits
        return cov.to(self.dtype).numpy()

    def _nonempty(self) -> None:
        if self.count == 0:
            raise ValueError("the accumulator has seen no examples")


def _symmetrize_(a: torch.Tensor, block: int) -> None:
    """Replace a square matrix by (a + aᵀ)/2 in place, one pair of blocks at a time."""
    n = a.shape[0]
    for i in range(0, n, block):
        for j in range(i, n, block):
            avg = (a[i : i + block, j : j + block] + a[j : j + block, i : i + block].T) / 2
            a[i : i + block, j : j + block] = avg
            a[j : j + block, i : i + block] = avg.T


def check_probabilities(p: torch.Tensor | np.ndarray, atol: float = 1e-3, name: str = "probabilities") -> None:
    """Raise ValueError unless p (batch, C) is finite, non-negative, and each row sums to 1 ± atol."""
    p = torch.as_tensor(p)
    if p.ndim != 2:
        raise ValueError(f"{name} must be 2-d (n_samples, n_classes), got shape {tuple(p.shape)}")
    if not torch.isfinite(p).all():
        raise ValueError(f"{name} hold NaN or infinite values")
    if (p < 0).any():
        raise ValueError(f"{name} hold negative values")
    dev = (p.sum(1, dtype=torch.float64) - 1).abs()
    if len(dev) and float(dev.max()) > atol:
        r = int(dev.argmax())
        raise ValueError(f"{name}: row {r} sums to {float(p[r].sum()):.6f}, not 1 (pass softmax outputs, not logits)")


def soft_predictions(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """p = softmax_T(z) (docs/method.md §3), in float64: logits (batch, n_classes) -> the same shape.
    Probabilities q given in place of logits become q^(1/T) renormalised through z = log q."""
    return torch.softmax(logits.double() / temperature, dim=1)


def prediction_covariance(
    batches: Iterable[torch.Tensor | np.ndarray], n_classes: int, *, top_k: int | None = None, dtype: str = "float64"
) -> CovarianceAccumulator:
    """Accumulate the covariance of a stream of probability batches, each (batch, n_classes).

    Returns the accumulator: ``.covariance()`` is Σ, ``.mean()`` is E[p], ``.count`` is N.
    """
    acc = CovarianceAccumulator(n_classes, top_k=top_k, dtype=dtype)
    for b in batches:
        acc.update(b)
    return acc

"""Precise batch norm: running statistics recomputed at the current weights (docs/generalist.md, "Batch norm").

Batch norm's running mean and variance are exponential averages over about the last ten steps
(momentum 0.1), and PyTorch starts the variance at 1. On a small dataset, or early in any run,
the weights move faster than those averages follow, so a net validated or exported in eval mode
normalises with statistics of weights it no longer has: the demo's generalist read validation at
chance for four epochs that way (``benchmarks/RESULTS.md``). :func:`recompute_batch_norm` replaces
the averages with the exact statistics of each layer's input over a fixed sample of the stage's
training stream ("precise BN", Wu & Johnson 2021), so that what is validated is what is exported.

Pure: a model and batches of inputs in, the model's buffers changed; no files, no devices chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batch_norms(model: nn.Module) -> list[_BatchNorm]:
    """``model``'s batch-norm layers that keep running statistics (registered modules only: a
    shared-trunk specialist's frozen trunk is the generalist's, not its own)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def epoch_inputs(stream: Any) -> Callable[[int], Iterator[torch.Tensor]]:
    """Epoch -> the inputs of ``stream``'s batches for that epoch (a stream with ``set_epoch``
    whose batches have ``inputs``): what a stage gives :class:`~specens.core.loop.Recipe` to
    recompute batch norm over."""

    def inputs(epoch: int) -> Iterator[torch.Tensor]:
        stream.set_epoch(epoch)
        return (batch.inputs for batch in stream)

    return inputs


class _Moments:
    """Per-channel count, mean and sum of squared deviations of a layer's inputs, merged batch by
    batch in float64 (Chan, Golub & LeVeque's pairwise update, exact up to rounding)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, None, None

    def add(self, x: torch.Tensor) -> None:
        """``x``: (B, C, ...) a batch-norm layer's input; channel is dimension 1."""
        dims = [d for d in range(x.dim()) if d != 1]
        x = x.detach().double()
        n = x.numel() // x.shape[1]
        mean = x.mean(dims)  # (C,)
        shape = [1, -1] + [1] * (x.dim() - 2)
        m2 = ((x - mean.view(shape)) ** 2).sum(dims)  # (C,)
        if self.mean is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.n * n / total)
        self.n = total


@torch.no_grad()
def recompute_batch_norm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Set every batch-norm layer's running mean and variance to the mean and unbiased variance of
    its input over all of ``batches`` (each (B, ...) inputs of ``model``), pooled over examples and
    positions exactly as one batch holding them all would give (not an average of per-batch
    statistics); returns the number of examples read, 0 when ``model`` has no batch norm (then
    ``batches`` is not read).

    **(choice)** During the pass the batch-norm layers normalise with each batch's own statistics,
    as in training, and every other module is in eval mode (dropout off: inference never sees its
    noise). The layers' modes, momenta and ``num_batches_tracked`` are restored afterwards; the
    weights are not touched. Batches are moved to the device of ``model``'s first parameter.
    """
    norms = batch_norms(model)
    if not norms:
        return 0
    device = next(model.parameters()).device
    moments = {m: _Moments() for m in norms}
    was_training = {m: m.training for m in model.modules()}
    tracked = {m: m.num_batches_tracked.clone() for m in norms}
    hooks = [m.register_forward_pre_hook(lambda m, args: moments[m].add(args[0])) for m in norms]
    model.eval()
    for m in norms:
        m.train()
    seen = 0
    try:
        for x in batches:
            model(x.to(device))
            seen += len(x)
    finally:
        for h in hooks:
            h.remove()
        for m, mode in was_training.items():
            m.train(mode)
    for m in norms:
        m.num_batches_tracked.copy_(tracked[m])
        s = moments[m]
        if s.n > 1:
            m.running_mean.copy_(s.mean.to(m.running_mean.dtype))
            m.running_var.copy_((s.m2 / (s.n - 1)).to(m.running_var.dtype))
    return seen

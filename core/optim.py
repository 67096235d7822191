"""The optimiser and learning-rate schedule every training stage uses."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def lr_lambda(schedule: str, warmup: float, total_steps: int) -> Callable[[int], float]:
    """Learning-rate multiplier per step: linear warm-up over ``warmup`` × ``total_steps``, then
    ``"cosine"`` decay to zero or ``"constant"``."""
    warm = int(warmup * total_steps)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return f


def make_optimizer(
    model: torch.nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov); no weight decay on biases and normalisation parameters.

    The fused implementations are used where every parameter allows them (float, on CPU or CUDA):
    one kernel per step instead of several passes over the weights, which for the ``bag`` model's
    2^18 x 128 embedding makes a CPU training step 3-4x faster."""
    params = list(model.parameters())
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, fused=fused)
    return torch.optim.AdamW(groups, lr=lr, fused=fused)


def make_schedule(
    optimizer: torch.optim.Optimizer, schedule: str, warmup: float, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step scheduler of :func:`lr_lambda` over ``total_steps`` optimiser steps."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(schedule, warmup, total_steps))

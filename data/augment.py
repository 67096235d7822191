"""Batch augmentations applied on the fly during training."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image by an integer offset in ``[-max_shift, max_shift]`` on both axes,
    filling with zeros (the paper's MNIST "jitter the input by up to two pixels").

    x: Tensor of shape (batch, channels, H, W). Returns a tensor of the same shape.
    """
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift))  # (B, C, H+2s, W+2s)
    offs = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator, device="cpu").tolist()
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offs)])

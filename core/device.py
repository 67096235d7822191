"""Devices and mixed precision: which device a stage runs on, and autocast where it pays."""

from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else is checked to exist here."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r}: CUDA is not available on this machine (set device to cpu or auto: "
                "--device where a command has it, else --set device=...)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ConfigError(f"device {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return dev


def autocast(device: torch.device, enabled: bool = True):
    """bfloat16 autocast on CUDA; a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def torch_seed(n: int) -> int:
    """A seed derived from a config's (``seed * 1009 + index``, ...) as torch takes one, below
    2**64: every seed a config allows then derives a valid one, and a small one is unchanged."""
    return n % 2**64

"""Weights and resumable training state, shared by every stage that trains.

Weights are safetensors files (no pickle). Training state for resumption lives in
``<work>/checkpoints/epoch-NNNN/`` (weights, optimizer and RNG state, progress);
``<work>/checkpoints/latest.json`` names the newest complete one and is switched atomically only
after that directory is fully written. Optimizer state is saved with ``torch.save`` and read back
with ``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointError
from .io import (
    atomic_path,
    check_no_links,
    check_target,
    fingerprint,
    publish_dir,
    read_artifact_json,
    read_json,
    write_json_atomic,
)

WEIGHTS = "model.safetensors"
STATE_FORMAT, STATE_VERSION = "specens.training-state", 1  # progress.json of a resumable training state
CHECKPOINT_FILES = ("epoch-[0-9][0-9][0-9][0-9]/", "latest.json", "best.safetensors")  # what <work>/checkpoints holds


def save_weights(
    model: torch.nn.Module | dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """Write ``model``'s state dict (or a state dict) to a safetensors file, atomically."""
    with atomic_path(path) as tmp:
        mode = tmp.stat().st_mode  # the umask's; safetensors writes owner-only files
        weights = model.state_dict() if isinstance(model, torch.nn.Module) else model
        state = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
        save_file(state, tmp, metadata=metadata)
        tmp.chmod(mode)


def verify_weights(path: str | os.PathLike, recorded: str, record: str) -> None:
    """Refuse a weights file that is missing or whose fingerprint is not the ``recorded`` one of
    its ``record`` (the metadata file's name), naming both values."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    fp = fingerprint(path)
    if fp != recorded:
        raise CheckpointError(
            f"{path}: fingerprint {fp} disagrees with {record}'s {recorded} (weights replaced "
            "after they were recorded?)"
        )


def check_shapes(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Refuse a weights file whose tensors are not ``model``'s names and shapes, reading only its
    header. Build ``model`` on the ``meta`` device first (no memory), so that the sizes a stranger's
    record states are allocated only once the weights file on disk has been found to hold them."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except Exception as e:  # safetensors raises its own error type for corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if stored != wanted:
        bad = sorted(set(stored) ^ set(wanted)) or sorted(k for k in wanted if stored[k] != wanted[k])
        raise CheckpointError(
            f"{path}: weights do not fit the model its record describes (first difference: "
            f"{bad[0]} {stored.get(bad[0])} stored, {wanted.get(bad[0])} described)"
        )


def load_weights(model: torch.nn.Module, path: str | os.PathLike | dict[str, torch.Tensor]) -> None:
    """Load a safetensors file (or a state dict held in memory) into ``model``; names and shapes
    must fit exactly, and a file's floating-point tensors must be finite (a NaN or infinite
    weight would predict NaN everywhere without an error: refused naming the tensor)."""
    if isinstance(path, dict):
        model.load_state_dict(path)
        return
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except Exception as e:  # safetensors raises its own error type for corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    for k, v in model.state_dict().items():
        if v.shape != state[k].shape:
            raise CheckpointError(f"{path}: {k} has shape {list(state[k].shape)}, the model's is {list(v.shape)}")
        if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all()):
            raise CheckpointError(f"{path}: {k} holds non-finite values (NaN or infinity): they cannot predict")
    model.load_state_dict(state)


def checkpoint_dir(work: str | os.PathLike) -> Path:
    """``<work>/checkpoints``, checked to be no symbolic link and to hold nothing but
    :data:`CHECKPOINT_FILES` (no link inside either), so that writing and pruning the training
    state never reaches a directory the stage does not own."""
    ckpt_root = check_no_links(work, Path(work) / "checkpoints")
    check_target(ckpt_root, CHECKPOINT_FILES, "training checkpoints")
    return ckpt_root


def save_training_state(
    work: str | os.PathLike,
    epoch: int,
    model: torch.nn.Module,
    state: dict[str, Any],
    progress: dict[str, Any],
    keep: int = 2,
) -> None:
    """Write the state after ``epoch`` into its own directory, then point ``latest.json`` at it.

    ``state`` holds tensors and plain containers only (optimizer, scheduler and RNG states), so
    that it loads with ``weights_only=True``. Older epoch directories beyond ``keep`` are removed.
    """
    ckpt_root = checkpoint_dir(work)
    name = f"epoch-{epoch:04d}"

    def write(tmp: Path) -> None:
        save_weights(model, tmp / WEIGHTS)
        torch.save(state, tmp / "state.pt")
        record = {"format": STATE_FORMAT, "format_version": STATE_VERSION, "epoch": epoch, **progress}
        write_json_atomic(tmp / "progress.json", record)

    publish_dir(ckpt_root / name, write)
    write_json_atomic(ckpt_root / "latest.json", {"epoch": epoch, "dir": name})
    for old in sorted(ckpt_root.glob("epoch-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _latest(work: str | os.PathLike) -> Path | None:
    latest = Path(work) / "checkpoints" / "latest.json"
    if not latest.is_file():
        return None
    return latest.parent / read_json(latest)["dir"]


def training_progress(work: str | os.PathLike) -> dict | None:
    """``progress.json`` of the newest complete training state, or None when there is none."""
    d = _latest(work)
    return None if d is None else _read_progress(d)


def load_training_state(work: str | os.PathLike, model: torch.nn.Module) -> tuple[dict, dict] | None:
    """Load the newest complete training state into ``model``; returns (state, progress) or None."""
    d = _latest(work)
    if d is None:
        return None
    load_weights(model, d / WEIGHTS)
    try:
        state = torch.load(d / "state.pt", weights_only=True, map_location="cpu")
    except Exception as e:
        raise CheckpointError(f"{d / 'state.pt'}: cannot be read ({e})") from None
    return state, _read_progress(d)


def _read_progress(d: Path) -> dict:
    """``progress.json`` of one training state; one written in another format is refused, naming
    the version, with the way out (``--restart`` discards the state)."""
    try:
        return read_artifact_json(d / "progress.json", STATE_FORMAT, STATE_VERSION)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; rerun with --restart (restart=True) to discard this training state") from None


def discard_training_state(work: str | os.PathLike) -> None:
    """Remove ``<work>/checkpoints`` (a restart); a link there is refused, not followed."""
    shutil.rmtree(checkpoint_dir(work), ignore_errors=True)

"""Generalist artifacts: one save/load pair for the exported model, one for resumable training state.

An exported generalist is a directory holding

- ``model.safetensors``: the weights (no pickle);
- ``model.json``: format and version, the :class:`~specens.generalist.models.ModelSpec`, the class
  names, the training config, metrics, and the weights' fingerprint.

Training state for resumption lives in ``<run>/checkpoints/epoch-NNNN/`` (weights, optimizer and
RNG state, progress); ``<run>/checkpoints/latest.json`` names the newest complete one and is
switched atomically only after that directory is fully written. Optimizer state is saved with
``torch.save`` and read back with ``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from specens.data.format import temp_sibling, write_json_atomic

from .models import ModelSpec

FORMAT = "specens.generalist"
FORMAT_VERSION = 1
WEIGHTS, META = "model.safetensors", "model.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed, or does not fit what it is used with."""


def fingerprint(path: str | os.PathLike) -> str:
    """First 16 hex digits of the SHA-256 of a file: identifies a trained model's weights."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def save_weights(model: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    tmp = temp_sibling(path)
    try:
        open(tmp, "xb").close()
        mode = tmp.stat().st_mode  # the umask's; safetensors writes owner-only files
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, tmp, metadata=metadata)
        tmp.chmod(mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_weights(model: torch.nn.Module, path: Path) -> None:
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except Exception as e:  # safetensors raises its own error type for corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the model: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")
    for k, v in model.state_dict().items():
        if v.shape != state[k].shape:
            raise CheckpointError(f"{path}: {k} has shape {list(state[k].shape)}, the model's is {list(v.shape)}")
    model.load_state_dict(state)


@dataclass
class Generalist:
    """A loaded generalist: the model (in eval mode) and what it was trained on."""

    model: torch.nn.Module
    spec: ModelSpec
    classes: tuple[str, ...]
    fingerprint: str
    meta: dict[str, Any]

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def save_generalist(run_dir: str | os.PathLike, model: torch.nn.Module, spec: ModelSpec,
                    classes: tuple[str, ...] | list[str], config: dict[str, Any] | None = None,
                    metrics: dict[str, Any] | None = None) -> str:
    """Export ``model`` into ``run_dir`` (weights first, then ``model.json``); returns its fingerprint."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if len(classes) != spec.n_classes:
        raise CheckpointError(f"{len(classes)} class names for a model of {spec.n_classes} classes")
    save_weights(model, run_dir / WEIGHTS)
    fp = fingerprint(run_dir / WEIGHTS)
    write_json_atomic(run_dir / META, {
        "format": FORMAT, "format_version": FORMAT_VERSION, "fingerprint": fp, "model": spec.to_json(),
        "classes": list(classes), "config": config or {}, "metrics": metrics or {}})
    return fp


def read_artifact_json(path: str | os.PathLike, fmt: str, version: int, hint: str = "") -> dict[str, Any]:
    """Read an artifact's JSON and check its ``format`` and ``format_version``; every problem is a
    :class:`CheckpointError` naming the file (``hint`` is appended when the file is missing)."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing{hint}") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path}: 'format' is {got!r}, expected {fmt!r}")
    if meta.get("format_version") != version:
        raise CheckpointError(f"{path}: 'format_version' is {meta.get('format_version')!r}, this specens reads {version}")
    return meta


def read_meta(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``model.json`` of an exported generalist."""
    path = Path(run_dir) / META
    meta = read_artifact_json(path, FORMAT, FORMAT_VERSION, f"; is {run_dir} a trained generalist's run directory?")
    for key in ("model", "classes", "fingerprint"):
        if key not in meta:
            raise CheckpointError(f"{path}: missing key {key!r}")
    if len(meta["classes"]) != meta["model"]["n_classes"]:
        raise CheckpointError(f"{path}: {len(meta['classes'])} classes but model.n_classes is "
                              f"{meta['model']['n_classes']}")
    return meta


def load_generalist(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> Generalist:
    """Load an exported generalist; checks that the weights are the ones ``model.json`` describes."""
    meta = read_meta(run_dir)
    weights = Path(run_dir) / WEIGHTS
    fp = fingerprint(weights) if weights.is_file() else None
    if fp is None:
        raise CheckpointError(f"{weights}: missing")
    if fp != meta["fingerprint"]:
        raise CheckpointError(f"{weights}: fingerprint {fp} disagrees with {META}'s {meta['fingerprint']} "
                              "(weights replaced after export?)")
    spec = ModelSpec.from_json(meta["model"])
    model = spec.build()
    load_weights(model, weights)
    return Generalist(model.to(device).eval(), spec, tuple(meta["classes"]), fp, meta)


# ----------------------------------------------------------------------------- training state


def publish_dir(final: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Create directory ``final`` atomically: ``write(tmp)`` fills a fresh hidden sibling, which
    then replaces ``final`` by rename. A crash leaves either the old ``final`` or the new one
    (plus, at worst, a hidden ``.name.*`` leftover), never a half-written ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final, suffix="")
    tmp.mkdir()
    try:
        write(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_training_state(run_dir: str | os.PathLike, epoch: int, model: torch.nn.Module,
                        state: dict[str, Any], progress: dict[str, Any], keep: int = 2) -> None:
    """Write the state after ``epoch`` into its own directory, then point ``latest.json`` at it.

    ``state`` holds tensors and plain containers only (optimizer, scheduler and RNG states), so
    that it loads with ``weights_only=True``. Older epoch directories beyond ``keep`` are removed.
    """
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:04d}"

    def write(tmp: Path) -> None:
        save_weights(model, tmp / WEIGHTS)
        torch.save(state, tmp / "state.pt")
        write_json_atomic(tmp / "progress.json", {"epoch": epoch, **progress})
    publish_dir(ckpt_root / name, write)
    write_json_atomic(ckpt_root / "latest.json", {"epoch": epoch, "dir": name})
    for old in sorted(ckpt_root.glob("epoch-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def training_progress(run_dir: str | os.PathLike) -> dict | None:
    """``progress.json`` of the newest complete training state, or None when there is none."""
    latest = Path(run_dir) / "checkpoints" / "latest.json"
    if not latest.is_file():
        return None
    pointer = json.loads(latest.read_text())
    return json.loads((latest.parent / pointer["dir"] / "progress.json").read_text())


def load_training_state(run_dir: str | os.PathLike, model: torch.nn.Module) -> tuple[dict, dict] | None:
    """Load the newest complete training state into ``model``; returns (state, progress) or None."""
    ckpt_root = Path(run_dir) / "checkpoints"
    latest = ckpt_root / "latest.json"
    if not latest.is_file():
        return None
    pointer = json.loads(latest.read_text())
    d = ckpt_root / pointer["dir"]
    load_weights(model, d / WEIGHTS)
    try:
        state = torch.load(d / "state.pt", weights_only=True, map_location="cpu")
    except Exception as e:
        raise CheckpointError(f"{d / 'state.pt'}: cannot be read ({e})") from None
    progress = json.loads((d / "progress.json").read_text())
    return state, progress

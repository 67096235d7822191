"""Generalist artifacts: saving and loading the exported model.

An exported generalist is a directory holding

- ``model.safetensors``: the weights (no pickle);
- ``model.json``: format and version, the :class:`~specens.generalist.models.ModelSpec`, the class
  names, the training config, metrics, and the weights' fingerprint.

Training state for resumption lives in ``<run>/checkpoints/`` (:mod:`specens.core.checkpoint`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from specens.core.checkpoint import WEIGHTS, load_weights, save_weights
from specens.core.errors import CheckpointError
from specens.core.io import fingerprint, read_artifact_json, write_json_atomic

from .models import ModelSpec

FORMAT = "specens.generalist"
FORMAT_VERSION = 1
META = "model.json"


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

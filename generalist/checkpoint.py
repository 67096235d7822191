"""Generalist artifacts: saving and loading the exported model.

An exported generalist is a directory holding

- ``model.safetensors``: the weights (no pickle);
- ``model.json``: format and version, the :class:`~specens.generalist.models.ModelSpec`, the class
  names, the training config, metrics, the weights' fingerprint and the record's (weights, spec
  and classes: what later stages record to say which generalist they were made from).

Training state for resumption lives in ``<run>/checkpoints/`` (:mod:`specens.core.checkpoint`).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from specens.core.checkpoint import WEIGHTS, check_shapes, load_weights, save_weights, verify_weights
from specens.core.cost import check_cost
from specens.core.errors import CheckpointError, check_same_classes, check_same_input
from specens.core.io import fingerprint, read_artifact_json, record_fingerprint, write_json_atomic

from .models import ModelSpec, TrustedCodeWarning

FORMAT = "specens.generalist"
FORMAT_VERSION = 2  # 2: the fingerprint covers the spec and classes; weights_fingerprint added
META = "model.json"
KEYS = ("format", "format_version", "fingerprint", "weights_fingerprint", "model", "classes", "config", "metrics")


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

    def check_fits(self, info, where: str, data_where: str) -> None:
        """Refuse a dataset (a :class:`~specens.data.format.DatasetInfo`) whose classes or input
        shape are not this generalist's, naming both sides."""
        check_same_classes(self.classes, info.classes, where, data_where)
        check_same_input(self.spec.input_shape, info.input.shape, where, data_where)


def generalist_fingerprint(weights_fingerprint: str, spec: dict[str, Any], classes: list[str]) -> str:
    """The record's fingerprint: the weights, the architecture and the class list (all that
    changes what the generalist predicts and what its outputs mean)."""
    return record_fingerprint(weights_fingerprint, {"model": spec, "classes": list(classes)})


def save_generalist(
    run_dir: str | os.PathLike,
    model: torch.nn.Module,
    spec: ModelSpec,
    classes: tuple[str, ...] | list[str],
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> str:
    """Export ``model`` into ``run_dir`` (weights first, then ``model.json``); returns its fingerprint."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if len(classes) != spec.n_classes:
        raise CheckpointError(f"{len(classes)} class names for a model of {spec.n_classes} classes")
    save_weights(model, run_dir / WEIGHTS)
    weights_fp = fingerprint(run_dir / WEIGHTS)
    spec_json = json.loads(json.dumps(spec.to_json()))  # tuples as lists, as read back
    fp = generalist_fingerprint(weights_fp, spec_json, list(classes))
    write_json_atomic(
        run_dir / META,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fingerprint": fp,
            "weights_fingerprint": weights_fp,
            "model": spec_json,
            "classes": list(classes),
            "config": config or {},
            "metrics": metrics or {},
        },
    )
    return fp


def read_meta(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``model.json`` of an exported generalist: every key present with its type,
    the spec well formed, the class list fitting it, and the fingerprint its fields give."""
    path = Path(run_dir) / META
    meta = read_artifact_json(path, FORMAT, FORMAT_VERSION, f"; is {run_dir} a trained generalist's run directory?")
    for key in KEYS:
        if key not in meta:
            raise CheckpointError(f"{path}: missing key {key!r}")
    extra = sorted(set(meta) - set(KEYS))
    if extra:
        raise CheckpointError(f"{path}: unknown keys {extra}")
    for key, tp in (("fingerprint", str), ("weights_fingerprint", str), ("config", dict), ("metrics", dict)):
        if not isinstance(meta[key], tp):
            raise CheckpointError(f"{path}: {key!r} must be a {tp.__name__}, got {meta[key]!r:.60}")
    spec = ModelSpec.from_json(meta["model"], f"{path}: 'model'")
    classes = meta["classes"]
    if not (
        isinstance(classes, list) and all(isinstance(c, str) for c in classes) and len(set(classes)) == len(classes)
    ):
        raise CheckpointError(f"{path}: 'classes' must be a list of distinct strings")
    if len(classes) != spec.n_classes:
        raise CheckpointError(f"{path}: {len(classes)} classes but model.n_classes is {spec.n_classes}")
    check_metrics(meta["metrics"], f"{path}: 'metrics'")
    want = generalist_fingerprint(meta["weights_fingerprint"], meta["model"], classes)
    if want != meta["fingerprint"]:
        raise CheckpointError(
            f"{path}: 'fingerprint' is {meta['fingerprint']}, but its weights_fingerprint, model "
            f"and classes give {want} (edited after export?)"
        )
    return meta


def check_metrics(metrics: dict[str, Any], where: str) -> None:
    """The parts of an exported model's ``metrics`` that later stages read must have their types."""
    for key, ok, want in (
        ("best_epoch", _is_count, "an int >= 0"),
        ("epochs_run", _is_count, "an int >= 0"),
        ("stopped_early", lambda v: isinstance(v, bool), "true or false"),
        ("history", lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v), "a list of objects"),
        ("cost", lambda v: v is None or isinstance(v, dict), "an object"),
    ):
        if key in metrics and not ok(metrics[key]):
            raise CheckpointError(f"{where}.{key} must be {want}, got {metrics[key]!r:.60}")
    if isinstance(metrics.get("cost"), dict):
        check_cost(metrics["cost"], f"{where}.cost")


def training_config(run_dir: str | os.PathLike, trust_code: bool = False) -> dict[str, Any]:
    """The training config recorded in ``run_dir``'s ``model.json``, as the start of another
    training like it (the compute-matched baselines, a student). The record is input from whoever
    wrote the directory: a ``model`` there that names code is refused unless ``trust_code``, and
    ``trust_code`` is what the new config carries."""
    from .models import is_code

    path = Path(run_dir) / META
    saved = dict(read_meta(run_dir)["config"])
    model = saved.get("model", "")
    if isinstance(model, str) and is_code(model) and not trust_code:
        raise CheckpointError(
            f"{path}: config.model {model!r} names code to import; training from this record "
            "would run it. If you trust where this directory came from, pass --trust-code "
            "(trust_code=True)"
        )
    return {**saved, "trust_code": trust_code}


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def load_generalist(
    run_dir: str | os.PathLike, device: str | torch.device = "cpu", trust_code: bool = False
) -> Generalist:
    """Load an exported generalist; checks that the weights are the ones ``model.json`` describes.
    A model that names code (``module:callable``) is refused unless ``trust_code``."""
    meta = read_meta(run_dir)
    weights = Path(run_dir) / WEIGHTS
    verify_weights(weights, meta["weights_fingerprint"], META)
    spec = ModelSpec.from_json(meta["model"])
    with torch.device("meta"):  # the sizes the record states, checked against the file before any allocation
        skeleton = spec.build(trust_code, str(Path(run_dir) / META))
    check_shapes(skeleton, weights)
    with warnings.catch_warnings():  # the skeleton's build said it already
        warnings.simplefilter("ignore", TrustedCodeWarning)
        model = spec.build(trust_code, str(Path(run_dir) / META))
    load_weights(model, weights)
    return Generalist(model.to(device).eval(), spec, tuple(meta["classes"]), meta["fingerprint"], meta)

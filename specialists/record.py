"""A trained specialist's record, ``specialist.json`` beside its ``model.safetensors`` (METHOD §4):
where it lives in a run, its fingerprint, how it is read and checked, and how it is loaded.

The record says what the specialist predicts (its group and class names, the dustbin correction
for the oversampling, the generalist's model spec and, for a shared trunk, how many top blocks it
owns), what it was made from (the generalist's and the clusters' fingerprints), the gate's
verdict, its config, cost and training history. Every reader goes through
:func:`read_specialist`, which checks every key and refuses a record edited after training.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from specens.core.checkpoint import load_weights, save_weights, verify_weights
from specens.core.cost import check_cost
from specens.core.errors import CheckpointError
from specens.core.io import fingerprint, publish_dir, read_artifact_json, record_fingerprint, write_json_atomic

from .model import build_specialist, dustbin_correction

FORMAT, FORMAT_VERSION = "specens.specialist", 2  # 2: the record's fingerprint and its weights'

META = "specialist.json"

SPECIALIST_FILES = (META, "model.safetensors")

# The fields that change what a specialist predicts or where it applies: its record fingerprint covers them.
PREDICTION_FIELDS = (
    "index",
    "group",
    "classes",
    "n_classes",
    "dustbin_correction",
    "generalist_fingerprint",
    "clusters_fingerprint",
    "model",
    "top_blocks",
)

KEYS = (
    "format",
    "format_version",
    "fingerprint",
    "weights_fingerprint",
    *PREDICTION_FIELDS,
    "pi",
    "rho",
    "config",
    "config_key",
    "gate",
    "cost",
    "metrics",
)


def specialist_dir(out: str | Path, index: int) -> Path:
    return Path(out) / "specialists" / f"s{index:03d}"


def work_dir(out: str | Path, index: int) -> Path:
    """Where specialist ``index`` keeps its checkpoints while it trains (hidden, beside the artifact)."""
    return Path(out) / "specialists" / f".s{index:03d}.work"


def specialist_fingerprint(meta: dict[str, Any]) -> str:
    """The record's fingerprint: its weights' fingerprint, :data:`PREDICTION_FIELDS` and whether
    its gate is on (which decides whether the ensemble uses it)."""
    fields = {k: meta[k] for k in PREDICTION_FIELDS}
    return record_fingerprint(meta["weights_fingerprint"], {**fields, "gate_on": meta["gate"]["on"]})


def read_specialist(path: str | Path) -> dict[str, Any]:
    """Read and check ``specialist.json``: every key present with its type, and the fingerprint
    its fields give. Every problem is a :class:`CheckpointError` naming the file and the key."""
    path = Path(path)
    meta_path = path / META if path.is_dir() else path
    meta = read_artifact_json(meta_path, FORMAT, FORMAT_VERSION)
    missing, extra = [k for k in KEYS if k not in meta], sorted(set(meta) - set(KEYS))
    if missing or extra:
        raise CheckpointError(
            f"{meta_path}: "
            + "; ".join(([f"missing keys {missing}"] if missing else []) + ([f"unknown keys {extra}"] if extra else []))
        )
    _check_record(meta, meta_path)
    want = specialist_fingerprint(meta)
    if want != meta["fingerprint"]:
        raise CheckpointError(
            f"{meta_path}: 'fingerprint' is {meta['fingerprint']}, but its fields give {want} (edited after training?)"
        )
    return meta


def _check_record(meta: dict[str, Any], where: Path) -> None:
    from specens.generalist.checkpoint import check_metrics
    from specens.generalist.models import ModelSpec

    def is_int(v, lo=0):
        return isinstance(v, int) and not isinstance(v, bool) and v >= lo

    def is_num(v):
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    n, group, gate = meta["n_classes"], meta["group"], meta["gate"]
    checks = [
        ("fingerprint", isinstance(meta["fingerprint"], str), "a string"),
        ("weights_fingerprint", isinstance(meta["weights_fingerprint"], str), "a string"),
        ("index", is_int(meta["index"]), "an int >= 0"),
        ("n_classes", is_int(n, 2), "an int >= 2"),
        (
            "group",
            isinstance(group, list)
            and group
            and all(is_int(c) for c in group)
            and is_int(n)
            and group == sorted(set(group))
            and group[-1] < n,
            "a sorted list of distinct class indices",
        ),
        (
            "classes",
            isinstance(meta["classes"], list)
            and isinstance(group, list)
            and len(meta["classes"]) == len(group)
            and all(isinstance(c, str) for c in meta["classes"]),
            "a list of one name per class of 'group'",
        ),
        ("pi", is_num(meta["pi"]) and 0 < meta["pi"] < 1, "a number in (0, 1)"),
        ("rho", is_num(meta["rho"]) and 0 < meta["rho"] < 1, "a number in (0, 1)"),
        ("dustbin_correction", is_num(meta["dustbin_correction"]), "a finite number"),
        ("generalist_fingerprint", isinstance(meta["generalist_fingerprint"], str), "a string"),
        ("clusters_fingerprint", isinstance(meta["clusters_fingerprint"], str), "a string"),
        (
            "model",
            isinstance(meta["model"], dict) and "generalist_model" in meta["model"],
            "an object with 'generalist_model'",
        ),
        ("top_blocks", is_int(meta["top_blocks"]), "an int >= 0 (0: the whole body)"),
        ("config", isinstance(meta["config"], dict), "an object"),
        ("config_key", isinstance(meta["config_key"], dict), "an object"),
        ("gate", isinstance(gate, dict) and isinstance(gate.get("on"), bool), "an object with 'on': true or false"),
        ("cost", isinstance(meta["cost"], dict), "an object"),
        ("metrics", isinstance(meta["metrics"], dict), "an object"),
    ]
    for key, ok, want in checks:
        if not ok:
            raise CheckpointError(f"{where}: {key!r} must be {want}, got {meta[key]!r:.60}")
    if abs(meta["dustbin_correction"] - dustbin_correction(meta["pi"], meta["rho"])) > 1e-9:
        raise CheckpointError(
            f"{where}: 'dustbin_correction' is {meta['dustbin_correction']!r}, but pi and rho give "
            f"{dustbin_correction(meta['pi'], meta['rho'])!r}"
        )
    ModelSpec.from_json(meta["model"]["generalist_model"], f"{where}: 'model.generalist_model'")
    check_cost(meta["cost"], f"{where}: 'cost'")
    check_metrics(meta["metrics"], f"{where}: 'metrics'")


def load_specialist(
    path: str | Path,
    generalist_model: torch.nn.Module | None = None,
    device: str | torch.device = "cpu",
    trust_code: bool = False,
):
    """Load a trained specialist: (model in eval mode, metadata). The architecture is rebuilt from
    the generalist's spec stored in the metadata (code it names only with ``trust_code``); pass
    ``generalist_model`` to reuse its body. The weights must be the ones the record names."""
    from specens.generalist.models import ModelSpec

    meta = read_specialist(path)
    weights = Path(path) / "model.safetensors"
    verify_weights(weights, meta["weights_fingerprint"], META)
    group = torch.tensor(meta["group"])
    if generalist_model is None:
        if meta["top_blocks"]:
            raise CheckpointError(
                f"{Path(path) / META}: a shared-trunk specialist (top_blocks {meta['top_blocks']}) "
                "runs on its generalist's trunk: pass generalist_model (Ensemble.load does)"
            )
        spec = ModelSpec.from_json(meta["model"]["generalist_model"])
        generalist_model = spec.build(trust_code, str(Path(path) / META))
    try:
        model = build_specialist(generalist_model, group, top_blocks=meta["top_blocks"])
    except ValueError as e:
        raise CheckpointError(f"{Path(path) / META}: 'top_blocks': {e}") from None
    load_weights(model, weights)
    return model.to(device).eval(), meta


def publish_specialist(work: Path, final: Path, model: torch.nn.Module, meta: dict) -> None:
    """Write the artifact into a fresh directory, rename it into place, drop the work directory.
    ``meta`` gains the weights' fingerprint and the record's."""

    def write(tmp: Path) -> None:
        save_weights(model, tmp / "model.safetensors")
        meta["weights_fingerprint"] = fingerprint(tmp / "model.safetensors")
        meta["model"] = json.loads(json.dumps(meta["model"]))  # tuples as lists, as read back
        meta["fingerprint"] = specialist_fingerprint(meta)
        write_json_atomic(tmp / META, meta)

    publish_dir(final, write, own=SPECIALIST_FILES, what="a trained specialist")
    shutil.rmtree(work, ignore_errors=True)

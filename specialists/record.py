"""A trained specialist's record, ``specialist.json`` beside its ``model.safetensors`` (docs/method.md §4):
where it lives in a run, its fingerprint, how it is read and checked, and how it is loaded.

The record says what the specialist predicts (its group and class names, the dustbin correction
for the oversampling, the generalist's model spec and, for a shared trunk, how many top blocks it
owns), what it was made from (the generalist's and the clusters' fingerprints), the gate's
verdict, its fit report (:mod:`.fit`), its config, cost and training history
(:class:`SpecialistRecord`). Every reader goes
through :func:`read_specialist`, which checks every key and refuses a record edited after training.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from specens.core.checkpoint import load_weights, save_weights, verify_weights
from specens.core.config import param
from specens.core.cost import TrainingCost
from specens.core.errors import CheckpointError
from specens.core.io import fingerprint, publish_dir, read_artifact_json, record_fingerprint, write_json_atomic
from specens.core.loop import EpochRecord, TrainingMetrics
from specens.core.records import Record

from .fit import FitReport
from .gate import GateRecord
from .model import MAX_WIDEN, build_specialist, dustbin_correction

FORMAT, FORMAT_VERSION = "specens.specialist", 4  # 3: widen; 4: the fit report

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
    "widen",
)


@dataclass(frozen=True, kw_only=True)
class SpecialistEpoch(EpochRecord):
    """A specialist's epoch record: the loop's, with its routed validation (the validation
    examples routed to it, how many the generalist combined with it gets right, their NLL)."""

    val_routed: int | None = param(None, ge=0)
    val_correct: int | None = param(None, ge=0)
    val_nll: float | None = param(None, ge=0)


@dataclass(frozen=True, kw_only=True)
class SpecialistMetrics(TrainingMetrics):
    """A specialist's training ``metrics``: the loop's outcome and its epoch records."""

    history: list[SpecialistEpoch]


@dataclass(frozen=True, kw_only=True)
class SpecialistRecord(Record):
    """``specialist.json``. ``model`` holds the generalist's spec as JSON (``generalist_model``),
    ``top_blocks`` how many of its blocks the specialist owns on the shared trunk (0: a copy of
    the whole body), ``widen`` how much wider their inner channels are; ``config`` / ``config_key``
    the training config and the part of it that decides what is trained. The two fingerprints are
    filled in by :func:`publish_specialist`. :meth:`from_json` also checks the group against the
    class count, the dustbin correction against pi and rho, the spec, and the fingerprint."""

    ARTIFACT = (FORMAT, FORMAT_VERSION)
    index: int = param(ge=0)
    group: list[int] = param(ge=0)  # sorted, distinct class indices below n_classes
    classes: list[str]  # one name per class of group
    n_classes: int = param(ge=2)
    pi: float = param(gt=0, lt=1)  # the group's share of the training split
    rho: float = param(gt=0, lt=1)  # its share of an enriched batch
    dustbin_correction: float
    generalist_fingerprint: str
    clusters_fingerprint: str
    model: dict[str, Any]  # as fingerprinted: the generalist's spec (generalist_model) and input_shape
    top_blocks: int = param(ge=0)  # 0: the whole body
    widen: int = param(ge=1, le=MAX_WIDEN)
    config: dict[str, Any]
    config_key: dict[str, Any]
    gate: GateRecord
    cost: TrainingCost
    metrics: SpecialistMetrics
    fit: FitReport  # within-group scores against the generalist, and the verdict (.fit)
    lr: float = param(gt=0)  # the peak learning rate it trained with (chosen on validation where the config's is 0)
    lr_trials: list[dict[str, Any]]  # the one-epoch trials that chose it: lr, train_loss, val_nll
    weights_fingerprint: str = ""
    fingerprint: str = ""

    def expected_fingerprint(self) -> str:
        return specialist_fingerprint(self.to_json())

    def checks(self) -> list[tuple[bool, str]]:
        group, correction = self.group, dustbin_correction(self.pi, self.rho)
        return [
            (
                bool(group) and group == sorted(set(group)) and group[-1] < self.n_classes,
                f"'group' must be a sorted list of distinct class indices below 'n_classes', got {group!r:.60}",
            ),
            (len(self.classes) == len(group), "'classes' must be a list of one name per class of 'group'"),
            (
                abs(self.dustbin_correction - correction) <= 1e-9,
                f"'dustbin_correction' is {self.dustbin_correction!r}, but pi and rho give {correction!r}",
            ),
            ("generalist_model" in self.model, "'model' must be an object with 'generalist_model'"),
            (
                all(isinstance(t, dict) and "lr" in t for t in self.lr_trials),
                "'lr_trials' must be a list of objects with 'lr'",
            ),
        ]

    @classmethod
    def from_json(cls, data: Any, where: str) -> SpecialistRecord:
        """The record's fields and :meth:`checks`, then the generalist's spec well formed and the
        fingerprint the fields give; each problem is a :class:`CheckpointError` naming ``where``."""
        from specens.generalist.models import ModelSpec

        record = super().from_json(data, where)
        ModelSpec.from_json(record.model["generalist_model"], f"{where}: 'model.generalist_model'")
        if record.expected_fingerprint() != record.fingerprint:
            raise CheckpointError(
                f"{where}: 'fingerprint' is {record.fingerprint}, but its fields give "
                f"{record.expected_fingerprint()} (edited after training?)"
            )
        return record


def specialist_fingerprint(data: dict[str, Any]) -> str:
    """The fingerprint of a record (as JSON): its weights' fingerprint, :data:`PREDICTION_FIELDS`
    and whether its gate is on (which decides whether the ensemble uses it)."""
    fields_ = {k: data[k] for k in PREDICTION_FIELDS}
    return record_fingerprint(data["weights_fingerprint"], {**fields_, "gate_on": data["gate"]["on"]})


def specialist_dir(out: str | Path, index: int) -> Path:
    return Path(out) / "specialists" / f"s{index:03d}"


def work_dir(out: str | Path, index: int) -> Path:
    """Where specialist ``index`` keeps its checkpoints while it trains (hidden, beside the artifact)."""
    return Path(out) / "specialists" / f".s{index:03d}.work"


def read_specialist(path: str | Path) -> SpecialistRecord:
    """Read and check ``specialist.json`` (a file, or the specialist's directory):
    :meth:`SpecialistRecord.from_json`."""
    path = Path(path)
    meta_path = path / META if path.is_dir() else path
    return SpecialistRecord.from_json(read_artifact_json(meta_path, FORMAT, FORMAT_VERSION), str(meta_path))


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

    record = read_specialist(path)
    weights = Path(path) / "model.safetensors"
    verify_weights(weights, record.weights_fingerprint, META)
    group = torch.tensor(record.group)
    if generalist_model is None:
        if record.top_blocks:
            raise CheckpointError(
                f"{Path(path) / META}: a shared-trunk specialist (top_blocks {record.top_blocks}) "
                "runs on its generalist's trunk: pass generalist_model (Ensemble.load does)"
            )
        spec = ModelSpec.from_json(record.model["generalist_model"], f"{Path(path) / META}: 'model.generalist_model'")
        generalist_model = spec.build(trust_code, str(Path(path) / META))
    try:
        model = build_specialist(generalist_model, group, top_blocks=record.top_blocks, widen=record.widen)
    except ValueError as e:
        raise CheckpointError(f"{Path(path) / META}: 'top_blocks' / 'widen': {e}") from None
    load_weights(model, weights)
    return model.to(device).eval(), record


def publish_specialist(work: Path, final: Path, model: torch.nn.Module, record: SpecialistRecord) -> SpecialistRecord:
    """Write the artifact into a fresh directory, rename it into place, drop the work directory.
    Returns ``record`` with the weights' fingerprint and its own filled in, as written."""
    published = []

    def write(tmp: Path) -> None:
        save_weights(model, tmp / "model.safetensors")
        sealed = dataclasses.replace(
            record,
            weights_fingerprint=fingerprint(tmp / "model.safetensors"),
            model=json.loads(json.dumps(record.model)),  # tuples as lists, as read back
        )
        sealed = dataclasses.replace(sealed, fingerprint=sealed.expected_fingerprint())
        write_json_atomic(tmp / META, sealed.to_json())
        published.append(sealed)

    publish_dir(final, write, own=SPECIALIST_FILES, what="a trained specialist", record=META)
    shutil.rmtree(work, ignore_errors=True)
    return published[-1]

"""Generalist artifacts: saving and loading the exported model.

An exported generalist is a directory holding

- ``model.safetensors``: the weights (no pickle);
- ``model.json``: a :class:`GeneralistRecord`: format and version, the
  :class:`~specens.generalist.models.ModelSpec`, the class names, the training config, metrics,
  the weights' fingerprint and the record's (weights, spec and classes: what later stages record
  to say which generalist they were made from).

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
from specens.core.config import param
from specens.core.cost import TrainingCost
from specens.core.errors import CheckpointError, check_same_classes, check_same_input
from specens.core.io import fingerprint, read_artifact_json, record_fingerprint, write_json_atomic
from specens.core.loop import EpochRecord, TrainingMetrics
from specens.core.records import Record

from .hf import check_tokenizer
from .models import ModelSpec, TrustedCodeWarning, check_input_dtype

FORMAT = "specens.generalist"
FORMAT_VERSION = 2  # 2: the fingerprint covers the spec and classes; weights_fingerprint added
META = "model.json"


@dataclass(frozen=True, kw_only=True)
class GeneralistEpoch(EpochRecord):
    """A generalist's (or student's) epoch record: the loop's, with top-1 on the labelled training
    batches, bad samples skipped, and the validation split's scores. An imported model's one
    record (:mod:`.importing`) holds its scores on a training sample and validation, and the
    source it was imported from."""

    train_top1: float | None = param(None, ge=0, le=1)
    train_nll: float | None = param(None, ge=0)  # an imported model's, on a training sample
    skipped: int = param(0, ge=0)  # bad samples skipped by the on_error policy
    val_top1: float | None = param(None, ge=0, le=1)
    val_top5: float | None = param(None, ge=0, le=1)
    val_nll: float | None = param(None, ge=0)
    imported: dict[str, Any] | None = None  # where an imported model came from (its importer and files)


@dataclass(frozen=True, kw_only=True)
class GeneralistMetrics(TrainingMetrics):
    """A trained generalist's ``metrics``: the loop's outcome, the teachers it was distilled from
    (a generalist's fingerprint, or a specialist ensemble's fingerprints as an object; none for
    plain training) and its training cost."""

    history: list[GeneralistEpoch]
    teacher_fingerprints: list[str | dict]
    cost: TrainingCost

    def checks(self) -> list[tuple[bool, str]]:
        ok = all(isinstance(f, str | dict) for f in self.teacher_fingerprints)
        return [(ok, "'teacher_fingerprints' must be a list of strings or objects")]


@dataclass(frozen=True, kw_only=True)
class GeneralistRecord(Record):
    """``model.json``: the weights' fingerprint and the record's, the architecture
    (:class:`~specens.generalist.models.ModelSpec` as JSON, as fingerprinted), the class names, the
    training config and metrics (``None`` for a model exported without training: ``{}`` on disk).
    :meth:`from_json` also checks the spec, the class list fitting it and the fingerprint."""

    ARTIFACT = (FORMAT, FORMAT_VERSION)
    fingerprint: str
    weights_fingerprint: str
    model: dict[str, Any]
    classes: list[str]
    config: dict[str, Any]
    metrics: GeneralistMetrics | None

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_json(self.model, f"{META}: 'model'")

    def checks(self) -> list[tuple[bool, str]]:
        distinct = len(set(self.classes)) == len(self.classes)
        return [(distinct, f"'classes' must be a list of distinct strings, got {self.classes!r:.60}")]

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "metrics": self.metrics.to_json() if self.metrics else {}}

    @classmethod
    def from_json(cls, data: Any, where: str) -> GeneralistRecord:
        """The record's fields (``metrics`` ``{}``: none), then the spec well formed, the class
        list fitting it, and the fingerprint its fields give; each problem is a
        :class:`CheckpointError` naming ``where`` (the file)."""
        if isinstance(data, dict) and "metrics" in data:
            if data["metrics"] is None:  # not how a model without training is written
                raise CheckpointError(f"{where}: 'metrics' must be an object, got None")
            data = {**data, "metrics": None} if data["metrics"] == {} else data
        record = super().from_json(data, where)
        spec = ModelSpec.from_json(record.model, f"{where}: 'model'")
        if len(record.classes) != spec.n_classes:
            raise CheckpointError(f"{where}: {len(record.classes)} classes but model.n_classes is {spec.n_classes}")
        want = generalist_fingerprint(record.weights_fingerprint, record.model, record.classes)
        if want != record.fingerprint:
            raise CheckpointError(
                f"{where}: 'fingerprint' is {record.fingerprint}, but its weights_fingerprint, model "
                f"and classes give {want} (edited after export?)"
            )
        return record


@dataclass
class Generalist:
    """A loaded generalist: the model (in eval mode) and its record."""

    model: torch.nn.Module
    spec: ModelSpec
    record: GeneralistRecord

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.record.classes)

    @property
    def fingerprint(self) -> str:
        return self.record.fingerprint

    @property
    def n_classes(self) -> int:
        return len(self.record.classes)

    def check_fits(self, info, where: str, data_where: str) -> None:
        """Refuse a dataset (a :class:`~specens.data.format.DatasetInfo`) whose classes, input
        shape, input dtype or tokenizer are not this generalist's, naming both sides."""
        check_same_classes(self.classes, info.classes, where, data_where)
        check_same_input(self.spec.input_shape, info.input.shape, where, data_where)
        check_input_dtype(self.spec, info.input.dtype, where, data_where)
        check_tokenizer(self.spec, info.featurizer, where, data_where)


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
    metrics: GeneralistMetrics | None = None,
) -> str:
    """Export ``model`` into ``run_dir`` (weights first, then ``model.json``); returns its fingerprint."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if len(classes) != spec.n_classes:
        raise CheckpointError(f"{len(classes)} class names for a model of {spec.n_classes} classes")
    save_weights(model, run_dir / WEIGHTS)
    weights_fp = fingerprint(run_dir / WEIGHTS)
    spec_json = json.loads(json.dumps(spec.to_json()))  # tuples as lists, as read back
    record = GeneralistRecord(
        fingerprint=generalist_fingerprint(weights_fp, spec_json, list(classes)),
        weights_fingerprint=weights_fp,
        model=spec_json,
        classes=list(classes),
        config=config or {},
        metrics=metrics,
    )
    write_json_atomic(run_dir / META, record.to_json())
    return record.fingerprint


def read_record(run_dir: str | os.PathLike) -> GeneralistRecord:
    """Read and check ``model.json`` of an exported generalist (:meth:`GeneralistRecord.from_json`)."""
    path = Path(run_dir) / META
    data = read_artifact_json(path, FORMAT, FORMAT_VERSION, f"; is {run_dir} a trained generalist's run directory?")
    return GeneralistRecord.from_json(data, str(path))


def training_config(run_dir: str | os.PathLike, trust_code: bool = False) -> dict[str, Any]:
    """The training config recorded in ``run_dir``'s ``model.json``, as the start of another
    training like it (the compute-matched baselines, a student). The record is input from whoever
    wrote the directory: a ``model`` there that names code is refused unless ``trust_code``, and
    ``trust_code`` is what the new config carries."""
    from .models import is_code

    path = Path(run_dir) / META
    saved = dict(read_record(run_dir).config)
    model = saved["model"] if "model" in saved else ""  # a config without one: the input kind's default
    if isinstance(model, str) and is_code(model) and not trust_code:
        raise CheckpointError(
            f"{path}: config.model {model!r} names code to import; training from this record "
            "would run it. If you trust where this directory came from, pass --trust-code "
            "(trust_code=True)"
        )
    return {**saved, "trust_code": trust_code}


def load_generalist(
    run_dir: str | os.PathLike, device: str | torch.device = "cpu", trust_code: bool = False
) -> Generalist:
    """Load an exported generalist; checks that the weights are the ones ``model.json`` describes.
    A model that names code (``module:callable``) is refused unless ``trust_code``."""
    record = read_record(run_dir)
    weights = Path(run_dir) / WEIGHTS
    verify_weights(weights, record.weights_fingerprint, META)
    spec = record.spec
    with torch.device("meta"):  # the sizes the record states, checked against the file before any allocation
        skeleton = spec.build(trust_code, str(Path(run_dir) / META))
    check_shapes(skeleton, weights)
    with warnings.catch_warnings():  # the skeleton's build said it already
        warnings.simplefilter("ignore", TrustedCodeWarning)
        model = spec.build(trust_code, str(Path(run_dir) / META))
    load_weights(model, weights)
    return Generalist(model.to(device).eval(), spec, record)

"""The distillation report (``distill.json``, ``specens.distillation`` 1) as typed records:
:class:`DistillReport`, the student against its generalist and its ensemble on one split, each a
:class:`ModelRow`, with the student's :class:`StudentTraining` cost; written by
:func:`specens.inference.distill.distill`. Each is a :class:`~specens.core.records.Record`: its
fields' types and constraints are the file's schema (a missing, unknown or mistyped key is refused
by name).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from specens.core.config import param
from specens.core.records import Record, is_dict, is_number, read_report

DISTILL_FORMAT, DISTILL_VERSION = "specens.distillation", 1
MODELS = ("generalist", "ensemble", "student")


@dataclass(frozen=True)
class ModelRow(Record):
    """One model's scores on the split and its inference cost per example (FLOPs counted,
    seconds measured side by side with the other two)."""

    top1: float
    top5: float
    nll: float
    flops_per_example: float
    seconds_per_example: float


@dataclass(frozen=True)
class StudentTraining(Record):
    """What training the student cost: its FLOPs (its own and its teacher's), the teacher's FLOPs
    per example, wall seconds and epochs. None each where the student's record has no cost (a
    student exported without training): null on disk."""

    train_flops: float | None
    teacher_flops_per_example: float | None
    wall_seconds: float | None
    epochs: int | None = param(ge=0)


def _is_scores(v: Any) -> bool:
    return is_dict(v) and set(v) == {"top1", "nll"} and all(is_number(x) for x in v.values())


@dataclass(frozen=True)
class DistillReport(Record):
    """``distill.json``: generalist, ensemble and student (:data:`MODELS`) on ``split`` of
    ``dataset``; ``kept`` is the share of the ensemble's top-1 gain over the generalist that the
    student keeps, (s − g) / (e − g), None when e ≤ g. ``baselines``: the top-1 and NLL of the
    run's compute-matched alternatives made on the same split (empty where there are none);
    ``config``: the student's training config."""

    ARTIFACT = (DISTILL_FORMAT, DISTILL_VERSION)

    dataset: str
    split: str
    n: int = param(ge=0)
    rows: dict[str, ModelRow]
    ensemble_gain: float
    student_gain: float
    kept: float | None
    student_over_generalist_seconds: float
    ensemble_over_generalist_seconds: float
    mean_active_specialists: float
    student_training: StudentTraining
    generalist_training_flops: float | None
    fingerprints: dict
    config: dict = dataclasses.field(default_factory=dict)
    baselines: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    def checks(self) -> list[tuple[bool, str]]:
        return [
            (set(self.rows) == set(MODELS), f"'rows' must be an object of {', '.join(MODELS)}"),
            (all(map(_is_scores, self.baselines.values())), "'baselines' must be an object of {top1, nll}"),
        ]

    @classmethod
    def read(cls, path) -> DistillReport:
        """Read ``distill.json`` at ``path``, its format and version checked."""
        return read_report(cls, path, DISTILL_FORMAT, DISTILL_VERSION, "specens distill")

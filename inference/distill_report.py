"""The distillation report (``distill.json``, ``specens.distillation`` 1) as typed records:
:class:`DistillReport`, the student against its generalist and its ensemble on one split, each a
:class:`ModelRow`, with the student's :class:`StudentTraining` cost; written by
:func:`specens.inference.distill.distill`. The checks are :mod:`specens.core.records`' (a missing,
unknown or mistyped key is refused by name).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from specens.core.records import (
    artifact_fields,
    check_values,
    field_name,
    is_count,
    is_dict,
    is_number,
    is_ratio,
    read_report,
    record_fields,
)

DISTILL_FORMAT, DISTILL_VERSION = "specens.distillation", 1
MODELS = ("generalist", "ensemble", "student")


@dataclass(frozen=True)
class ModelRow:
    """One model's scores on the split and its inference cost per example (FLOPs counted,
    seconds measured side by side with the other two)."""

    top1: float
    top5: float
    nll: float
    flops_per_example: float
    seconds_per_example: float

    @classmethod
    def from_json(cls, data: Any, where: str) -> ModelRow:
        values = record_fields(data, cls, where)
        check_values(values, [(f.name, is_number, "a finite number") for f in dataclasses.fields(cls)], where)
        return cls(**values)


@dataclass(frozen=True)
class StudentTraining:
    """What training the student cost: its FLOPs (its own and its teacher's), the teacher's FLOPs
    per example, wall seconds and epochs. None each where the student's record has no cost (a
    student exported without training)."""

    train_flops: float | None
    teacher_flops_per_example: float | None
    wall_seconds: float | None
    epochs: int | None

    @classmethod
    def from_json(cls, data: Any, where: str) -> StudentTraining:
        values = record_fields(data, cls, where)
        numbers = ("train_flops", "teacher_flops_per_example", "wall_seconds")
        check_values(
            values,
            [(k, is_ratio, "a number or null") for k in numbers]
            + [("epochs", lambda v: v is None or is_count(v), "an int >= 0 or null")],
            where,
        )
        return cls(**values)


def _is_scores(v: Any) -> bool:
    return is_dict(v) and set(v) == {"top1", "nll"} and all(is_number(x) for x in v.values())


@dataclass(frozen=True)
class DistillReport:
    """``distill.json``: generalist, ensemble and student (:data:`MODELS`) on ``split`` of
    ``dataset``; ``kept`` is the share of the ensemble's top-1 gain over the generalist that the
    student keeps, (s − g) / (e − g), None when e ≤ g. ``baselines``: the top-1 and NLL of the
    run's compute-matched alternatives made on the same split (empty where there are none);
    ``config``: the student's training config."""

    dataset: str
    split: str
    n: int
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

    def to_json(self) -> dict:
        return {"format": DISTILL_FORMAT, "format_version": DISTILL_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def read(cls, path) -> DistillReport:
        """Read ``distill.json`` at ``path``, its format and version checked."""
        return read_report(cls, path, DISTILL_FORMAT, DISTILL_VERSION, "specens distill")

    @classmethod
    def from_json(cls, data: Any, where: str) -> DistillReport:
        """A parsed ``distill.json`` (its format header is not a field)."""
        values = artifact_fields(data, cls, where)
        numbers = ("ensemble_gain", "student_gain", "mean_active_specialists")
        numbers += ("student_over_generalist_seconds", "ensemble_over_generalist_seconds")
        check_values(
            values,
            [(k, lambda v: isinstance(v, str), "a string") for k in ("dataset", "split")]
            + [("n", is_count, "an int >= 0")]
            + [(k, is_number, "a finite number") for k in numbers]
            + [(k, is_ratio, "a number or null") for k in ("kept", "generalist_training_flops")]
            + [(k, is_dict, "an object") for k in ("fingerprints", "config")]
            + [("rows", lambda v: is_dict(v) and set(v) == set(MODELS), f"an object of {', '.join(MODELS)}")]
            + [("baselines", lambda v: is_dict(v) and all(map(_is_scores, v.values())), "an object of {top1, nll}")],
            where,
        )
        rows = {k: ModelRow.from_json(v, field_name(where, "rows") + f".{k}") for k, v in values["rows"].items()}
        training = StudentTraining.from_json(values["student_training"], field_name(where, "student_training"))
        return cls(**{**values, "rows": rows, "student_training": training})

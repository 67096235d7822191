"""The compute-matched table (``baselines.json``, ``specens.baselines`` 1) as typed records:
:class:`BaselineReport` of :class:`BaselineRow` s with the :class:`Budget` they were matched to,
written by :func:`specens.inference.baselines.compute_matched` and read back by distillation. The
checks are :mod:`specens.core.records`' (a missing, unknown or mistyped key is refused by name).
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

BASELINES_FORMAT, BASELINES_VERSION = "specens.baselines", 1


@dataclass(frozen=True)
class Budget:
    """The generalist's training FLOPs G, the specialists' B (every trained one), and what B buys
    the alternatives: ``examples`` more generalist examples, ``seeds`` generalists for (G + B)."""

    generalist_flops: float
    specialists_flops: float
    examples: int
    seeds: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str) -> Budget:
        values = record_fields(data, cls, where)
        check_values(
            values,
            [(k, is_number, "a finite number") for k in ("generalist_flops", "specialists_flops")]
            + [(k, is_count, "an int >= 0") for k in ("examples", "seeds")],
            where,
        )
        return cls(**values)


@dataclass(frozen=True)
class BaselineRow:
    """One row of the compute-matched table: accuracy, training cost and inference cost (None where
    it is not counted, e.g. scikit-learn's FLOPs), and what only some rows have: ``epochs_run``
    (trained alternatives), ``members`` (k generalists), the gate's counts (the ensemble), the
    widened model (``model_kwargs``, ``parameters`` and the inference FLOPs it was sized to)."""

    top1: float
    nll: float
    train_seconds: float
    train_flops: float | None = None
    inference_flops_per_example: float | None = None
    seconds_per_example: float | None = None
    epochs_run: int | None = None
    members: int | None = None
    specialists_on: int | None = None
    specialists_gated_off: int | None = None
    target_inference_flops_per_example: float | None = None
    model_kwargs: dict | None = None
    parameters: int | None = None

    def to_json(self) -> dict:
        """The fields a row has (those that are None are left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: Any, where: str) -> BaselineRow:
        optional = [f.name for f in dataclasses.fields(cls) if f.default is None]
        values = record_fields(data, cls, where, optional=optional)
        counts = ("epochs_run", "members", "specialists_on", "specialists_gated_off", "parameters")
        check_values(
            values,
            [(k, is_number, "a finite number") for k in ("top1", "nll", "train_seconds")]
            + [(k, is_ratio, "a number or null") for k in _BASELINE_NUMBERS]
            + [(k, lambda v: v is None or is_count(v), "an int >= 0 or null") for k in counts]
            + [("model_kwargs", lambda v: v is None or is_dict(v), "an object or null")],
            where,
        )
        return cls(**values)


_BASELINE_NUMBERS = (
    "train_flops",
    "inference_flops_per_example",
    "seconds_per_example",
    "target_inference_flops_per_example",
)


@dataclass(frozen=True)
class BaselineReport:
    """``baselines.json``: the compute-matched alternatives of one run on ``split``, by name
    (``generalist``, ``specialists`` and those trained: ``continued``, ``seeds``, ``wider``,
    ``tfidf``), with the :class:`Budget` they were matched to."""

    split: str
    budget: Budget
    rows: dict[str, BaselineRow]

    def to_json(self) -> dict:
        return {
            "format": BASELINES_FORMAT,
            "format_version": BASELINES_VERSION,
            "split": self.split,
            "budget": self.budget.to_json(),
            "rows": {k: row.to_json() for k, row in self.rows.items()},
        }

    @classmethod
    def read(cls, path) -> BaselineReport:
        """Read ``baselines.json`` at ``path``, its format and version checked."""
        return read_report(cls, path, BASELINES_FORMAT, BASELINES_VERSION, "specens baseline")

    @classmethod
    def from_json(cls, data: Any, where: str) -> BaselineReport:
        """A parsed ``baselines.json`` (its format header is not a field)."""
        values = artifact_fields(data, cls, where)
        check_values(
            values, [("split", lambda v: isinstance(v, str), "a string"), ("rows", is_dict, "an object")], where
        )
        return cls(
            values["split"],
            Budget.from_json(values["budget"], field_name(where, "budget")),
            {k: BaselineRow.from_json(v, field_name(where, "rows") + f".{k}") for k, v in values["rows"].items()},
        )

"""The evaluation report (``evaluation.json``, ``specens.evaluation`` 1) as typed records (the
compute-matched table's are in :mod:`specens.inference.baseline_report`).

:class:`EvaluationReport` is what :func:`~specens.inference.evaluate.evaluate_ensemble` returns
and ``specens evaluate`` writes: both models' scores, the routing, Table 4 by coverage and the
ensemble's cost (docs/method.md §6). Each part is a frozen dataclass with ``to_json`` / ``from_json``
(:mod:`specens.core.records`: a missing, unknown or mistyped key is refused by name). A ratio
that is undefined (nothing to compare) is NaN in memory and ``null`` on disk.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from specens.core.cost import TrainingCost
from specens.core.errors import CheckpointError
from specens.core.records import (
    HEADER,
    check_values,
    field_name,
    is_count,
    is_dict,
    is_number,
    is_ratio,
    read_report,
    record_fields,
)
from specens.specialists.fit import FitReport

FORMAT, FORMAT_VERSION = "specens.evaluation", 2  # 2: the specialists' fit reports


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _null(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else v


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Scores:
    """One model's top-1, top-5, NLL (nats per example) and conditional accuracy (over U)."""

    top1: float
    top5: float
    nll: float
    conditional: float

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str) -> Scores:
        values = record_fields(data, cls, where)
        check_values(values, ((k, is_number, "a finite number") for k in values), where)
        return cls(**values)


@dataclass(frozen=True)
class Routing:
    """Examples whose true class is in some group (``covered``), and those of them with no active
    specialist holding it (``missed``: the specialists could not have helped)."""

    covered: int
    missed: int
    missed_fraction: float

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str) -> Routing:
        values = record_fields(data, cls, where)
        check_values(
            values,
            [("covered", is_count, "an int >= 0"), ("missed", is_count, "an int >= 0")]
            + [("missed_fraction", is_number, "a finite number")],
            where,
        )
        return cls(**values)


@dataclass(frozen=True)
class CoverageRow:
    """A row of Table 4: the examples whose true class ``covering`` specialists' groups hold."""

    covering: str
    count: int
    generalist_correct: int
    ensemble_correct: int
    delta_correct: int
    relative_improvement: float  # delta / generalist correct; NaN when it got none right

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "relative_improvement": _null(self.relative_improvement)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> CoverageRow:
        values = record_fields(data, cls, where)
        counts = ("count", "generalist_correct", "ensemble_correct")
        check_values(
            values,
            [("covering", lambda v: isinstance(v, str), "a string"), ("delta_correct", _is_int, "an int")]
            + [(k, is_count, "an int >= 0") for k in counts]
            + [("relative_improvement", is_ratio, "a number or null")],
            where,
        )
        return cls(**{**values, "relative_improvement": _nan(values["relative_improvement"])})


@dataclass(frozen=True)
class SpecialistsCost:
    """Every trained specialist's training cost, summed (gated off or not: all were paid for)."""

    count: int
    train_flops: float
    examples: float
    steps: float
    wall_seconds: float
    train_seconds: float
    validation_seconds: float
    overhead_seconds: float

    @classmethod
    def total(cls, costs: list[TrainingCost]) -> SpecialistsCost:
        names = [f.name for f in dataclasses.fields(cls) if f.name != "count"]
        return cls(len(costs), **{k: sum(getattr(c, k) for c in costs) for k in names})

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str) -> SpecialistsCost:
        values = record_fields(data, cls, where)
        check_values(values, ((k, is_number, "a finite number") for k in values), where)
        return cls(**values)


@dataclass(frozen=True)
class InferenceCost:
    """Passes per example (one generalist, ``specialist_passes`` specialists on average), FLOPs per
    example of the generalist and of one specialist, the FLOP-predicted ratio to the generalist
    alone (1 + passes · f_s / f_g) and the measured one (the whole ensemble's time over the
    generalist's share of it), with the seconds each step took."""

    generalist_passes: float
    specialist_passes: float
    flops_per_example: dict[str, float]
    predicted_ratio: float | None
    measured_ratio: float | None
    seconds: dict[str, float]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str) -> InferenceCost:
        values = record_fields(data, cls, where)
        numbers = lambda d: isinstance(d, dict) and all(is_number(v) for v in d.values())  # noqa: E731
        check_values(
            values,
            [(k, is_number, "a finite number") for k in ("generalist_passes", "specialist_passes")]
            + [(k, is_ratio, "a number or null") for k in ("predicted_ratio", "measured_ratio")]
            + [(k, numbers, "an object of numbers") for k in ("flops_per_example", "seconds")],
            where,
        )
        return cls(**values)


@dataclass(frozen=True)
class EnsembleCost:
    """What the ensemble cost to train (the generalist's own cost, None when it was exported
    without training; the specialists' summed) and costs per example to run."""

    generalist: TrainingCost | None
    specialists: SpecialistsCost
    inference: InferenceCost

    @property
    def specialists_over_generalist(self) -> float | None:
        """The specialists' training FLOPs over the generalist's."""
        g = self.generalist
        return self.specialists.train_flops / g.train_flops if g and g.train_flops else None

    def to_json(self) -> dict:
        return {
            "generalist": self.generalist.to_json() if self.generalist else None,
            "specialists": self.specialists.to_json(),
            "inference": self.inference.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> EnsembleCost:
        values = record_fields(data, cls, where)
        g = values["generalist"]
        return cls(
            None if g is None else TrainingCost.from_json(g, field_name(where, "generalist")),
            SpecialistsCost.from_json(values["specialists"], field_name(where, "specialists")),
            InferenceCost.from_json(values["inference"], field_name(where, "inference")),
        )


@dataclass(frozen=True)
class EvaluationReport:
    """The ensemble against its generalist on one labelled split (module docstring).

    ``specialists_on`` / ``specialists_gated_off``: the groups whose specialist the ensemble used
    and those its gate left out; ``cost`` is None for an empty split."""

    n: int
    generalist: Scores
    ensemble: Scores
    n_in_union: int
    mean_active_specialists: float
    routed_fraction: float
    routing: Routing
    table4: tuple[CoverageRow, ...]
    dataset: str = ""
    split: str = ""
    n_specialists: int = 0
    top_n: int = 1
    specialist_weight: float = 1.0
    fingerprints: dict = dataclasses.field(default_factory=dict)
    specialists_on: tuple[int, ...] = ()
    specialists_gated_off: tuple[int, ...] = ()
    cost: EnsembleCost | None = None
    fit: tuple[FitReport, ...] = ()  # every specialist's fit report, by group (the gated off too)

    @property
    def top1_relative_improvement(self) -> float:
        """(e − g) / g at top-1; NaN when the generalist got none right."""
        g, e = self.generalist.top1, self.ensemble.top1
        return (e - g) / g if g else math.nan

    @property
    def top1_error_relative_cut(self) -> float:
        """The share of the generalist's top-1 errors the ensemble removes; NaN when it made none."""
        g, e = self.generalist.top1, self.ensemble.top1
        return ((1 - g) - (1 - e)) / (1 - g) if g < 1 else math.nan

    @property
    def conditional_relative_improvement(self) -> float:
        g, e = self.generalist.conditional, self.ensemble.conditional
        return (e - g) / g if g else math.nan

    def to_json(self) -> dict:
        """The ``evaluation.json`` object; the derived ratios are written too, for readers of the file."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.update(
            generalist=self.generalist.to_json(),
            ensemble=self.ensemble.to_json(),
            routing=self.routing.to_json(),
            table4=[row.to_json() for row in self.table4],
            specialists_on=list(self.specialists_on),
            specialists_gated_off=list(self.specialists_gated_off),
            cost=self.cost.to_json() if self.cost else None,
            fit=[f.to_json() for f in self.fit],
        )
        derived = {k: _null(getattr(self, k)) for k in _DERIVED}
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **d, **derived}

    @classmethod
    def read(cls, path) -> EvaluationReport:
        """Read ``evaluation.json`` at ``path``, its format and version checked."""
        return read_report(cls, path, FORMAT, FORMAT_VERSION, "specens evaluate")

    @classmethod
    def from_json(cls, data: Any, where: str) -> EvaluationReport:
        """A parsed report (its header and derived ratios are not fields)."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{where} must be an object, got {type(data).__name__}")
        values = record_fields({k: v for k, v in data.items() if k not in (*HEADER, *_DERIVED)}, cls, where)
        ints = lambda v: isinstance(v, list) and all(is_count(i) for i in v)  # noqa: E731
        check_values(
            values,
            [(k, is_count, "an int >= 0") for k in ("n", "n_in_union", "n_specialists")]
            + [("top_n", lambda v: is_count(v, 1), "an int >= 1"), ("table4", lambda v: isinstance(v, list), "a list")]
            + [(k, is_number, "a finite number") for k in ("mean_active_specialists", "routed_fraction")]
            + [("specialist_weight", is_number, "a finite number"), ("fingerprints", is_dict, "an object")]
            + [(k, lambda v: isinstance(v, str), "a string") for k in ("dataset", "split")]
            + [(k, ints, "a list of ints >= 0") for k in ("specialists_on", "specialists_gated_off")]
            + [("fit", lambda v: isinstance(v, list), "a list")],
            where,
        )
        return cls(
            **{
                **values,
                "generalist": Scores.from_json(values["generalist"], field_name(where, "generalist")),
                "ensemble": Scores.from_json(values["ensemble"], field_name(where, "ensemble")),
                "routing": Routing.from_json(values["routing"], field_name(where, "routing")),
                "table4": tuple(
                    CoverageRow.from_json(row, field_name(where, f"table4[{i}]"))
                    for i, row in enumerate(values["table4"])
                ),
                "specialists_on": tuple(values["specialists_on"]),
                "specialists_gated_off": tuple(values["specialists_gated_off"]),
                "cost": None
                if values["cost"] is None
                else EnsembleCost.from_json(values["cost"], field_name(where, "cost")),
                "fit": tuple(
                    FitReport.from_json(f, field_name(where, f"fit[{i}]")) for i, f in enumerate(values["fit"])
                ),
            }
        )


_DERIVED = ("top1_relative_improvement", "top1_error_relative_cut", "conditional_relative_improvement")

"""The evaluation report (``evaluation.json``, ``specens.evaluation`` 1) as typed records (the
compute-matched table's are in :mod:`specens.inference.baseline_report`).

:class:`EvaluationReport` is what :func:`~specens.inference.evaluate.evaluate_ensemble` returns
and ``specens evaluate`` writes: both models' scores, the routing, Table 4 by coverage and the
ensemble's cost (docs/method.md §6). Each part is a :class:`~specens.core.records.Record`: its
fields' types and constraints are its file's schema (a missing, unknown or mistyped key is refused
by name). A ratio that is undefined (nothing to compare) is NaN in memory and ``null`` on disk.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from specens.core.config import param
from specens.core.cost import TrainingCost
from specens.core.records import HEADER, Record, read_report
from specens.specialists.fit import FitReport

FORMAT, FORMAT_VERSION = "specens.evaluation", 2  # 2: the specialists' fit reports


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _null(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else v


@dataclass(frozen=True)
class Scores(Record):
    """One model's top-1, top-5, NLL (nats per example) and conditional accuracy (over U)."""

    top1: float
    top5: float
    nll: float
    conditional: float


@dataclass(frozen=True)
class Routing(Record):
    """Examples whose true class is in some group (``covered``), and those of them with no active
    specialist holding it (``missed``: the specialists could not have helped)."""

    covered: int = param(ge=0)
    missed: int = param(ge=0)
    missed_fraction: float


@dataclass(frozen=True)
class CoverageRow(Record):
    """A row of Table 4: the examples whose true class ``covering`` specialists' groups hold."""

    covering: str
    count: int = param(ge=0)
    generalist_correct: int = param(ge=0)
    ensemble_correct: int = param(ge=0)
    delta_correct: int
    relative_improvement: float | None  # delta / generalist correct; NaN (null on disk) when it got none right

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "relative_improvement": _null(self.relative_improvement)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> CoverageRow:
        row = super().from_json(data, where)
        return dataclasses.replace(row, relative_improvement=_nan(row.relative_improvement))


@dataclass(frozen=True)
class SpecialistsCost(Record):
    """Every trained specialist's training cost, summed (gated off or not: all were paid for)."""

    count: int = param(ge=0)
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


@dataclass(frozen=True)
class InferenceCost(Record):
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


@dataclass(frozen=True)
class EnsembleCost(Record):
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


@dataclass(frozen=True)
class EvaluationReport(Record):
    """The ensemble against its generalist on one labelled split (module docstring).

    ``specialists_on`` / ``specialists_gated_off``: the groups whose specialist the ensemble used
    and those its gate left out; ``cost`` is None for an empty split (null on disk). The file also
    holds the derived ratios (:data:`_DERIVED`), for its readers; they are not fields."""

    ARTIFACT = (FORMAT, FORMAT_VERSION)

    n: int = param(ge=0)
    generalist: Scores
    ensemble: Scores
    n_in_union: int = param(ge=0)
    mean_active_specialists: float
    routed_fraction: float
    routing: Routing
    table4: tuple[CoverageRow, ...]
    dataset: str = ""
    split: str = ""
    n_specialists: int = param(0, ge=0)
    top_n: int = param(1, ge=1)
    specialist_weight: float = 1.0
    fingerprints: dict = dataclasses.field(default_factory=dict)
    specialists_on: tuple[int, ...] = param((), ge=0)
    specialists_gated_off: tuple[int, ...] = param((), ge=0)
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

    def to_json(self) -> dict[str, Any]:
        """The ``evaluation.json`` object: every field (``cost`` null where None) and the derived
        ratios, for readers of the file."""
        keys = dict.fromkeys((*HEADER, *(f.name for f in dataclasses.fields(self))))  # in order, null until set
        return {**keys, **super().to_json(), **{k: _null(getattr(self, k)) for k in _DERIVED}}

    @classmethod
    def read(cls, path) -> EvaluationReport:
        """Read ``evaluation.json`` at ``path``, its format and version checked."""
        return read_report(cls, path, FORMAT, FORMAT_VERSION, "specens evaluate")

    @classmethod
    def from_json(cls, data: Any, where: str) -> EvaluationReport:
        """A parsed report (its header and derived ratios are not fields)."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in _DERIVED}
        return super().from_json(data, where)


_DERIVED = ("top1_relative_improvement", "top1_error_relative_cut", "conditional_relative_improvement")

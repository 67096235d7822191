"""The compute-matched table (``baselines.json``, ``specens.baselines`` 1) as typed records:
:class:`BaselineReport` of :class:`BaselineRow` s with the :class:`Budget` they were matched to,
written by :func:`specens.inference.baselines.compute_matched` and read back by distillation. Each
is a :class:`~specens.core.records.Record`: its fields' types and constraints are the file's
schema (a missing, unknown or mistyped key is refused by name).
"""

from __future__ import annotations

from dataclasses import dataclass

from specens.core.config import param
from specens.core.records import Record, read_report

BASELINES_FORMAT, BASELINES_VERSION = "specens.baselines", 1


@dataclass(frozen=True)
class Budget(Record):
    """The generalist's training FLOPs G, the specialists' B (every trained one), and what B buys
    the alternatives: ``examples`` more generalist examples, ``seeds`` generalists for (G + B)."""

    generalist_flops: float
    specialists_flops: float
    examples: int = param(ge=0)
    seeds: int = param(ge=0)


@dataclass(frozen=True)
class BaselineRow(Record):
    """One row of the compute-matched table: accuracy, training cost and inference cost (None where
    it is not counted, e.g. scikit-learn's FLOPs), and what only some rows have: ``epochs_run``
    (trained alternatives), ``members`` (k generalists), the gate's counts (the ensemble), the
    widened model (``model_kwargs``, ``parameters`` and the inference FLOPs it was sized to). The
    fields a row lacks (None) are left out of the file."""

    top1: float
    nll: float
    train_seconds: float
    train_flops: float | None = None
    inference_flops_per_example: float | None = None
    seconds_per_example: float | None = None
    epochs_run: int | None = param(None, ge=0)
    members: int | None = param(None, ge=0)
    specialists_on: int | None = param(None, ge=0)
    specialists_gated_off: int | None = param(None, ge=0)
    target_inference_flops_per_example: float | None = None
    model_kwargs: dict | None = None
    parameters: int | None = param(None, ge=0)


@dataclass(frozen=True)
class BaselineReport(Record):
    """``baselines.json``: the compute-matched alternatives of one run on ``split``, by name
    (``generalist``, ``specialists`` and those trained: ``continued``, ``seeds``, ``wider``,
    ``tfidf``), with the :class:`Budget` they were matched to."""

    ARTIFACT = (BASELINES_FORMAT, BASELINES_VERSION)

    split: str
    budget: Budget
    rows: dict[str, BaselineRow]

    @classmethod
    def read(cls, path) -> BaselineReport:
        """Read ``baselines.json`` at ``path``, its format and version checked."""
        return read_report(cls, path, BASELINES_FORMAT, BASELINES_VERSION, "specens baseline")

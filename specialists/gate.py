"""Scoring a specialist where inference will use it: on the validation examples routed to it.

The enriched batches a specialist trains on are half its own classes; at inference it sees only
the examples the generalist routes to it (docs/method.md §5: its group holds one of their top-n classes),
in natural proportions, and its output counts only through the KL combination with the
generalist. :class:`RoutedValidation` scores it there, with the generalist's distributions
computed once:

- **model selection / early stopping**: each epoch's NLL of the combined q (the generalist with
  this one specialist, :func:`~specens.specialists.model.combine_one`) on those examples, the
  loss at the place it is used; the best epoch is kept and training stops after ``patience``
  epochs without a lower one;
- **the gate** (:func:`gate_on`): the specialist is switched on only if the combination is at
  least as good as the generalist alone on those examples in both respects, as many of them right
  at top-1 or more, and a lower NLL. A specialist that is not is kept on disk but left out of the
  ensemble (:meth:`specens.inference.ensemble.Ensemble.load`), unless forced on. (Top-1 alone
  would let through a specialist that gets one more example right by luck while doubling the NLL,
  which a wrecked specialist does on the test suite's data; NLL alone, one that costs top-1.)

With disjoint groups and top-1 routing every example meets at most one specialist, so on the
validation split the ensemble's gains in correct examples and in summed log-loss are exactly the
sums of the kept specialists' gains: it is never below its generalist there, in top-1 or NLL.
With overlapping groups or top-n > 1 an example can meet several, and the sum is an
approximation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from specens.core.config import param
from specens.core.records import Record, is_count, is_number

from .model import apply_correction, combine_one, route


@dataclass
class RoutedValidation:
    """The validation examples routed to one specialist: inputs (N, ...), labels (N,), and the
    generalist's distributions on them, p_general (N, C) float64."""

    inputs: torch.Tensor
    labels: torch.Tensor
    p_general: torch.Tensor
    group: torch.Tensor
    correction: float  # the specialist's dustbin correction (docs/method.md §4)
    batch_size: int = 512

    @classmethod
    @torch.no_grad()
    def collect(
        cls,
        generalist: torch.nn.Module,
        batches,
        group: torch.Tensor,
        correction: float,
        top_n: int,
        device: torch.device,
        routed: bool = False,
    ) -> RoutedValidation:
        """Run the generalist over ``batches`` (a split, each example once) and keep the examples
        routed to ``group``; ``routed=True``: ``batches`` are those examples already (the
        specialists' partition routed them), keep them all."""
        membership = None  # (1, C): the group as route() takes it, once C is known
        xs, ys, ps = [], [], []
        for batch in batches:
            p = F.softmax(generalist(batch.inputs.to(device)).float(), dim=1).cpu().double()  # (B, C)
            if membership is None:
                membership = torch.zeros(1, p.shape[1], dtype=torch.bool)
                membership[0, group] = True
            keep = torch.ones(len(p), dtype=torch.bool) if routed else route(p, membership, top_n)[:, 0]
            xs.append(batch.inputs[keep])
            ys.append(batch.labels[keep])
            ps.append(p[keep])
        if not xs and not routed:
            raise ValueError("the validation split is empty")
        if not xs:  # no example is routed to this group
            n_classes = 0 if membership is None else membership.shape[1]
            return cls(
                torch.empty(0),
                torch.empty(0, dtype=torch.int64),
                torch.empty(0, n_classes, dtype=torch.float64),
                group,
                correction,
            )
        return cls(torch.cat(xs), torch.cat(ys), torch.cat(ps), group, correction)

    def __len__(self) -> int:
        return len(self.labels)

    def generalist_score(self) -> dict[str, float]:
        """The generalist alone on these examples: ``correct`` (count) and mean ``nll``."""
        return _score(self.p_general, self.labels)

    @torch.no_grad()
    def combined(self, specialist: torch.nn.Module, device: torch.device) -> torch.Tensor:
        """q (N, C) float64: the generalist combined with ``specialist`` (uncorrected weights; the
        correction is applied here) on each of these examples."""
        was_training = specialist.training
        specialist.eval()
        qs = []
        for i in range(0, len(self), self.batch_size):
            logits = specialist(self.inputs[i : i + self.batch_size].to(device)).float().cpu().double()
            p_m = F.softmax(apply_correction(logits, self.correction), dim=1)
            qs.append(combine_one(self.p_general[i : i + self.batch_size], p_m, self.group))
        specialist.train(was_training)
        return torch.cat(qs) if qs else self.p_general

    def score(self, specialist: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """The generalist combined with ``specialist`` on these examples (:meth:`combined`):
        ``correct`` (count) and mean ``nll``."""
        return _score(self.combined(specialist, device), self.labels)


def _score(q: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    if not len(labels):
        return {"correct": 0, "nll": 0.0}
    nll = -torch.log(q.gather(1, labels[:, None]).clamp_min(1e-300)).mean()
    return {"correct": int((q.argmax(1) == labels).sum()), "nll": float(nll)}


def gate_on(generalist: dict, combined: dict) -> bool:
    """Whether the specialist improves the examples routed to it: no fewer right at top-1 and a
    lower NLL (``generalist`` and ``combined`` as :meth:`RoutedValidation.score` returns)."""
    return combined["correct"] >= generalist["correct"] and combined["nll"] < generalist["nll"]


@dataclass(frozen=True, kw_only=True)
class GateRecord(Record):
    """The gate's verdict in ``specialist.json``: ``on``, and why. Where a validation split was
    scored, the split, the routing's top-n, how many of its examples were routed to the
    specialist, and the generalist alone and ``combined`` with it there (``correct``, ``nll``);
    without one (``split`` None) the specialist is on, ungated, and those fields are absent."""

    on: bool
    why: str
    split: str | None = None
    top_n: int | None = param(None, ge=1)
    routed: int | None = param(None, ge=0)
    generalist: dict[str, float] | None = None
    combined: dict[str, float] | None = None

    def checks(self) -> list[tuple[bool, str]]:
        scored = (self.top_n, self.routed, self.generalist, self.combined)
        want = "an object with 'correct' (an int >= 0) and 'nll' (a number)"
        return [
            (self.split is None or None not in scored, "a scored gate needs top_n, routed, generalist and combined"),
            (self.generalist is None or _is_score(self.generalist), f"'generalist' must be {want}"),
            (self.combined is None or _is_score(self.combined), f"'combined' must be {want}"),
        ]


def _is_score(v: Any) -> bool:
    return isinstance(v, dict) and set(v) == {"correct", "nll"} and is_count(v["correct"]) and is_number(v["nll"])

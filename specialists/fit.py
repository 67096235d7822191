"""Did a specialist learn what its generalist could not? The fit report (docs/specialists.md,
"The fit report").

A specialist exists to tell its group's classes apart better than the generalist does. The
report scores both on the same examples, **within the group**: on an example whose true class is
in S, the generalist's logits restricted to S and the specialist's logits for S (its dustbin
ignored) each give a distribution over S; top-1 and the NLL of the true class follow. It does so on
a sample of the group's own training examples (what the specialist trained on: can it fit them?)
and on the validation examples of the group's classes (does that carry over?), and it counts how
often the specialist, its dustbin corrected to the natural prior, predicts the dustbin on
validation examples outside the group (it should, nearly always).

The verdict names the case a user is in (:func:`verdict`):

- **damaged** (judged first): the specialist makes half as many errors again as the generalist on
  its own training examples, or more, more than a count's noise more (two standard errors,
  2√errors, at least 2), and gets under 98% of them right: training broke what it started from
  (a learning rate too high for this model; the gate switches such a specialist off);
- **nothing to learn**: the generalist already gets at least 98% of the group's training examples
  right within the group, and the specialist does not do better on validation either (both level
  at a high value): trained on examples the generalist already fits, it has nothing to add;
  where it does do better on validation (it removes at least 10% of the generalist's errors there,
  and more than two standard errors of their count, √errors), it generalises better than the
  generalist from the same examples: **learning**;
- **under-trained**: the specialist removes less than 10% of the generalist's within-group errors
  on its own training examples: it has not fitted what it trained on (more epochs, a higher
  learning rate, less weight on the generalist's soft targets);
- **over-fitting**: it does on its training examples, but makes no fewer errors than the
  generalist on validation;
- **learning**: fewer errors on both (on validation alone where the generalist fits the training
  examples).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from specens.core.config import param
from specens.core.records import Record

from .model import apply_correction

NOTHING_TO_LEARN = 0.98  # the generalist's within-group training top-1 at or above which there is little to add
LEARNED = 0.10  # the share of the generalist's within-group training errors a specialist must remove
SAMPLE = 2000  # examples read for each of the report's three scores (at most)
NOISE = 2.0  # standard errors of the generalist's error count a validation gain must exceed
DAMAGED = -0.5  # the error cut on its training examples at or below which a specialist is damaged
VERDICTS = ("nothing to learn", "damaged", "under-trained", "over-fitting", "learning")


@dataclass(frozen=True, kw_only=True)
class GroupScores(Record):
    """The generalist and the specialist within the group on ``n`` examples of its classes."""

    n: int = param(ge=0)
    generalist_top1: float
    specialist_top1: float
    generalist_nll: float
    specialist_nll: float

    @property
    def error_cut(self) -> float:
        """The share of the generalist's within-group errors the specialist removes (negative:
        it adds errors; 0 where the generalist makes none)."""
        errors = 1.0 - self.generalist_top1
        return 0.0 if errors <= 0 else 1.0 - (1.0 - self.specialist_top1) / errors

    def line(self) -> str:
        return (
            f"top-1 {self.generalist_top1:.3f} -> {self.specialist_top1:.3f}, "
            f"NLL {self.generalist_nll:.3f} -> {self.specialist_nll:.3f} ({self.n} examples)"
        )


@dataclass(frozen=True, kw_only=True)
class FitReport(Record):
    """``specialist.json``'s ``fit``: within-group scores on the group's training sample
    (``train``) and validation examples (``val``, None without a validation split), the dustbin's
    rate on ``outside`` validation examples of other classes, and the :func:`verdict`."""

    train: GroupScores
    val: GroupScores | None
    outside: int = param(ge=0)
    dustbin_rate: float = param(ge=0, le=1)
    verdict: str = param(choices=VERDICTS)

    def line(self) -> str:
        val = f"; validation {self.val.line()}" if self.val is not None else ""
        return (
            f"{self.verdict}: within its group, training {self.train.line()}{val}; "
            f"dustbin on {self.dustbin_rate:.1%} of {self.outside} examples of other classes"
        )


def verdict(train: GroupScores, val: GroupScores | None) -> str:
    """Which of :data:`VERDICTS` the scores say (the module doc gives the rules)."""
    if damaged(train):
        return "damaged"
    if train.generalist_top1 >= NOTHING_TO_LEARN:
        return "learning" if val is not None and val.n and generalises(val) else "nothing to learn"
    if train.error_cut < LEARNED:
        return "under-trained"
    if val is not None and val.n and val.error_cut <= 0:
        return "over-fitting"
    return "learning"


def _counts(s: GroupScores) -> tuple[float, float]:
    """The generalist's and the specialist's error counts on the ``n`` examples."""
    return s.n * (1.0 - s.generalist_top1), s.n * (1.0 - s.specialist_top1)


def damaged(train: GroupScores) -> bool:
    """Whether the specialist makes at least ``1 - DAMAGED`` times the generalist's errors on its
    own training examples, more than :data:`NOISE` standard errors of the generalist's count (at
    least one) above it, and gets fewer than :data:`NOTHING_TO_LEARN` of them right: a generalist
    with no errors left can still be damaged, while two errors against the generalist's one, or
    11 against 6 of 2,000, are not damage."""
    errors, specialist = _counts(train)
    return (
        specialist >= (1.0 - DAMAGED) * errors
        and specialist - errors > NOISE * math.sqrt(max(errors, 1.0))
        and train.specialist_top1 < NOTHING_TO_LEARN
    )


def generalises(val: GroupScores) -> bool:
    """Whether the specialist removes at least :data:`LEARNED` of the generalist's within-group
    errors on ``val`` and more of them than :data:`NOISE` standard errors of their count (a count
    of E errors varies by about √E between samples): a gain a few lucky examples cannot make."""
    errors, specialist = _counts(val)
    return val.error_cut >= LEARNED and errors - specialist > NOISE * math.sqrt(errors)


class _Tally:
    """Sums of the within-group scores over batches (float64)."""

    def __init__(self) -> None:
        self.n, self.right, self.nll = 0, torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.float64)

    def add(self, group_logits: tuple[torch.Tensor, torch.Tensor], positions: torch.Tensor) -> None:
        """``group_logits``: the generalist's and the specialist's logits over S, each (B, |S|);
        ``positions``: (B,) the true classes' positions in S."""
        for i, z in enumerate(group_logits):
            log_p = F.log_softmax(z.double(), dim=1)  # (B, |S|)
            self.right[i] += int((z.argmax(1) == positions).sum())
            self.nll[i] -= float(log_p.gather(1, positions[:, None]).sum())
        self.n += len(positions)

    def scores(self) -> GroupScores | None:
        if not self.n:
            return None
        top1, nll = (self.right.double() / self.n).tolist(), (self.nll / self.n).tolist()
        return GroupScores(
            n=self.n, generalist_top1=top1[0], specialist_top1=top1[1], generalist_nll=nll[0], specialist_nll=nll[1]
        )


def _batches(batches: Iterable, limit: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, labels) of ``batches`` up to ``limit`` examples (the last batch cut)."""
    left = limit
    for b in batches:
        if left <= 0:
            return
        yield b.inputs[:left], b.labels[:left]
        left -= len(b.labels[:left])


@torch.no_grad()
def fit_report(
    generalist: torch.nn.Module,
    specialist: torch.nn.Module,
    group: torch.Tensor,
    correction: float,
    train: Iterable,
    val: Iterable | None,
    outside: Iterable,
    device: torch.device,
    sample: int = SAMPLE,
) -> FitReport:
    """The fit report of ``specialist`` (uncorrected weights; ``correction`` is its dustbin's)
    against ``generalist`` (logits over all C classes). ``train`` and ``val``: batches (with
    ``inputs`` and ``labels``) of examples of the group's classes; ``outside``: batches of other
    classes; at most ``sample`` examples of each are read. Both models are put in eval mode."""
    generalist.eval()
    specialist.eval()
    group = group.to(device)
    position = torch.full((int(group.max()) + 1,), -1, dtype=torch.int64, device=device)
    position[group] = torch.arange(len(group), device=device)

    def tally(batches: Iterable) -> GroupScores | None:
        t = _Tally()
        for x, y in _batches(batches, sample):
            x, y = x.to(device), y.to(device)
            z_g = generalist(x).float()[:, group]  # (B, |S|)
            z_m = specialist(x).float()[:, :-1]  # (B, |S|), the dustbin left out
            t.add((z_g, z_m), position[y])
        return t.scores()

    train_scores = tally(train)
    if train_scores is None:
        raise ValueError("the group's training sample is empty")
    val_scores = tally(val) if val is not None else None
    n_out, binned = 0, 0
    for x, _ in _batches(outside, sample):
        logits = apply_correction(specialist(x.to(device)).float(), correction)  # (B, |S| + 1)
        binned += int((logits.argmax(1) == len(group)).sum())
        n_out += len(x)
    return FitReport(
        train=train_scores,
        val=val_scores,
        outside=n_out,
        dustbin_rate=binned / n_out if n_out else 0.0,
        verdict=verdict(train_scores, val_scores),
    )


def pooled_top1(scores: list[GroupScores]) -> tuple[float, float] | None:
    """The generalist's and the specialists' within-group top-1 pooled over ``scores`` (each
    specialist's examples once); None when they hold no example."""
    n = sum(s.n for s in scores)
    if not n:
        return None
    return sum(s.generalist_top1 * s.n for s in scores) / n, sum(s.specialist_top1 * s.n for s in scores) / n


def cases(fits: dict[int, FitReport]) -> str:
    """How many specialists each verdict has: ``"21 learning, 3 under-trained"``."""
    counts = {v: sum(f.verdict == v for f in fits.values()) for v in VERDICTS}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n)


def summarise(fits: dict[int, FitReport]) -> str:
    """One line over a run's specialists: how many are in each case, and the within-group top-1
    of the generalist and the specialists summed over them (each specialist's examples once)."""
    if not fits:
        return "fit: no specialist has a fit report"

    def pooled(scores: list[GroupScores]) -> str:
        both = pooled_top1(scores)
        return "none" if both is None else f"{both[0]:.3f} -> {both[1]:.3f}"

    train = pooled([f.train for f in fits.values()])
    val = pooled([f.val for f in fits.values() if f.val is not None])
    return f"fit of {len(fits)} specialists: {cases(fits)}; within-group top-1, training {train}, validation {val}"

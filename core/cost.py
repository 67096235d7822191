"""What training and inference cost: examples, steps, FLOPs and seconds.

Every trained artifact records a ``cost`` block (:class:`TrainingCost`) built by
:func:`training_cost` from its epoch records, so that "for the compute I spend, what do I get?"
can be answered from the run directory alone:

- ``examples`` / ``steps``: examples processed forward and backward, optimiser steps;
- ``train_flops``: ``examples × (3 · f_model + f_teacher) + bn_examples · f_model + steps × 10 ·
  parameters`` (``bn_examples``: forward passes recomputing batch norm, :mod:`.batchnorm`), where f is
  a forward pass's FLOPs per example counted once by :func:`forward_flops`
  (``torch.utils.flop_counter``; a backward pass costs about twice its forward pass), f_teacher
  the forward pass of a model whose soft targets the trainee learns from (the generalist, for a
  specialist), and the last term the optimiser's update (AdamW: about ten operations per
  parameter per step; it dominates for the text models, whose 67 M embedding parameters cost
  almost nothing forward but are all updated at every step);
- ``train_seconds`` / ``train_cpu_seconds``: wall and process CPU time of the training epochs
  proper (the optimiser steps), ``validation_seconds``, and ``wall_seconds`` of the whole call, so
  that ``overhead_seconds`` = wall − train − validation is what loading, initialisation and
  checkpointing took. Times cover the attempt that finished; ``epochs_resumed`` says how many
  epochs an earlier, interrupted attempt ran (their seconds are in the records, not in the wall).

FLOP counts ignore embedding lookups (no multiply-adds), which undercounts text models slightly;
they are estimates for comparing runs of the same model family, not hardware measurements.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .config import param
from .records import Record

BACKWARD_FACTOR = 3.0  # forward + backward ≈ 3 forward passes (the backward pass computes two products per layer)
OPTIMIZER_FLOPS_PER_PARAMETER = 10.0  # one AdamW update: moments, square root, division, decay


@torch.no_grad()
def forward_flops(model: torch.nn.Module, example: torch.Tensor) -> float:
    """FLOPs of one forward pass per example, counted on ``example`` (a batch, (B, *input_shape))
    with :class:`torch.utils.flop_counter.FlopCounterMode`. The model is left in the mode it was."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / max(len(example), 1)


@dataclass
class Stopwatch:
    """Wall and process-CPU seconds since it was made (CPU time covers every thread)."""

    wall0: float = field(default_factory=time.perf_counter)
    cpu0: float = field(default_factory=time.process_time)

    def wall(self) -> float:
        return time.perf_counter() - self.wall0

    def cpu(self) -> float:
        return time.process_time() - self.cpu0


@dataclass(frozen=True, kw_only=True)
class TrainingCost(Record):
    """The ``cost`` block of a trained artifact (the fields are those of the module docstring):
    every field a count or a finite number >= 0, since later stages add them up."""

    examples: int = param(ge=0)
    steps: int = param(ge=0)
    epochs: int = param(ge=0)
    flops_per_example: float = param(ge=0)
    teacher_flops_per_example: float = param(ge=0)
    parameters: int = param(ge=0)
    train_flops: float = param(ge=0)
    train_seconds: float = param(ge=0)
    train_cpu_seconds: float = param(ge=0)
    validation_seconds: float = param(ge=0)
    wall_seconds: float = param(ge=0)
    cpu_seconds: float = param(ge=0)
    overhead_seconds: float = param(ge=0)
    epochs_resumed: int = param(ge=0)

    @property
    def examples_per_epoch(self) -> float:
        return self.examples / max(self.epochs, 1)

    def plus_trials(self, examples: int, steps: int, seconds: float) -> TrainingCost:
        """This cost with training outside the epoch loop added (a specialist's learning-rate
        trials, on the same model: the same FLOPs per example); ``epochs`` counts the loop's only."""
        flops = (
            examples * (BACKWARD_FACTOR * self.flops_per_example + self.teacher_flops_per_example)
            + steps * OPTIMIZER_FLOPS_PER_PARAMETER * self.parameters
        )
        return dataclasses.replace(
            self,
            examples=self.examples + examples,
            steps=self.steps + steps,
            train_flops=self.train_flops + flops,
            train_seconds=self.train_seconds + seconds,
            overhead_seconds=max(0.0, self.overhead_seconds - seconds),
        )


def training_cost(
    result, model: torch.nn.Module, example: torch.Tensor, teachers: Sequence[torch.nn.Module | float], clock: Stopwatch
) -> TrainingCost:
    """The cost of a training run: ``result`` is the epoch loop's
    :class:`~specens.core.loop.LoopResult` (records with ``examples``, ``steps``, ``seconds``,
    ``cpu_seconds`` and, where it validated, ``val_seconds``), ``model`` the trainee, ``example``
    a batch of its inputs on its device, ``teachers`` the models whose forward passes gave soft
    targets (or, for a teacher that is not one module, such as a specialist ensemble, its FLOPs per
    example), ``clock`` started when the stage began."""
    history = result.history
    flops, teacher_flops = (
        forward_flops(model, example),
        sum(float(t) if isinstance(t, int | float) else forward_flops(t, example) for t in teachers),
    )
    parameters = sum(p.numel() for p in model.parameters())
    examples = sum(r.examples for r in history)
    steps = sum(r.steps for r in history)
    bn_examples = sum(r.bn_examples or 0 for r in history)
    ran = history[result.epochs_resumed :]  # the epochs of the attempt that finished
    train_s = sum(r.seconds for r in ran)
    val_s = sum(r.val_seconds or 0.0 for r in ran)
    wall = clock.wall()
    return TrainingCost(
        examples=examples,
        steps=steps,
        epochs=len(history),
        flops_per_example=flops,
        teacher_flops_per_example=teacher_flops,
        parameters=parameters,
        train_flops=(
            examples * (BACKWARD_FACTOR * flops + teacher_flops)
            + bn_examples * flops
            + steps * OPTIMIZER_FLOPS_PER_PARAMETER * parameters
        ),
        train_seconds=sum(r.seconds for r in history),
        train_cpu_seconds=sum(r.cpu_seconds for r in history),
        validation_seconds=sum(r.val_seconds or 0.0 for r in history),
        wall_seconds=wall,
        cpu_seconds=clock.cpu(),
        overhead_seconds=max(0.0, wall - train_s - val_s),
        epochs_resumed=result.epochs_resumed,
    )


def format_flops(flops: float) -> str:
    """1.23e15 -> '1.23 PFLOP'."""
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOP"

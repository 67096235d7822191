"""The epoch loop every training stage shares: resume, train an epoch, validate, keep the best,
checkpoint, stop early.

A stage supplies what differs (how to train one epoch, how to validate, which record is better)
and :class:`EpochLoop` does the rest, the same way for the generalist and every specialist:

- **resume**: the newest complete state under ``<work>/checkpoints`` is loaded (weights,
  optimiser, schedule, RNG, history, best record) and training continues after its epoch;
- **rerun policy**: state written under another config (fields outside the config class's
  ``RESUMABLE_CHANGES``) is refused with a :class:`CheckpointError` naming the fields that differ,
  or discarded with ``restart=True``, which is idempotent: a retried job that finds state made
  with its own config resumes it;
- **best epoch**: the weights of the best record so far are kept in memory, written to
  ``<work>/checkpoints/best.safetensors`` with each checkpoint, and loaded into the model when the
  loop ends;
- **checkpoint frequency**: the training state is written after an epoch once
  ``checkpoint_every`` seconds have passed since the last write (0: after every epoch), and always
  after the last epoch: a large model's state (weights and optimiser moments) can take longer to
  write than a short epoch takes to train, and an interruption loses at most ``checkpoint_every``
  seconds of work;
- **early stopping**: with validation, ``patience`` epochs in a row without a better record stop
  the loop (0: never), also where a resumed run had already stopped;
- **callbacks**: ``on_epoch_end(epoch, record)`` after each epoch (and its checkpoint, if one was
  due): progress printing, tests' fault injection;
- **divergence**: a non-finite loss (every step, :func:`finite_loss`), gradient norm (every
  ``GRAD_CHECK_EVERY`` steps and an epoch's last), weight or buffer (after every epoch, before
  its checkpoint) or validation score stops training with :class:`TrainingDiverged`, naming the
  stage, epoch and step; nothing of that epoch is checkpointed and nothing is exported;
- **batch norm**: after each epoch's training and before its validation, a stage that supplies
  its training inputs has every batch-norm layer's statistics recomputed at the epoch's weights
  over ``bn_batches`` of them (:mod:`specens.core.batchnorm`), so the weights validated, kept as
  the best and exported carry the statistics they were validated with; the record's
  ``bn_examples`` counts what that read;
- **cost**: each record carries the epoch's wall and CPU ``seconds`` / ``cpu_seconds`` of training
  and ``val_seconds`` (:mod:`specens.core.cost` sums them into an artifact's cost).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .batchnorm import batch_norms, recompute_batch_norm
from .checkpoint import (
    checkpoint_dir,
    discard_training_state,
    load_training_state,
    load_weights,
    save_training_state,
    save_weights,
    training_progress,
)
from .config import OptimParts, config_changes, config_to_json, param
from .device import resolve_device
from .errors import CheckpointError, TrainingDiverged
from .optim import make_optimizer, make_schedule
from .records import Record

BEST = "checkpoints/best.safetensors"
GRAD_CHECK_EVERY = 16  # steps between gradient-norm checks (each reads every gradient once)


def _diverged(stage: str, epoch: int, step: int | None, what: str, lr: float | None) -> TrainingDiverged:
    at = f"epoch {epoch + 1}" + (f", step {step + 1}" if step is not None else "")
    hint = f" (lr {lr:g})" if lr is not None else ""
    return TrainingDiverged(
        f"{stage} training diverged at {at}: {what}{hint}; nothing was exported. Lower the learning rate (--set lr=...)"
    )


def finite_loss(
    loss: torch.Tensor,
    model: torch.nn.Module,
    stage: str,
    epoch: int,
    step: int,
    steps: int,
    optimizer: torch.optim.Optimizer | None = None,
) -> float:
    """The step's loss as a float, after its backward pass and before the optimiser step: raises
    :class:`TrainingDiverged` when it is not finite, or (every ``GRAD_CHECK_EVERY`` steps and at
    the epoch's last of ``steps``) when the gradients' norm is not."""
    value = float(loss.detach())
    lr = optimizer.param_groups[0]["lr"] if optimizer is not None else None
    if not math.isfinite(value):
        raise _diverged(stage, epoch, step, f"the loss is {value}", lr)
    if step % GRAD_CHECK_EVERY == 0 or step == steps - 1:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
        if not math.isfinite(norm):
            raise _diverged(stage, epoch, step, f"the gradient norm is {norm}", lr)
    return value


def check_finite_state(
    model: torch.nn.Module, stage: str, epoch: int, record: EpochRecord, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """After an epoch: every floating weight and buffer, and every number of the epoch's record
    (its validation scores), must be finite."""
    lr = optimizer.param_groups[0]["lr"] if optimizer is not None else None
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise _diverged(stage, epoch, None, f"{name} holds non-finite values", lr)
    for key, v in asdict(record).items():
        if isinstance(v, float) and not math.isfinite(v):
            raise _diverged(stage, epoch, None, f"{key} is {v}", lr)


def stale_changes(work: str | Path, config: Any) -> list[str]:
    """What differs (``"key: old -> new"``) between ``config`` and the one the training state under
    ``<work>/checkpoints`` was made with; empty when there is no state or it matches."""
    prog = training_progress(work)
    if prog is None:
        return []
    return config_changes(prog.config, config)


@dataclass(frozen=True, kw_only=True)
class EpochRecord(Record):
    """One epoch's record, as the loop makes it: the figures the stage's ``train_epoch`` returns,
    the loop's own (times, batch-norm passes) and the stage's ``validate`` figures. Each stage
    extends it with its metrics (:class:`~specens.generalist.checkpoint.GeneralistEpoch`,
    :class:`~specens.specialists.record.SpecialistEpoch`). A count or time at 0 is work not done
    here (an imported model's record); ``None`` is a figure not measured (no validation, batch
    norm not recomputed), left out of the file."""

    epoch: int = param(ge=1)  # 1-based
    train_loss: float | None = None  # the training loss averaged over the epoch's examples
    examples: int = param(0, ge=0)  # examples trained on (forward and backward)
    steps: int = param(0, ge=0)  # optimiser steps
    bn_examples: int | None = param(None, ge=0)  # forward passes recomputing batch norm (:mod:`.batchnorm`)
    seconds: float = param(0.0, ge=0)  # wall time of the epoch's training (and batch-norm pass)
    cpu_seconds: float = param(0.0, ge=0)  # process CPU time of the same
    val_seconds: float | None = param(None, ge=0)  # wall time of its validation


@dataclass
class LoopResult:
    history: list[EpochRecord]  # one record per epoch run
    best: EpochRecord  # the best epoch's record
    stopped_early: bool
    epochs_resumed: int = 0  # epochs an earlier attempt had run before this one resumed


@dataclass(frozen=True, kw_only=True)
class TrainingMetrics(Record):
    """The ``metrics`` record of a trained artifact: how its loop ended and every epoch's record.
    A stage's own metrics extend it (the generalist's add its cost and teachers) and name its
    epoch record in ``history``'s annotation."""

    best_epoch: int = param(ge=0)  # 1-based, the epoch whose weights were exported
    epochs_run: int = param(ge=0)
    stopped_early: bool
    history: list[EpochRecord]  # one record per epoch, as the loop made them

    @classmethod
    def from_result(cls, result: LoopResult, **extra: Any) -> TrainingMetrics:
        return cls(
            best_epoch=result.best.epoch,
            epochs_run=len(result.history),
            stopped_early=result.stopped_early,
            history=result.history,
            **extra,
        )

    @property
    def still_improving(self) -> bool:
        """Whether training was cut short: it ran every epoch it was given (no early stop) and its
        best validation score came in the last two. Training further is then the first
        alternative to beat."""
        return bool(self.history) and not self.stopped_early and self.best_epoch >= len(self.history) - 1


@dataclass
class EpochLoop:
    work: Path  # holds checkpoints/ (the epochs' states and best.safetensors)
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    config: Any  # the stage's config dataclass: saved with each checkpoint, compared on resume
    epochs: int
    better: Callable[[EpochRecord, EpochRecord], bool]  # whether an epoch's record beats the best so far
    record: type[EpochRecord] = EpochRecord  # the stage's epoch record, made from its figures
    patience: int = 0
    restart: bool = False
    on_epoch_end: Sequence[Callable[[int, EpochRecord], None]] = ()
    checkpoint_every: float = 0.0  # seconds between training-state writes; 0: after every epoch
    stage: str = "generalist"  # names the stage in messages ("specialist 3", "student")
    refresh_bn: Callable[[int], int] | None = None  # recomputes batch norm after epoch e; returns examples read

    def _resume(self) -> tuple[int, list[EpochRecord], EpochRecord | None]:
        checkpoint_dir(self.work)  # a link or a stranger's file there is refused before any training
        try:
            changes = stale_changes(self.work, self.config)
        except CheckpointError:  # a state this specens cannot read: discarded on restart, else refused
            if not self.restart:
                raise
            changes = ["unreadable"]
        if changes:
            if self.restart:
                discard_training_state(self.work)
            else:
                raise CheckpointError(
                    f"{self.work}/checkpoints holds a run made with another config "
                    f"({'; '.join(changes)}); rerun with --restart (restart=True) to discard "
                    "it, or use a new run directory"
                )
        try:  # every file is checked before anything is loaded: a refused state leaves the model as built
            resumed = load_training_state(self.work, self.model, self.optimizer, self.scheduler)
        except CheckpointError:  # weights or state.pt that do not fit: discarded on restart, else refused
            if not self.restart:
                raise
            discard_training_state(self.work)
            resumed = None
        if resumed is None:
            return 0, [], None
        _, prog = resumed
        where = f"{checkpoint_dir(self.work)}/progress.json: 'history'"
        history = [self.record.from_json(r, f"{where}[{i}]") for i, r in enumerate(prog.history)]
        return prog.epoch + 1, history, history[prog.history.index(prog.best)]

    def _patience_spent(self, best: EpochRecord | None, epochs_done: int) -> bool:
        return self.patience > 0 and best is not None and epochs_done - best.epoch >= self.patience

    def run(self, train_epoch: Callable[[int], dict], validate: Callable[[], dict] | None = None) -> LoopResult:
        """Train epochs ``start .. epochs - 1`` (``train_epoch(epoch)`` returns its metrics), then
        load the best epoch's weights into the model."""
        start, history, best = self._resume()
        best_weights, unsaved = None, False  # the best epoch's weights; not yet in BEST
        last_write = time.perf_counter()
        for epoch in range(start, self.epochs):
            if validate is not None and self._patience_spent(best, epoch):
                break
            self.model.train()
            t0, c0 = time.perf_counter(), time.process_time()
            figures = {"epoch": epoch + 1, **train_epoch(epoch)}
            if self.refresh_bn is not None:
                figures["bn_examples"] = self.refresh_bn(epoch)
            figures.update(seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0)
            if validate is not None:
                t0 = time.perf_counter()
                figures.update(validate())
                figures["val_seconds"] = time.perf_counter() - t0
            record = self.record(**figures)
            check_finite_state(self.model, self.stage, epoch, record, self.optimizer)
            history.append(record)
            if best is None or self.better(record, best):
                best, unsaved = record, True
                best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            final = epoch == self.epochs - 1 or (validate is not None and self._patience_spent(best, epoch + 1))
            if final or time.perf_counter() - last_write >= self.checkpoint_every:
                if unsaved:  # before the state that names it as the best (a crash between the two re-runs identically)
                    save_weights(best_weights, self.work / BEST)
                    unsaved = False
                state = {
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                }
                save_training_state(
                    self.work,
                    epoch,
                    self.model,
                    state,
                    {
                        "config": config_to_json(self.config),
                        "history": [r.to_json() for r in history],
                        "best": best.to_json(),
                    },
                )
                last_write = time.perf_counter()
            for callback in self.on_epoch_end:
                callback(epoch, record)
        if best is None:
            raise CheckpointError(f"{self.work}: no epoch was trained (epochs = {self.epochs})")
        load_weights(self.model, best_weights if best_weights is not None else self.work / BEST)
        return LoopResult(history, best, stopped_early=len(history) < self.epochs, epochs_resumed=start)


def start(threads: int, device: str) -> torch.device:
    """A training stage's runtime: its CPU threads (0 leaves torch's default), then its device."""
    if threads:
        torch.set_num_threads(threads)
    return resolve_device(device)


class Recipe:
    """The training recipe every stage shares (generalist, specialist, student): the optimiser
    and schedule of its :class:`~specens.core.config.OptimParts`, one optimisation step with the
    divergence checks, and the :class:`EpochLoop` (resume, validation, best epoch, early stopping,
    checkpoints).

    A stage supplies only what differs: its model, data and loss (inside ``train_epoch``, which
    calls :meth:`step` per batch), what it validates on and which record is better. It reads its
    own config once and hands the recipe the optimisation part (``part(OptimParts, cfg, ...)``,
    with the values it resolved itself, such as a specialist's chosen rate) and the config as the
    run's identity: saved with each checkpoint and compared on resume, never read for a setting."""

    def __init__(
        self,
        optim: OptimParts,
        model: torch.nn.Module,
        steps_per_epoch: int,
        stage: str,
        identity: Any = None,
        checkpoint_every: float = 0.0,
    ):
        """``identity``: the stage's config, saved with each checkpoint and compared on resume
        (None for a recipe that only steps, such as a learning-rate trial, and never runs the loop);
        ``checkpoint_every``: seconds between training-state writes."""
        self.optim, self.model, self.steps_per_epoch, self.stage = optim, model, steps_per_epoch, stage
        self.identity, self.checkpoint_every = identity, checkpoint_every
        self.epochs, self.lr = optim.epochs, optim.lr
        self.optimizer = make_optimizer(model, optim.optimizer, optim.lr, optim.weight_decay, optim.momentum)
        self.scheduler = make_schedule(self.optimizer, optim.schedule, optim.warmup, optim.epochs * steps_per_epoch)

    def step(self, loss: torch.Tensor, epoch: int, step: int) -> float:
        """Back-propagate ``loss``, check it and the gradients (:func:`finite_loss`), take the
        optimiser's and the schedule's step; returns the loss."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        value = finite_loss(loss, self.model, self.stage, epoch, step, self.steps_per_epoch, self.optimizer)
        self.optimizer.step()
        self.scheduler.step()
        return value

    def run(
        self,
        work: str | Path,
        train_epoch: Callable[[int], dict],
        validate: Callable[[], dict] | None,
        better: Callable[[EpochRecord, EpochRecord], bool],
        record: type[EpochRecord],
        restart: bool = False,
        on_epoch_end: Sequence[Callable[[int, EpochRecord], None]] = (),
        bn_inputs: Callable[[int], Iterable[torch.Tensor]] | None = None,
    ) -> LoopResult:
        """The epochs under ``work`` (:class:`EpochLoop`), the best one's weights loaded at the end.
        ``train_epoch`` and ``validate`` return the figures of the stage's epoch ``record``.
        ``bn_inputs(epoch)``: batches of the stage's training inputs, the same for the same epoch,
        over which batch norm is recomputed after each epoch (``bn_batches`` of them)."""
        if self.identity is None:
            raise ValueError(f"{self.stage}: a recipe without its config's identity only steps; it cannot run the loop")
        refresh_bn, bn_batches = None, self.optim.bn_batches
        if bn_inputs is not None and bn_batches and batch_norms(self.model):

            def refresh_bn(epoch: int) -> int:
                return recompute_batch_norm(self.model, itertools.islice(bn_inputs(epoch), bn_batches))

        loop = EpochLoop(
            Path(work),
            self.model,
            self.optimizer,
            self.scheduler,
            self.identity,
            self.epochs,
            better,
            record=record,
            patience=self.optim.patience,
            restart=restart,
            on_epoch_end=on_epoch_end,
            checkpoint_every=self.checkpoint_every,
            stage=self.stage,
            refresh_bn=refresh_bn,
        )
        return loop.run(train_epoch, validate)

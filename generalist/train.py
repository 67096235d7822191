"""Training the generalist (METHOD §2), plainly or distilled from a teacher (METHOD §1).

``train_generalist(cfg)`` streams the training split, validates after each epoch, writes a
resumable checkpoint after each epoch, stops early once ``cfg.patience`` epochs in a row bring no
better validation score (top-1, ties broken by lower NLL), and finally exports the best epoch as
``model.safetensors`` + ``model.json``. Calling it again on the same ``out`` resumes after the
last completed epoch; an epoch's data order and augmentation depend only on (seed, epoch), so a
resumed run computes exactly what an uninterrupted one does, and stops where it would have.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from specens.data.augment import random_shift
from specens.data.format import load_info
from specens.data.shards import ShardLoader, ShardStream, iter_split

from .checkpoint import (CheckpointError, load_generalist, load_training_state, load_weights,
                         save_generalist, save_training_state, save_weights)
from .config import TrainConfig, config_to_json, with_defaults
from .evaluate import autocast, evaluate, resolve_device
from .losses import distillation_loss, ensemble_soft_targets
from .models import ModelSpec, data_defaults, default_model


class Teacher:
    """One or several exported generalists whose soft targets a student learns from."""

    def __init__(self, run_dirs: tuple[str, ...], device: torch.device, classes: tuple[str, ...],
                 mean: str = "arithmetic"):
        self.members = [load_generalist(d, device) for d in run_dirs]
        for d, g in zip(run_dirs, self.members):
            if g.classes != tuple(classes):
                raise CheckpointError(f"teacher {d} was trained on other classes than the dataset's "
                                      f"({g.n_classes} vs {len(classes)})")
        self.mean, self.fingerprints = mean, [g.fingerprint for g in self.members]

    @torch.no_grad()
    def soft_targets(self, x: torch.Tensor, temperature: float) -> torch.Tensor:
        """(B, ...) inputs -> (B, C) soft targets at ``temperature``."""
        return ensemble_soft_targets([g.model(x) for g in self.members], temperature, self.mean)


@dataclass
class TrainResult:
    run_dir: str
    fingerprint: str
    best_epoch: int
    history: list[dict]


def lr_lambda(schedule: str, warmup: float, total_steps: int) -> Callable[[int], float]:
    """Learning-rate multiplier per step: linear warm-up over ``warmup`` × ``total_steps``, then
    ``"cosine"`` decay to zero or ``"constant"``."""
    warm = int(warmup * total_steps)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return f


def make_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov); no weight decay on biases and normalisation parameters.

    The fused implementations are used where every parameter allows them (float, on CPU or CUDA):
    one kernel per step instead of several passes over the weights, which for the ``bag`` model's
    2^18 x 128 embedding makes a CPU training step 3-4x faster."""
    params = list(model.parameters())
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, fused=fused)
    return torch.optim.AdamW(groups, lr=lr, fused=fused)


def _better(record: dict, best: dict) -> bool:
    """Whether an epoch's validation ``record`` beats ``best``: higher top-1, or equal top-1 and
    lower NLL (top-1 on a small split ties often; NLL then says which epoch generalises better)."""
    nll = record.get("val_nll", math.inf)
    best_nll = math.inf if best.get("nll") is None else best["nll"]  # a run saved before NLL ties has none
    return (record["val_top1"], -nll) > (best["top1"], -best_nll)


def _patience_spent(best: dict, epochs_done: int, patience: int) -> bool:
    """Early stopping: ``patience`` epochs since the best one (never, with ``patience`` 0)."""
    return patience > 0 and best["epoch"] > 0 and epochs_done - best["epoch"] >= patience


def _check_resumable(saved: dict, cfg: TrainConfig, run_dir: str) -> None:
    """Refuse to resume a run made with another config. A field the saved config lacks (a run
    written before the field existed) counts as the field's default."""
    now = config_to_json(cfg)
    saved = with_defaults(saved, TrainConfig)
    diff = sorted(k for k in set(saved) | set(now)
                  if k not in TrainConfig.RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
        raise CheckpointError(f"{run_dir}/checkpoints holds a run with another config ({detail}); "
                              "use a new run directory, or delete the checkpoints to start over")


def train_generalist(cfg: TrainConfig, progress: bool = True,
                     on_epoch_end: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train (or resume training) a generalist as ``cfg`` says and export the best epoch."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info = load_info(cfg.data)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    name = cfg.model or default_model(info.input.kind, info.input.dtype)
    kwargs = {**data_defaults(name, info.n_classes, info.featurizer), **cfg.model_kwargs}
    spec = ModelSpec(name, info.input.shape, info.n_classes, kwargs).resolved()
    model = spec.build().to(device)
    teacher = Teacher(cfg.teacher, device, info.classes, cfg.teacher_mean) if cfg.teacher else None

    counts = info.split(cfg.train_split).class_counts
    kept = info.split(cfg.train_split).num_samples - sum(counts[c] for c in cfg.exclude_classes)
    epoch_size = cfg.epoch_size or max(1, round(kept * cfg.train_fraction))  # the subset's expected size
    steps_per_epoch = math.ceil(epoch_size / cfg.batch_size)
    opt = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.schedule, cfg.warmup, cfg.epochs * steps_per_epoch))
    train_stream = ShardStream(cfg.data, cfg.train_split, cfg.batch_size, train=True, epoch_size=epoch_size,
                               buffer=cfg.shuffle_buffer, seed=cfg.seed, on_error=cfg.on_error, info=info,
                               labels=cfg.exclude_classes or None, exclude=True, fraction=cfg.train_fraction)
    loader = ShardLoader(train_stream, cfg.num_workers)

    start, history, best = 0, [], {"epoch": -1, "top1": -1.0}
    resumed = load_training_state(cfg.out, model)
    if resumed is not None:
        state, prog = resumed
        _check_resumable(prog["config"], cfg, cfg.out)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, history, best = prog["epoch"] + 1, prog["history"], prog["best"]
        if progress:
            print(f"resuming {cfg.out} after epoch {prog['epoch'] + 1}/{cfg.epochs}")

    best_path = Path(cfg.out) / "checkpoints" / "best.safetensors"
    for epoch in range(start, cfg.epochs):
        if cfg.val_split and _patience_spent(best, epoch, cfg.patience):
            break  # also where a resumed run had already stopped
        model.train()
        loader.set_epoch(epoch)
        jitter_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        t0, seen, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
        bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, unit="batch")
        for batch in bar:
            x = random_shift(batch.inputs, cfg.jitter, jitter_gen) if cfg.jitter else batch.inputs
            x, y = x.to(device, non_blocking=True), batch.labels.to(device, non_blocking=True)
            with autocast(device, cfg.amp):
                logits = model(x)
                soft = teacher.soft_targets(x, cfg.temperature) if teacher else None
            loss = distillation_loss(logits, y if cfg.use_labels else None, soft, alpha=cfg.alpha,
                                     temperature=cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_top1": correct / max(seen, 1),
                  "seconds": time.perf_counter() - t0, "skipped": loader.skipped}
        if cfg.val_split:
            val = evaluate(model, iter_split(cfg.data, cfg.val_split, 512, info=info), device, cfg.amp)
            record.update({f"val_{k}": v for k, v in val.items() if k != "n"})
        history.append(record)
        if not cfg.val_split or _better(record, best):  # without validation, the last epoch is the best
            best = {"epoch": epoch + 1, "top1": record.get("val_top1", -1.0), "nll": record.get("val_nll")}
            best_path.parent.mkdir(parents=True, exist_ok=True)
            save_weights(model, best_path)
        if progress:
            print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state()}
        save_training_state(cfg.out, epoch, model, state,
                            {"config": config_to_json(cfg), "history": history, "best": best})
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    load_weights(model, best_path)
    stopped = len(history) < cfg.epochs
    if progress and stopped:
        print(f"stopped after epoch {len(history)}: no better validation score for {cfg.patience} epochs "
              f"(best: epoch {best['epoch']})")
    metrics = {"best_epoch": best["epoch"], "epochs_run": len(history), "stopped_early": stopped, "history": history,
               "teacher_fingerprints": teacher.fingerprints if teacher else []}
    fp = save_generalist(cfg.out, model, spec, info.classes, config_to_json(cfg), metrics)
    return TrainResult(cfg.out, fp, best["epoch"], history)

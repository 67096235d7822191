"""Training one specialist: plain Python, importable and testable without Ray (METHOD §4).

``train_specialist(cfg, index)`` builds specialist ``index`` of ``clusters.json`` from the
generalist, trains it on enriched batches with the §1 loss (hard targets on S ∪ {d} plus the
generalist's collapsed soft targets, computed on the fly), keeps the epoch with the best enriched
validation loss, and writes ``<out>/specialists/sNNN/`` atomically: ``model.safetensors`` (the
uncorrected weights) and ``specialist.json`` (group, class names, π, ρ, the dustbin correction,
config, fingerprints, metrics). Interrupted, it resumes from its last epoch checkpoint.

Soft targets on the fly (the default, and the only mode here): the generalist's forward pass costs
about as much as the specialist's, but stored logits would take N × C floats (6 GB for 100,000
examples of 15,000 classes) and would fix the augmentation; the generalist is in memory anyway.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from specens.clustering.cluster import load_clusters
from specens.data.format import load_info, write_json_atomic
from specens.generalist.checkpoint import (CheckpointError, load_generalist, load_training_state, load_weights,
                                           publish_dir, read_artifact_json, save_training_state, save_weights)
from specens.generalist.config import ConfigError, config_to_json, with_defaults
from specens.generalist.evaluate import autocast, resolve_device
from specens.generalist.train import lr_lambda, make_optimizer

from .model import build_specialist, dustbin_correction, hard_targets, specialist_loss
from .sampling import EnrichedStream

FORMAT, FORMAT_VERSION = "specens.specialist", 1
META = "specialist.json"


@dataclass(frozen=True)
class SpecialistConfig:
    """Specialist training (METHOD §4). ``specens specialists train`` builds one from a TOML file
    (top level or a ``[specialists]`` table) and ``--set key=value`` overrides."""

    SECTION: ClassVar[str] = "specialists"

    generalist: str  # run directory of the generalist
    clusters: str  # clusters.json
    data: str  # dataset directory (training and validation splits)
    out: str  # run directory; specialists go to <out>/specialists/sNNN/
    epochs: int = 5
    batch_size: int = 128  # half special, half the rest (rho)
    rho: float = 0.5  # fraction of each batch from the specialist's classes
    epoch_size: int = 0  # examples per epoch; 0 = twice the group's training examples
    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup: float = 0.0
    alpha: float = 0.5  # weight of the generalist's collapsed soft targets; 0 = hard targets only
    temperature: float = 1.0  # T of the soft targets; above 1 the collapsed dustbin is inflated (see README)
    soft_prior: str = "enriched"  # "enriched": soft targets shifted to the batches' prior (see model.py); "natural": literal
    val_split: str = "val"  # enriched validation for model selection; "" keeps the last epoch
    val_batches: int = 20  # enriched validation batches
    init_batches: int = 8  # natural-distribution batches used to fit the dustbin row at initialisation
    num_workers: int = 0
    device: str = "auto"
    amp: bool = True
    threads: int = 0  # torch CPU threads per specialist; 0 leaves torch's default
    seed: int = 0

    RESUMABLE_CHANGES: ClassVar[frozenset[str]] = frozenset({"num_workers", "device", "threads", "out"})

    def __post_init__(self):
        p = []
        for f in ("generalist", "clusters", "data", "out"):
            if not getattr(self, f):
                p.append(f"{f}: required")
        if self.epochs < 1:
            p.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            p.append(f"batch_size must be >= 2, got {self.batch_size}")
        if not 0 < self.rho < 1:
            p.append(f"rho must be in (0, 1), got {self.rho}")
        if not 0 <= self.alpha <= 1:
            p.append(f"alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            p.append(f"temperature must be > 0, got {self.temperature}")
        if self.soft_prior not in ("enriched", "natural"):
            p.append(f"soft_prior must be 'enriched' or 'natural', got {self.soft_prior!r}")
        if self.optimizer not in ("adamw", "sgd"):
            p.append(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            p.append(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.lr <= 0:
            p.append(f"lr must be > 0, got {self.lr}")
        if p:
            raise ConfigError("; ".join(p))

    # Fields that do not change the result: excluded from the fingerprint that decides reuse.
    def result_key(self) -> dict[str, Any]:
        return {k: v for k, v in config_to_json(self).items() if k not in self.RESUMABLE_CHANGES}

    def same_result(self, saved_key: dict[str, Any]) -> bool:
        """Whether a specialist saved with ``saved_key`` is what this config would train; a field
        the saved key lacks (written before the field existed) counts as the field's default."""
        saved = {k: v for k, v in with_defaults(saved_key, type(self)).items() if k not in self.RESUMABLE_CHANGES}
        return saved == self.result_key()


def specialist_dir(out: str | Path, index: int) -> Path:
    return Path(out) / "specialists" / f"s{index:03d}"


class InjectedFailure(RuntimeError):
    """Raised by the fault-injection hook (tests): ``SPECENS_FAIL_ONCE=<index>:<epoch>``."""


def _maybe_fail(work: Path, index: int, epoch: int) -> None:
    spec = os.environ.get("SPECENS_FAIL_ONCE", "")
    if spec and spec == f"{index}:{epoch}":
        marker = work / f".failed-once-{epoch}"
        if not marker.exists():
            marker.write_text("injected\n")
            raise InjectedFailure(f"specialist {index}: injected failure after epoch {epoch + 1}")


def read_specialist(path: str | Path) -> dict[str, Any]:
    """Read and check ``specialist.json``."""
    path = Path(path)
    meta_path = path / META if path.is_dir() else path
    return read_artifact_json(meta_path, FORMAT, FORMAT_VERSION)


def is_complete(cfg: SpecialistConfig, index: int, generalist_fp: str, clusters_fp: str) -> bool:
    """True when specialist ``index`` is already trained for this generalist, clusters and config."""
    d = specialist_dir(cfg.out, index)
    try:
        meta = read_specialist(d)
    except CheckpointError:
        return False
    return (meta["generalist_fingerprint"] == generalist_fp and meta["clusters_fingerprint"] == clusters_fp
            and cfg.same_result(meta["config_key"]) and (d / "model.safetensors").is_file())


def train_specialist(cfg: SpecialistConfig, index: int, progress: Callable[[dict], None] | None = None) -> dict:
    """Train specialist ``index`` (a position in ``clusters.json``); returns its metadata."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    gen = load_generalist(cfg.generalist, device)
    clusters = load_clusters(cfg.clusters, gen.fingerprint, gen.n_classes)
    if not 0 <= index < len(clusters.groups):
        raise ConfigError(f"specialist index {index} outside the {len(clusters.groups)} groups of {cfg.clusters}")
    info = load_info(cfg.data)
    if info.classes != gen.classes:
        raise CheckpointError(f"{cfg.generalist} was trained on other classes than {cfg.data}/dataset.json")
    group = torch.as_tensor(clusters.groups[index])
    counts = torch.tensor(info.split("train").class_counts, dtype=torch.float64)
    n_special = float(counts[group].sum())
    pi = n_special / float(counts.sum())
    if not 0 < pi < 1:
        raise ConfigError(f"group {index} has {int(n_special)} training examples of {int(counts.sum())}: "
                          "a specialist needs examples both in and outside its group")
    correction = dustbin_correction(pi, cfg.rho)
    shift = correction if cfg.soft_prior == "enriched" else 0.0
    final, work = specialist_dir(cfg.out, index), specialist_dir(cfg.out, index).with_name(f".s{index:03d}.work")
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed * 1009 + index)

    model = build_specialist(gen.model, group, _init_features(gen.model, cfg, info, device)).to(device)
    epoch_size = cfg.epoch_size or int(2 * n_special)
    steps = max(1, math.ceil(epoch_size / cfg.batch_size))
    stream = EnrichedStream(cfg.data, "train", group, cfg.batch_size, steps, cfg.rho, seed=cfg.seed * 1009 + index,
                            num_workers=cfg.num_workers, info=info)
    opt = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.schedule, cfg.warmup, cfg.epochs * steps))
    start, history, best = 0, [], {"epoch": 0, "val_loss": math.inf}
    resumed = load_training_state(work, model)
    if resumed is not None:
        state, prog = resumed
        if not cfg.same_result(prog["config_key"]):
            shutil.rmtree(work / "checkpoints")  # a stale attempt under another config: start over
            model = build_specialist(gen.model, group, _init_features(gen.model, cfg, info, device)).to(device)
            opt = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.schedule, cfg.warmup, cfg.epochs * steps))
        else:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            start, history, best = prog["epoch"] + 1, prog["history"], prog["best"]

    val = None
    if cfg.val_split:  # as many enriched batches as the split's special examples fill, at most val_batches
        n_val = sum(info.split(cfg.val_split).class_counts[c] for c in group.tolist())
        n_batches = max(1, min(cfg.val_batches, math.ceil(n_val / max(1, round(cfg.rho * cfg.batch_size)))))
        val = EnrichedStream(cfg.data, cfg.val_split, group, cfg.batch_size, n_batches, cfg.rho, seed=12345, info=info)
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        stream.set_epoch(epoch)
        total, seen = 0.0, 0
        for batch in stream:
            x, y = batch.inputs.to(device), batch.labels.to(device)
            with torch.no_grad(), autocast(device, cfg.amp):
                soft = gen.model(x) if cfg.alpha > 0 else None
            with autocast(device, cfg.amp):
                logits = model(x)
            loss = specialist_loss(logits, y, soft, group.to(device), gen.n_classes, cfg.alpha, cfg.temperature, shift)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(y)
            seen += len(y)
        record = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "seconds": time.perf_counter() - t0}
        if val is not None:
            record.update(evaluate_enriched(model, gen.model, val, group, gen.n_classes, cfg, device, shift))
        history.append(record)
        score = record.get("val_loss", -epoch)
        if score <= best["val_loss"]:
            best = {"epoch": epoch + 1, "val_loss": score}
            save_weights(model, work / "best.safetensors")
        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state()}
        save_training_state(work, epoch, model, state, {"config_key": cfg.result_key(), "history": history, "best": best})
        if progress is not None:
            progress({"index": index, **record})
        _maybe_fail(work, index, epoch)

    load_weights(model, work / "best.safetensors")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "index": index,
            "group": group.tolist(), "classes": [gen.classes[c] for c in group.tolist()], "n_classes": gen.n_classes,
            "pi": pi, "rho": cfg.rho, "dustbin_correction": correction,
            "generalist_fingerprint": gen.fingerprint, "clusters_fingerprint": clusters.fingerprint,
            "model": {"input_shape": list(gen.spec.input_shape), "generalist_model": gen.spec.to_json()},
            "config": config_to_json(cfg), "config_key": cfg.result_key(),
            "metrics": {"best_epoch": best["epoch"], "history": history}}
    _publish(work, final, model, meta)
    return meta


def _publish(work: Path, final: Path, model: torch.nn.Module, meta: dict) -> None:
    """Write the artifact into a fresh directory, rename it into place, drop the work directory."""
    def write(tmp: Path) -> None:
        save_weights(model, tmp / "model.safetensors")
        write_json_atomic(tmp / META, meta)
    publish_dir(final, write)
    shutil.rmtree(work, ignore_errors=True)


@torch.no_grad()
def _init_features(generalist: torch.nn.Module, cfg: SpecialistConfig, info, device) -> torch.Tensor | None:
    """Body features of a few natural-distribution training batches, for the dustbin row's fit."""
    if cfg.init_batches <= 0:
        return None
    from specens.data.shards import ShardLoader, ShardStream

    stream = ShardStream(cfg.data, "train", cfg.batch_size, train=True, epoch_size=cfg.batch_size * cfg.init_batches,
                         seed=cfg.seed + 777, info=info)
    feats = [generalist.body(b.inputs.to(device)).float().cpu() for b in ShardLoader(stream)]
    return torch.cat(feats) if feats else None


@torch.no_grad()
def evaluate_enriched(model, generalist, stream: EnrichedStream, group, n_classes, cfg: SpecialistConfig,
                      device, shift: float = 0.0) -> dict[str, float]:
    """Loss and accuracy on enriched batches (drawn as the training batches are)."""
    model.eval()
    stream.set_epoch(0)
    total, correct, n = 0.0, 0, 0
    g = group.to(device)
    for batch in stream:
        x, y = batch.inputs.to(device), batch.labels.to(device)
        logits = model(x).float()
        soft = generalist(x) if cfg.alpha > 0 else None
        total += float(specialist_loss(logits, y, soft, g, n_classes, cfg.alpha, cfg.temperature, shift)) * len(y)
        correct += int((logits.argmax(1) == hard_targets(y, g, n_classes)).sum())
        n += len(y)
    return {"val_loss": total / max(n, 1), "val_top1": correct / max(n, 1)}


def load_specialist(path: str | Path, generalist_model: torch.nn.Module | None = None,
                    device: str | torch.device = "cpu"):
    """Load a trained specialist: (model in eval mode, metadata). The architecture is rebuilt from
    the generalist's spec stored in the metadata; pass ``generalist_model`` to reuse its body."""
    from specens.generalist.models import ModelSpec

    meta = read_specialist(path)
    group = torch.tensor(meta["group"])
    base = generalist_model if generalist_model is not None else ModelSpec.from_json(meta["model"]["generalist_model"]).build()
    model = build_specialist(base, group)
    load_weights(model, Path(path) / "model.safetensors")
    return model.to(device).eval(), meta

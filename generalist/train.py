"""Training the generalist (docs/method.md §2), plainly or distilled from a teacher (docs/method.md §1).

``train_generalist(cfg)`` streams the training split, validates after each epoch, writes a
resumable checkpoint after each epoch, stops early once ``cfg.patience`` epochs in a row bring no
better validation score (top-1, ties broken by lower NLL), and finally exports the best epoch as
``model.safetensors`` + ``model.json``. Calling it again on the same ``out`` resumes after the
last completed epoch; an epoch's data order and augmentation depend only on (seed, epoch), so a
resumed run computes exactly what an uninterrupted one does, and stops where it would have.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import torch

from specens.core.batchnorm import epoch_inputs
from specens.core.config import OptimParts, SoftTargetParts, config_to_json, part
from specens.core.cost import Stopwatch, TrainingCost, forward_flops, training_cost
from specens.core.device import autocast, torch_seed
from specens.core.errors import CheckpointError, ConfigError, DataError, check_same_classes
from specens.core.io import check_outside_inputs, check_target, exclusive
from specens.core.loop import Recipe, start
from specens.core.progress import progress_bar
from specens.data.augment import random_shift
from specens.data.format import INFO_FILE, DatasetInfo, load_info
from specens.data.shards import (
    Batches,
    Cached,
    Cycle,
    Fraction,
    Labels,
    MixedLoader,
    Pipeline,
    Read,
    ShardLoader,
    Shuffle,
    Split,
    iter_split,
)

from .checkpoint import GeneralistEpoch, GeneralistMetrics, load_generalist, save_generalist
from .config import TrainConfig
from .evaluate import evaluate
from .hf import check_tokenizer
from .losses import distillation_loss, ensemble_soft_targets
from .models import ModelSpec, check_input_dtype, data_defaults, default_model

# What a training run directory holds (a student's also teacher.json and distill.json).
RUN_FILES = ("model.json", "model.safetensors", "checkpoints/", "teacher.json", "distill.json")
BN_SEED = 7919  # offsets the seed of the stream batch norm is recomputed over from the training stream's


class Teacher:
    """One or several exported generalists whose soft targets a student learns from.

    The interface every teacher of :func:`train_generalist` offers (a specialist ensemble's too,
    :mod:`specens.inference.distill`): ``soft_targets(x, temperature, keys, source)``, the
    ``fingerprints`` of what it is made of, and ``flops(example)``, its FLOPs per example."""

    def __init__(
        self,
        run_dirs: tuple[str, ...],
        device: torch.device,
        info: DatasetInfo,
        mean: str = "arithmetic",
        trust_code: bool = False,
    ):
        self.members = [load_generalist(d, device, trust_code) for d in run_dirs]
        for d, g in zip(run_dirs, self.members, strict=True):
            g.check_fits(info, f"teacher {d}", "the dataset")
        self.mean, self.fingerprints = mean, [g.fingerprint for g in self.members]

    @torch.no_grad()
    def soft_targets(
        self, x: torch.Tensor, temperature: float, keys: list[str] | None = None, source: int = 0
    ) -> torch.Tensor:
        """(B, ...) inputs -> (B, C) soft targets at ``temperature``. ``keys`` (the samples' keys)
        and ``source`` (0: the training split, i > 0: transfer set i) serve teachers that look
        their targets up; this one computes them from ``x``."""
        return ensemble_soft_targets([g.model(x) for g in self.members], temperature, self.mean)

    def flops(self, example: torch.Tensor) -> float:
        return sum(forward_flops(g.model, example) for g in self.members)


@dataclass
class TrainResult:
    run_dir: str
    fingerprint: str
    best_epoch: int
    history: list[GeneralistEpoch]


def _better(record: GeneralistEpoch, best: GeneralistEpoch) -> bool:
    """Whether an epoch's validation ``record`` beats ``best``: higher top-1, or equal top-1 and
    lower NLL (top-1 on a small split ties often; NLL then says which epoch generalises better)."""
    if record.val_top1 is None:  # without validation, the last epoch is the best
        return True
    return (record.val_top1, -record.val_nll) > (best.val_top1, -best.val_nll)


def _start_from(model: torch.nn.Module, spec: ModelSpec, info: DatasetInfo, run_dir: str) -> None:
    """Load an exported generalist's weights into ``model`` (``init``: continued training). Its
    recorded model must be the configured one, checked before anything is built from it (so a
    run naming code is built only when that code is the user's own configured ``model``)."""
    from .checkpoint import load_generalist, read_record

    recorded = read_record(run_dir).model
    if recorded != json.loads(json.dumps(spec.to_json())):  # tuples vs lists
        raise ConfigError(
            f"init {run_dir}: its model {recorded} is not the one configured "
            f"{spec.to_json()}; set model and model_kwargs to match it"
        )
    init = load_generalist(run_dir, trust_code=True)  # the configured model: the user's own choice
    init.check_fits(info, f"init {run_dir}", "the dataset")
    model.load_state_dict(init.model.state_dict())


def _exported_cost(run_dir: str) -> TrainingCost | None:
    from .checkpoint import read_record

    try:
        metrics = read_record(run_dir).metrics
    except CheckpointError:  # nothing exported yet: nothing to keep
        return None
    return metrics.cost if metrics else None


def _transfer_loaders(
    r: _Reading, roots: tuple[str, ...], split_name: str, info: DatasetInfo, seed: int, num_workers: int
) -> list[ShardLoader]:
    """One training stream per extra transfer set (``roots``, each read at ``split_name``), after
    checking it matches the dataset."""
    loaders = []
    for i, root in enumerate(roots):
        t = load_info(root)
        check_same_classes(t.classes, info.classes, f"transfer set {root}", f"{r.data}/dataset.json")
        if t.input != info.input:
            raise DataError(f"{root}/dataset.json: input {t.input} differs from {r.data}'s {info.input}")
        split = Split.of(root, split_name, t)  # raises, naming the file, when the split is missing
        stream = Pipeline(
            split,
            Cycle(Read()),
            Shuffle(r.buffer, split.num_samples),
            Batches(r.batch_size),
            seed=seed + 1 + i,
            on_error=r.on_error,
        )
        loaders.append(ShardLoader(stream, num_workers))
    return loaders


def train_generalist(
    cfg: TrainConfig,
    progress: bool = True,
    on_epoch_end: Callable[[int, GeneralistEpoch], None] | None = None,
    restart: bool = False,
    teacher=None,
) -> TrainResult:
    """Train (or resume training) a generalist as ``cfg`` says and export the best epoch.

    A rerun on ``cfg.out`` resumes; checkpoints made with another config are refused, or discarded
    with ``restart=True`` (see :mod:`specens.core.loop`). ``teacher``: soft targets from elsewhere
    than ``cfg.teacher`` (an object with :class:`Teacher`'s interface; the caller's config must
    name what it is, so that a resumed run is refused with another one).

    Batches come from the training split and, interleaved, from every ``cfg.transfer`` set, whose
    labels are not used (the hard term is dropped for their batches; docs/method.md §1)."""
    clock = Stopwatch()
    check_outside_inputs(cfg.out, "--out", data=cfg.data, transfer=cfg.transfer, teacher=cfg.teacher, init=cfg.init)
    check_target(cfg.out, RUN_FILES, "a training run directory")
    with exclusive(cfg.out, "a generalist"):
        return _train(cfg, clock, progress, on_epoch_end, restart, teacher)


def _train(cfg: TrainConfig, clock: Stopwatch, progress, on_epoch_end, restart, teacher) -> TrainResult:
    """:func:`train_generalist` once its output is checked and held. The config is read here,
    once: each helper gets the values it needs."""
    device = start(cfg.threads, cfg.device)
    info = load_info(cfg.data)
    if cfg.jitter and info.input.kind != "image":
        raise ConfigError(f"jitter {cfg.jitter}: shifts images, and {cfg.data} holds {info.input.kind} inputs")
    torch.manual_seed(cfg.seed)
    spec, model = _build_model(cfg.model, cfg.model_kwargs, cfg.init, cfg.data, info, device)
    if teacher is None and cfg.teacher:
        teacher = Teacher(cfg.teacher, device, info, cfg.teacher_mean, cfg.trust_code)
    if cfg.has_teacher and teacher is None:
        raise ConfigError(f"{type(cfg).__name__} names a teacher that train_generalist cannot build; pass teacher=")
    reading = _Reading.of(cfg)
    transfer = _transfer_loaders(reading, cfg.transfer, cfg.transfer_split, info, cfg.seed, cfg.num_workers)
    loader = MixedLoader([ShardLoader(_train_stream(reading, info, cfg.seed), cfg.num_workers), *transfer], cfg.seed)
    stage = "student" if teacher is not None and not cfg.teacher else "generalist"
    recipe = Recipe(part(OptimParts, cfg), model, sum(loader.batches_per_epoch()), stage, cfg, cfg.checkpoint_every)

    def validate() -> dict:
        val = evaluate(model, iter_split(cfg.data, cfg.val_split, 512, info=info), device, cfg.amp)
        return {f"val_{k}": v for k, v in val.items() if k != "n"}

    callbacks = ([_report] if progress else []) + ([on_epoch_end] if on_epoch_end else [])
    loss = _Loss(part(SoftTargetParts, cfg), cfg.use_labels, cfg.jitter, cfg.seed, cfg.amp)
    train_epoch = _epoch(recipe, loader, loss, teacher, device, progress)
    validation = validate if cfg.val_split else None
    bn_inputs = epoch_inputs(_train_stream(reading, info, cfg.seed + BN_SEED))  # the stream in another order
    result = recipe.run(cfg.out, train_epoch, validation, _better, GeneralistEpoch, restart, callbacks, bn_inputs)
    example = next(iter(iter_split(cfg.data, cfg.val_split or cfg.train_split, 8, info=info))).inputs.to(device)
    cost = training_cost(result, model, example, [teacher.flops(example)] if teacher else [], clock)
    if result.epochs_resumed == len(result.history):  # a rerun of a finished run: keep the times it measured
        cost = _exported_cost(cfg.out) or cost
    metrics = GeneralistMetrics.from_result(
        result, teacher_fingerprints=teacher.fingerprints if teacher else [], cost=cost
    )
    if progress and result.stopped_early:
        print(
            f"stopped after epoch {len(result.history)}: no better validation score for {cfg.patience} epochs "
            f"(best: epoch {metrics.best_epoch})"
        )
    fp = save_generalist(cfg.out, model, spec, info.classes, config_to_json(cfg), metrics)
    return TrainResult(cfg.out, fp, metrics.best_epoch, result.history)


def _build_model(
    name: str, kwargs: dict, init: str, data: str, info: DatasetInfo, device: torch.device
) -> tuple[ModelSpec, torch.nn.Module]:
    """The configured model (the input kind's default when none is named), on ``device``, from
    ``init``'s weights when given."""
    name = name or default_model(info.input.kind, info.input.dtype)
    kwargs = {**data_defaults(name, info.n_classes, info.featurizer), **kwargs}
    spec = ModelSpec(name, info.input.shape, info.n_classes, kwargs).resolved(trust_code=True)  # the user's own
    check_input_dtype(spec, info.input.dtype, "the configured model", f"{data}/{INFO_FILE}")
    check_tokenizer(spec, info.featurizer, "the configured model", f"{data}/{INFO_FILE}")
    model = spec.build(trust_code=True)
    if init:
        _start_from(model, spec, info, init)
    return spec, model.to(device)


@dataclass(frozen=True)
class _Reading:
    """How the stage reads its training data: the config's reading fields, unpacked at the door."""

    data: str
    split: str
    batch_size: int
    buffer: int  # the shuffle buffer's samples
    on_error: str
    exclude: tuple[int, ...]  # classes left out of the training split
    fraction: float  # a stable subset of it by key hash
    epoch_size: int  # 0: the subset's expected size

    @classmethod
    def of(cls, cfg: TrainConfig) -> _Reading:
        return cls(
            cfg.data,
            cfg.train_split,
            cfg.batch_size,
            cfg.shuffle_buffer,
            cfg.on_error,
            cfg.exclude_classes,
            cfg.train_fraction,
            cfg.epoch_size,
        )


def _train_stream(r: _Reading, info: DatasetInfo, seed: int) -> Pipeline:
    """The training split, less the excluded classes, a ``fraction`` subset, shuffled by ``seed``."""
    outside = [c for c in r.exclude if c >= info.n_classes]
    if outside:
        raise ConfigError(f"exclude_classes: {outside[0]} is not a class of {r.data} ({info.n_classes} classes)")
    counts = info.split(r.split).class_counts
    kept = info.split(r.split).num_samples - sum(counts[c] for c in r.exclude)
    if kept * r.fraction < 1:
        raise ConfigError(
            f"train_fraction {r.fraction:g} keeps no example: it is a fraction of the {kept} "
            f"training examples of {r.data}, and keeps about {kept * r.fraction:.2g}"
        )
    epoch_size = r.epoch_size or max(1, round(kept * r.fraction))  # the subset's expected size
    filters = ([Labels(r.exclude, exclude=True)] if r.exclude else []) + (
        [Fraction(r.fraction)] if r.fraction < 1 else []
    )
    read = Cached(Read(*filters)) if filters else Read()  # a filtered pass repeats: keep what it kept
    return Pipeline(
        Split.of(r.data, r.split, info),
        Cycle(read),
        Shuffle(r.buffer, epoch_size),
        Batches(r.batch_size),
        seed=seed,
        on_error=r.on_error,
    )


@dataclass(frozen=True)
class _Loss:
    """The epoch's loss settings, unpacked at the door: the soft-target term, whether the hard term
    is on, the image jitter, the seed its draws come from, bfloat16 autocast."""

    soft: SoftTargetParts
    use_labels: bool
    jitter: int
    seed: int
    amp: bool


def _epoch(recipe: Recipe, loader: MixedLoader, loss: _Loss, teacher, device, progress: bool):
    """One epoch of the §1 loss over ``loader``: hard targets on the training split's batches (when
    ``use_labels``), the teacher's soft targets on every batch."""
    model, soft_t = recipe.model, loss.soft

    def train_epoch(epoch: int) -> dict:
        loader.set_epoch(epoch)
        jitter_gen = torch.Generator().manual_seed(torch_seed(loss.seed * 100_003 + epoch))
        seen, labelled, correct, loss_sum, steps = 0, 0, 0, 0.0, 0
        bar = progress_bar(
            loader,
            total=recipe.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{recipe.epochs}",
            unit="batch",
            enabled=progress,
        )
        for source, batch in bar:
            x = random_shift(batch.inputs, loss.jitter, jitter_gen) if loss.jitter else batch.inputs
            x, y = x.to(device, non_blocking=True), batch.labels.to(device, non_blocking=True)
            with autocast(device, loss.amp):
                logits = model(x)
                soft = teacher.soft_targets(x, soft_t.temperature, batch.keys, source) if teacher else None
            hard = y if loss.use_labels and source == 0 else None  # transfer sets: soft term only
            value = recipe.step(
                distillation_loss(logits, hard, soft, alpha=soft_t.alpha, temperature=soft_t.temperature), epoch, steps
            )
            seen += len(y)
            steps += 1
            if source == 0:
                labelled += len(y)
                correct += int((logits.argmax(1) == y).sum())
            loss_sum += value * len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / max(labelled, 1):.3f}")
        return {
            "train_loss": loss_sum / max(seen, 1),
            "train_top1": correct / max(labelled, 1),
            "skipped": loader.skipped,
            "examples": seen,
            "steps": steps,
        }

    return train_epoch


def _report(epoch: int, record: GeneralistEpoch) -> None:
    """One readable line per epoch (every figure is also in ``model.json``'s history)."""
    val = f"; validation top-1 {record.val_top1:.4f}, NLL {record.val_nll:.4f}" if record.val_top1 is not None else ""
    skipped = f", {record.skipped} bad samples skipped" if record.skipped else ""
    print(
        f"epoch {record.epoch}: training loss {record.train_loss:.4f}, top-1 {record.train_top1:.4f}{val} "
        f"({record.seconds:.0f} s{skipped})"
    )

"""Training one specialist: plain Python, importable and testable without Ray (docs/method.md §4).

``train_specialist(cfg, index)`` builds specialist ``index`` of ``clusters.json`` from the
generalist, chooses its learning rate by one-epoch trials where ``lr = 0`` (the default), trains
it on enriched batches with the §1 loss (hard targets on S ∪ {d}, plus the generalist's collapsed
soft targets computed on the fly where ``alpha`` > 0) for as many presentations of its group's
examples as the generalist gave its own (``epochs = 0``), recomputes batch norm over its own
batches before each validation, keeps the epoch whose combination with the generalist has the
lowest NLL on the validation examples routed to it, stops after ``patience`` epochs without a
better one, gates it on those examples (:mod:`.gate`), scores its fit against the generalist
within its group (:mod:`.fit`), and writes ``<out>/specialists/sNNN/`` atomically:
``model.safetensors`` (the uncorrected weights) and ``specialist.json`` (group, class names, π, ρ,
the dustbin correction, the gate, the fit report, the learning rate and its trials, config,
fingerprints, metrics, cost). Interrupted, it resumes from its last checkpoint (the learning-rate
trials run again, deterministically on CPU, and the resumed optimiser keeps the rate it had).
Its group's training examples and its routed validation examples come from the run's one-pass
partition (:mod:`.partition`), built by the first specialist that needs it (``train_all``
builds it first).

Soft targets on the fly: the generalist's forward pass costs about as much as the specialist's,
but stored logits would take N × C floats (6 GB for 100,000 examples of 15,000 classes) and would
fix the augmentation; the generalist is in memory anyway.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from specens.clustering.cluster import load_clusters
from specens.core.batchnorm import epoch_inputs, recompute_batch_norm
from specens.core.checkpoint import verify_weights
from specens.core.config import (
    MAX_EPOCHS,
    MAX_LR,
    OptimParts,
    RuntimeParts,
    SoftTargetParts,
    config_changes,
    config_to_json,
    param,
    part,
    redefault,
)
from specens.core.cost import Stopwatch, TrainingCost, forward_flops, training_cost
from specens.core.device import autocast, torch_seed
from specens.core.errors import CheckpointError, ConfigError, TrainingDiverged
from specens.core.io import (
    check_no_links,
    check_outside_inputs,
    check_target,
    exclusive,
    read_artifact_json,
    write_json_atomic,
)
from specens.core.loop import Recipe, start
from specens.core.records import Record
from specens.data.format import INFO_FILE, load_info
from specens.data.shards import (
    SHUFFLE_BUFFER,
    Batches,
    Cycle,
    Labels,
    Pipeline,
    Read,
    ShardLoader,
    Shuffle,
    Split,
    iter_split,
)
from specens.generalist.checkpoint import load_generalist
from specens.generalist.train import BN_SEED

from .fit import FitReport, fit_report
from .gate import GateRecord, RoutedValidation, gate_on
from .model import MAX_WIDEN, TrunkedSpecialist, build_specialist, dustbin_correction, specialist_loss, split_body
from .partition import ensure_partition
from .record import (
    META,
    SPECIALIST_FILES,
    SpecialistEpoch,
    SpecialistMetrics,
    SpecialistRecord,
    publish_specialist,
    read_specialist,
    specialist_dir,
    work_dir,
)
from .sampling import EnrichedBatches, enriched_batches


@dataclass(frozen=True, kw_only=True)
class SpecialistConfig(OptimParts, SoftTargetParts, RuntimeParts):
    """Specialist training (docs/method.md §4). ``specens specialists train`` builds one from a TOML file
    (top level or a ``[specialists]`` table) and ``--set key=value`` overrides. The optimiser,
    runtime and soft-target fields come from the shared parts of :mod:`specens.core.config`."""

    SECTION: ClassVar[str] = "specialists"

    generalist: str  # run directory of the generalist
    clusters: str  # clusters.json
    data: str  # dataset directory (training and validation splits)
    out: str  # run directory; specialists go to <out>/specialists/sNNN/
    # An epoch shows each of the group's training examples once (rho = 0.5: twice their number in
    # all); 0 gives each as many presentations as the generalist gave each of its examples.
    epochs: int = param(0, ge=0, le=MAX_EPOCHS)
    patience: int = redefault(OptimParts, "patience", 8)  # epochs without a lower routed-validation NLL
    epoch_size: int = redefault(OptimParts, "epoch_size", 0)  # 0 = twice the group's training examples
    batch_size: int = param(128, ge=2)  # half special, half the rest (rho)
    lr: float = param(0.0, ge=0, le=MAX_LR)  # peak learning rate; 0: chosen on validation among LR_CANDIDATES
    warmup: float = redefault(OptimParts, "warmup", 0.0)
    alpha: float = redefault(SoftTargetParts, "alpha", 0.0)  # the generalist's collapsed soft targets; 0 = hard only
    temperature: float = redefault(
        SoftTargetParts, "temperature", 1.0
    )  # above 1 the collapsed dustbin is inflated (docs/specialists.md)
    rho: float = param(0.5, gt=0, lt=1)  # fraction of each batch from the specialist's classes
    soft_prior: str = param(
        "enriched", choices=("enriched", "natural")
    )  # enriched: soft targets shifted to the batches' prior (model.py)
    val_split: str = (
        "val"  # routed validation: model selection, early stopping, the gate; "" keeps the last epoch, gate on
    )
    top_n: int = param(1, ge=1)  # the routing the validation assumes (inference's --top-n)
    init_batches: int = param(8, ge=0)  # natural-distribution batches used to fit the dustbin row at initialisation
    shared_trunk: int = param(
        0, ge=0
    )  # 0: copy the generalist's whole body; k: own its last k blocks, on its frozen trunk
    widen: int = param(
        1, ge=1, le=MAX_WIDEN
    )  # the owned blocks' inner channels x this, same function at the start (model.py)

    RESUMABLE_CHANGES: ClassVar[frozenset[str]] = RuntimeParts.RESUMABLE | {"out", "patience"}
    PATH_FIELDS: ClassVar[frozenset[str]] = frozenset({"generalist", "clusters", "data", "out"})

    def checks(self) -> list[tuple[bool, str]]:
        return [
            *((bool(getattr(self, f)), f"{f}: required") for f in ("generalist", "clusters", "data", "out")),
            (self.widen == 1 or self.shared_trunk >= 1, "widen: needs shared_trunk >= 1 (it widens the blocks owned)"),
            (
                not 0 < self.rho < 1 or 0 < round(self.rho * self.batch_size) < self.batch_size,
                f"rho={self.rho!r} puts {round(self.rho * self.batch_size)} of each batch of {self.batch_size} "
                f"from the group: rho * batch_size must round to an int in [1, {self.batch_size - 1}]",
            ),
            *super().checks(),
        ]

    def result_key(self) -> dict[str, Any]:
        """The fields that decide what is trained (all but ``RESUMABLE_CHANGES``)."""
        return {k: v for k, v in config_to_json(self).items() if k not in self.RESUMABLE_CHANGES}


def complete_changes(cfg: SpecialistConfig, index: int, generalist_fp: str, clusters_fp: str) -> list[str] | None:
    """Whether specialist ``index`` is already trained: None when it is not (no complete artifact);
    otherwise what differs between the artifact and what ``cfg`` would train now (generalist,
    clusters, config fields as ``"key: old -> new"``), an empty list when nothing does."""
    d = specialist_dir(cfg.out, index)
    if not (d / META).exists():
        return None
    try:  # a record in place that is not valid is not silently replaced: it differs from what would be trained
        record = read_specialist(d)
        verify_weights(d / "model.safetensors", record.weights_fingerprint, META)
        if record.index != index:
            raise CheckpointError(f"{d / META}: the record of specialist {record.index}, not {index}")
    except CheckpointError as e:
        return [f"not a valid specialist ({e})"]
    changes = (
        []
        if record.generalist_fingerprint == generalist_fp
        else [f"generalist: {record.generalist_fingerprint} -> {generalist_fp}"]
    )
    if record.clusters_fingerprint != clusters_fp:
        changes.append(f"clusters.json: {record.clusters_fingerprint} -> {clusters_fp}")
    return changes + config_changes(record.config_key, cfg)


def is_complete(cfg: SpecialistConfig, index: int, generalist_fp: str, clusters_fp: str) -> bool:
    """True when specialist ``index`` is already trained for this generalist, clusters and config."""
    return complete_changes(cfg, index, generalist_fp, clusters_fp) == []


LR_CANDIDATES = (1e-2, 3e-3, 1e-3)  # lr = 0 tries each for an epoch (benchmarks/RESULTS.md, issue 43)


@dataclass(frozen=True, kw_only=True)
class LrTrial(Record):
    """One learning-rate trial: the rate, the epoch's mean training loss and the routed-validation
    NLL after it (None without routed validation examples; infinity where training diverged), and
    what it cost."""

    lr: float = param(gt=0)
    train_loss: float | None  # infinity where training diverged: null on disk (JSON has no infinity)
    val_nll: float | None = None  # None without routed validation (absent on disk); infinity where it diverged
    examples: int = param(ge=0)
    steps: int = param(ge=0)
    seconds: float = param(ge=0)

    @property
    def loss(self) -> float:
        """What the choice minimises: the validation NLL, or without it the training loss."""
        return self.train_loss if self.val_nll is None else self.val_nll

    def to_json(self) -> dict[str, Any]:
        """The trial as ``lr_trials.json`` stores it: a diverged trial's losses as null."""
        return {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in super().to_json().items()}

    @classmethod
    def from_json(cls, data: Any, where: str) -> LrTrial:
        trial = super().from_json(data, where)
        diverged = {k: math.inf for k in ("train_loss", "val_nll") if k in data and data[k] is None}
        return dataclasses.replace(trial, **diverged)


def _lr_trials(optim: OptimParts, job: _Job, model, steps: int, epoch, routed, bn_inputs, device) -> list[LrTrial]:
    """``lr = 0``: each of :data:`LR_CANDIDATES` trains a copy of the initial ``model`` for one
    epoch (the first epoch's batches, a one-epoch schedule of ``optim``'s kind), whose
    routed-validation NLL is then measured (without validation examples, its training loss); the
    lowest :attr:`LrTrial.loss` wins. A candidate whose training diverges scores infinity. The best
    rate differs by model (``benchmarks/RESULTS.md``), hence a choice on validation rather than a
    constant. ``epoch(recipe)`` is the stage's one epoch of training with ``recipe``."""
    trials = []
    for lr in LR_CANDIDATES:
        torch.manual_seed(torch_seed(job.seed))
        trial = copy.deepcopy(model)
        recipe = Recipe(
            dataclasses.replace(optim, epochs=1, lr=lr), trial, steps, f"specialist {job.index} (lr {lr:g} trial)"
        )
        t0 = time.perf_counter()
        trial.train()
        try:
            record = epoch(recipe)(0)
            if bn_inputs is not None:
                recompute_batch_norm(trial, itertools.islice(bn_inputs(0), optim.bn_batches))
            val_nll = routed.score(trial, device)["nll"] if routed is not None and len(routed) else None
            loss, examples, done = record["train_loss"], record["examples"], record["steps"]
        except TrainingDiverged:
            loss, val_nll, examples, done = math.inf, math.inf, steps * optim.batch_size, steps
        trials.append(LrTrial(lr=lr, train_loss=loss, val_nll=val_nll, examples=examples, steps=done,
                              seconds=time.perf_counter() - t0))  # fmt: skip
    torch.manual_seed(torch_seed(job.seed))
    return trials


TRIALS = "lr_trials.json"  # in the work directory: an interrupted specialist resumes without rerunning them
TRIALS_FORMAT = ("specens.lr-trials", 1)


@dataclass(frozen=True, kw_only=True)
class _StoredTrials(Record):
    """``lr_trials.json``: the config fields the trials ran under, and the trials."""

    ARTIFACT: ClassVar = TRIALS_FORMAT

    config: dict[str, Any]
    trials: list[LrTrial]


def _store_trials(key: dict[str, Any], job: _Job, trials: list[LrTrial]) -> None:
    """``lr_trials.json``: the trials, with the config fields (``key``) they were run under."""
    write_json_atomic(job.work / TRIALS, _StoredTrials(config=key, trials=trials).to_json())


def _stored_trials(key: dict[str, Any], job: _Job, restart: bool) -> list[LrTrial]:
    """The trials an interrupted attempt under the config fields ``key`` already ran, or [] (none,
    another config, a restart, or a file this specens cannot read: they are run again)."""
    path = job.work / TRIALS
    if restart or not path.is_file():
        return []
    try:
        stored = _StoredTrials.from_json(read_artifact_json(path, *TRIALS_FORMAT), str(path))
    except CheckpointError:
        return []
    same_config = stored.config == json.loads(json.dumps(key))
    return stored.trials if same_config and tuple(t.lr for t in stored.trials) == LR_CANDIDATES else []


def matched_epochs(generalist, info) -> int:
    """The specialists' default length (``epochs = 0``): as many presentations of each of its
    group's training examples as the generalist gave each of its own, the examples its training
    processed over the training split's size (at least 1); :data:`FALLBACK_EPOCHS` for a
    generalist without a training record."""
    metrics = generalist.record.metrics
    if metrics is None or metrics.cost is None or not metrics.cost.examples:  # an import without --epochs
        return FALLBACK_EPOCHS
    return max(1, round(metrics.cost.examples / info.split("train").num_samples))


FALLBACK_EPOCHS = 30  # the generalist's own default length


def _better(record: SpecialistEpoch, best: SpecialistEpoch) -> bool:
    """Lower NLL of the combination on the routed validation examples; without validation (or
    none routed), the last epoch."""
    if not record.val_routed:
        return True
    return record.val_nll < best.val_nll


def train_specialist(
    cfg: SpecialistConfig, index: int, on_epoch_end: Callable[[int, dict], None] | None = None, restart: bool = False
) -> SpecialistRecord:
    """Train specialist ``index`` (a position in ``clusters.json``); returns its record.

    ``on_epoch_end(epoch, record)`` is called after each epoch's checkpoint (``record`` includes
    ``"index"``). An interrupted run resumes; checkpoints made with another config are refused, or
    discarded with ``restart=True`` (:mod:`specens.core.loop`)."""
    clock = Stopwatch()
    device = start(cfg.threads, cfg.device)
    job = _Job.prepare(
        index, device, cfg.generalist, cfg.clusters, cfg.data, cfg.out, cfg.rho, cfg.seed * 1009 + index, cfg.trust_code
    )
    with exclusive(job.work, f"specialist {index}"):
        return _train(cfg, job, on_epoch_end, restart, clock, device)


def _train(cfg: SpecialistConfig, job: _Job, on_epoch_end, restart: bool, clock: Stopwatch, device) -> SpecialistRecord:
    """:func:`train_specialist` once its directories are checked and its work directory held. The
    config is read here, once: each helper gets the values it needs."""
    index, sampling = job.index, _Sampling(cfg.data, cfg.batch_size, cfg.rho, cfg.num_workers)
    torch.manual_seed(torch_seed(job.seed))
    features = _init_features(job.gen.model, sampling, cfg.init_batches, cfg.seed + 777, job.info, device)
    try:
        model = build_specialist(job.gen.model, job.group, features, top_blocks=cfg.shared_trunk, widen=cfg.widen).to(
            device
        )
    except ValueError as e:  # shared_trunk beyond this architecture's blocks, or widen on what cannot widen
        raise ConfigError(f"shared_trunk / widen: {e}") from None
    steps = max(1, math.ceil((cfg.epoch_size or int(2 * job.n_special)) / cfg.batch_size))
    parts = ensure_partition(cfg.out, job.gen, job.clusters, cfg.data, job.info, cfg.val_split, cfg.top_n, device)
    stream = _enriched(sampling, job, parts, steps, seed=job.seed)
    routed, validate = _routed_validation(cfg.val_split, cfg.top_n, job, parts, model, device)
    callbacks = [] if on_epoch_end is None else [lambda e, rec: on_epoch_end(e, {"index": index, **rec.to_json()})]
    # a shared-trunk specialist's soft targets: the generalist's own top blocks and head on the trunk's features
    top = _teacher_top(job.gen.model, cfg.shared_trunk) if isinstance(model, TrunkedSpecialist) else None
    bn_inputs = None
    if cfg.bn_batches:  # enriched batches like the training stream's, in another order (their own seed)
        bn_inputs = epoch_inputs(_enriched(sampling, job, parts, cfg.bn_batches, seed=job.seed * 2 + BN_SEED))
    loss = _Loss(part(SoftTargetParts, cfg), job.correction if cfg.soft_prior == "enriched" else 0.0, cfg.amp)

    def epoch(recipe: Recipe):
        return _epoch(recipe, job, stream, loss, top, device)

    key = cfg.result_key()
    trials = [] if cfg.lr else _stored_trials(key, job, restart)
    if not cfg.lr and not trials:
        optim = part(OptimParts, cfg, epochs=1, lr=LR_CANDIDATES[0])  # each trial sets its own
        trials = _lr_trials(optim, job, model, steps, epoch, routed, bn_inputs, device)
        _store_trials(key, job, trials)
    lr = cfg.lr or min(trials, key=lambda t: t.loss).lr
    optim = part(OptimParts, cfg, epochs=cfg.epochs or matched_epochs(job.gen, job.info), lr=lr)
    recipe = Recipe(optim, model, steps, f"specialist {index}", cfg, cfg.checkpoint_every)
    result = recipe.run(job.work, epoch(recipe), validate, _better, SpecialistEpoch, restart, callbacks, bn_inputs)
    cost = _cost(cfg.data, cfg.alpha, job, model, top, result, device, clock)
    if trials:
        cost = cost.plus_trials(*(sum(getattr(t, k) for t in trials) for k in ("examples", "steps", "seconds")))
    fit = _fit(cfg.data, cfg.val_split, job, parts, model, device)
    gate = _gate(routed, result.best, cfg.val_split, cfg.top_n)
    trained = {"rho": cfg.rho, "top_blocks": cfg.shared_trunk, "widen": cfg.widen, "lr": lr}
    record = _record(job, result, gate, cost, fit, trials, config=config_to_json(cfg), config_key=key, **trained)
    return publish_specialist(job.work, job.final, model, record)


@dataclass
class _Job:
    """What one specialist's training is about: its generalist, group, data and where it goes."""

    index: int
    gen: Any  # the loaded generalist (specens.generalist.checkpoint.LoadedGeneralist)
    clusters: Any
    info: Any
    group: torch.Tensor  # its classes, sorted
    n_special: float  # training examples in the group
    pi: float  # their share of the training split (docs/method.md §4)
    correction: float  # the dustbin logit's correction for the oversampling
    final: Path
    work: Path
    seed: int  # this specialist's: its initialisation, learning-rate trials and batches

    @classmethod
    def prepare(
        cls,
        index: int,
        device: torch.device,
        generalist: str,
        clusters_path: str,
        data: str,
        out: str,
        rho: float,
        seed: int,
        trust_code: bool,
    ) -> _Job:
        """Load and check the generalist, clusters and data; refuse a group without examples on
        either side, or an artifact in place that is not a specialist (before any training)."""
        gen = load_generalist(generalist, device, trust_code)
        clusters = load_clusters(clusters_path, gen.fingerprint, gen.n_classes)
        if not 0 <= index < len(clusters.groups):
            raise ConfigError(f"specialist index {index} outside the {len(clusters.groups)} groups of {clusters_path}")
        info = load_info(data)
        gen.check_fits(info, generalist, f"{data}/{INFO_FILE}")
        group = torch.as_tensor(clusters.groups[index])
        counts = torch.tensor(info.split("train").class_counts, dtype=torch.float64)
        n_special = float(counts[group].sum())
        pi = n_special / float(counts.sum())
        if not 0 < pi < 1:
            raise ConfigError(
                f"group {index} has {int(n_special)} training examples of {int(counts.sum())}: "
                "a specialist needs examples both in and outside its group"
            )
        check_outside_inputs(out, "--out", data=data, generalist=generalist, clusters=clusters_path)
        final = check_no_links(out, specialist_dir(out, index))
        check_target(final, SPECIALIST_FILES, "a trained specialist", META)
        check_no_links(out, work_dir(out, index))
        correction = dustbin_correction(pi, rho)
        return cls(index, gen, clusters, info, group, n_special, pi, correction, final, work_dir(out, index), seed)


@dataclass(frozen=True)
class _Sampling:
    """How the specialist reads the training split: the config's reading fields, unpacked at the door."""

    data: str
    batch_size: int
    rho: float  # the share of each batch from the group
    num_workers: int


def _enriched(s: _Sampling, job: _Job, parts, batches: int, seed: int) -> EnrichedBatches:
    """``batches`` enriched batches an epoch: the group's training examples (its part of the
    partition) and the rest of the training split, ``rho`` to ``1 - rho``."""
    special = parts.source(job.index, "train")
    return enriched_batches(
        Split.of(s.data, "train", job.info),
        job.group,
        Split.of(*special[:1], "train", special[1]),
        s.batch_size,
        batches,
        s.rho,
        seed,
        s.num_workers,
    )


@dataclass(frozen=True)
class _Loss:
    """The specialist's loss settings, unpacked at the door: the soft-target term, the shift of
    the soft targets to the batches' prior (0 for the natural prior), bfloat16 autocast."""

    soft: SoftTargetParts
    shift: float
    amp: bool


def _epoch(recipe: Recipe, job: _Job, stream: EnrichedBatches, loss: _Loss, teacher_top, device):
    """One epoch of the specialist's loss (docs/method.md §4) over its enriched batches; a shared-trunk
    specialist runs the frozen trunk once per batch for its own logits and the soft targets."""
    model, gen, g = recipe.model, job.gen, job.group.to(device)
    alpha, temperature = loss.soft.alpha, loss.soft.temperature

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the specialist's logits, the generalist's logits for the soft targets or None)."""
        if teacher_top is None:
            with torch.no_grad(), autocast(device, loss.amp):
                soft = gen.model(x) if alpha > 0 else None
            with autocast(device, loss.amp):
                return model(x), soft
        with torch.no_grad(), autocast(device, loss.amp):  # the frozen trunk once for both
            features = model.trunk(x)
            soft = teacher_top(features) if alpha > 0 else None
        with autocast(device, loss.amp):
            return model.on_features(features), soft

    def train_epoch(epoch: int) -> dict:
        stream.set_epoch(epoch)
        total, seen, taken = 0.0, 0, 0
        for batch in stream:
            x, y = batch.inputs.to(device), batch.labels.to(device)
            logits, soft = forward(x)
            value = specialist_loss(logits, y, soft, g, gen.n_classes, alpha, temperature, loss.shift)
            total += recipe.step(value, epoch, taken) * len(y)
            seen += len(y)
            taken += 1
        return {"train_loss": total / max(seen, 1), "examples": seen, "steps": taken}

    return train_epoch


def _routed_validation(val_split: str, top_n: int, job: _Job, parts, model: torch.nn.Module, device: torch.device):
    """(the validation examples routed to the specialist at ``top_n``, the epoch's validation) or
    (None, None) without a validation split."""
    if not val_split:
        return None, None
    root, part_info = parts.source(job.index, "val")
    batches = iter_split(root, "val", 512, info=part_info)
    routed = RoutedValidation.collect(job.gen.model, batches, job.group, job.correction, top_n, device, routed=True)

    def validate() -> dict:
        score = routed.score(model, device)
        return {"val_routed": len(routed), "val_correct": score["correct"], "val_nll": score["nll"]}

    return routed, validate


def _cost(
    data: str, alpha: float, job: _Job, model: torch.nn.Module, teacher_top, result, device, clock
) -> TrainingCost:
    """The training cost block (the generalist a teacher where ``alpha > 0``); a shared-trunk
    specialist's trunk runs forward only, once per example for its logits and the soft targets."""
    example = next(iter(iter_split(data, "train", 8, info=job.info))).inputs.to(device)
    teachers = [job.gen.model] if alpha > 0 else []
    if not isinstance(model, TrunkedSpecialist):
        return training_cost(result, model, example, teachers, clock)
    with torch.no_grad():
        features = model.trunk(example)
    forward_only = [forward_flops(model.trunk, example), *(forward_flops(teacher_top, features) for _ in teachers)]
    return training_cost(result, model.own, features, forward_only, clock)


def _fit(data: str, val_split: str, job: _Job, parts, model: torch.nn.Module, device: torch.device) -> FitReport:
    """The fit report (:mod:`.fit`) of the trained specialist: the group's training examples from
    the partition, the validation split's examples of the group's classes and of the others."""
    root, part_info = parts.source(job.index, "train")
    train = iter_split(root, "train", 512, info=part_info)
    group = job.group.tolist()
    val, outside = None, iter_split(data, "train", 512, info=job.info, filters=[Labels(group, exclude=True)])
    if val_split:
        val = iter_split(data, val_split, 512, info=job.info, filters=[Labels(group)])
        outside = iter_split(data, val_split, 512, info=job.info, filters=[Labels(group, exclude=True)])
    return fit_report(job.gen.model, model, job.group, job.correction, train, val, outside, device)


def _record(
    job: _Job,
    result,
    gate: GateRecord,
    cost: TrainingCost,
    fit: FitReport,
    trials: list[LrTrial],
    **trained: Any,
) -> SpecialistRecord:
    """``specialist.json`` but its fingerprints (:func:`publish_specialist` adds them); ``trained``:
    how it was trained (``rho``, ``top_blocks``, ``widen``, ``lr``, ``config``, ``config_key``)."""
    gen = job.gen
    return SpecialistRecord(
        index=job.index,
        group=job.group.tolist(),
        classes=[gen.classes[c] for c in job.group.tolist()],
        n_classes=gen.n_classes,
        pi=job.pi,
        dustbin_correction=job.correction,
        generalist_fingerprint=gen.fingerprint,
        clusters_fingerprint=job.clusters.fingerprint,
        model={"input_shape": list(gen.spec.input_shape), "generalist_model": gen.spec.to_json()},
        gate=gate,
        cost=cost,
        metrics=SpecialistMetrics.from_result(result),
        fit=fit,
        lr_trials=[  # a diverged trial's losses as null (JSON has no infinity)
            {k: v for k, v in t.to_json().items() if k in ("lr", "train_loss", "val_nll")} for t in trials
        ],
        **trained,
    )


def _teacher_top(generalist: torch.nn.Module, top_blocks: int) -> torch.nn.Module:
    """The generalist from its shared trunk's output to its logits (its top blocks and head, its
    own modules), so that a shared-trunk specialist's soft targets reuse the trunk's features."""
    return torch.nn.Sequential(split_body(generalist.body, top_blocks)[1], generalist.head)


def _gate(routed: RoutedValidation | None, best: SpecialistEpoch, val_split: str, top_n: int) -> GateRecord:
    """The gate's record (:mod:`.gate`): the generalist alone and with this specialist on the
    validation examples routed to it, and whether the specialist is on."""
    if routed is None:
        return GateRecord(on=True, why="no validation split: not gated")
    gen, combined = routed.generalist_score(), {"correct": best.val_correct, "nll": best.val_nll}
    on = gate_on(gen, combined)
    why = (
        f"{len(routed)} routed {val_split} examples: {gen['correct']} -> {combined['correct']} right, "
        f"NLL {gen['nll']:.4f} -> {combined['nll']:.4f}"
    )
    return GateRecord(
        on=on,
        why=why if len(routed) else f"no {val_split} example is routed to it",
        split=val_split,
        top_n=top_n,
        routed=len(routed),
        generalist=gen,
        combined=combined,
    )


@torch.no_grad()
def _init_features(
    generalist: torch.nn.Module, s: _Sampling, batches: int, seed: int, info, device
) -> torch.Tensor | None:
    """Body features of ``batches`` natural-distribution training batches, for the dustbin row's fit."""
    if batches <= 0:
        return None
    n = s.batch_size * batches
    stream = Pipeline(
        Split.of(s.data, "train", info), Cycle(Read()), Shuffle(SHUFFLE_BUFFER, n), Batches(s.batch_size), seed=seed
    )
    feats = [generalist.body(b.inputs.to(device)).float().cpu() for b in ShardLoader(stream)]
    return torch.cat(feats) if feats else None

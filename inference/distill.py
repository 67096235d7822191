"""Distilling the specialist ensemble back into one network: ``specens distill``.

The paper (section 5) leaves open how to put what the specialists know back into a single net.
Here the ensemble becomes a teacher: a *student*, by default the generalist's architecture started
from the generalist's weights, is trained with the loss of docs/method.md §1 on the ensemble's combined
distribution q (docs/method.md §5), so that at inference one model of the generalist's size and speed
replaces the generalist plus its active specialists.

**The temperature of q.** q minimises a sum of KL divergences; it is not the softmax of logits, so
``softmax(z / T)`` has no z to apply to. The soft targets at temperature T are q^(1/T)
renormalised, ``softmax(log q / T)`` (:func:`~specens.generalist.losses.temper`), which is
exactly ``softmax(z / T)`` when q = softmax(z): for a single model it is the paper's definition,
and for the ensemble it sharpens (T < 1) or flattens (T > 1) q the same way. The student's loss is

    α · T² · KL( temper(q, T) ‖ softmax_T(z_student) ) + (1 − α) · CE( y, softmax(z_student) )

on the training split, plus, for every extra transfer set (``transfer``), the soft term alone.

**Where q comes from** (:mod:`specens.inference.teachers`). On the fly (``EnsembleTeacher``: sparse
routing, the exact KL solve, on the very inputs the student sees, augmentation included), or from
the ``<shard>.q.npy`` files that ``specens infer --save-q`` wrote (``QCacheTeacher``: memory-mapped,
looked up by sample key, never loaded whole). A cache is used only if its manifest's fingerprints,
routing settings, dataset and shards are those of this run's ensemble and data; anything else is
refused with the field at fault. A cache holds q of the un-augmented inputs.

**What the student is.** An exported generalist (``model.safetensors`` + ``model.json``):
``specens generalist eval/predict`` work on it, and it can be the generalist of a second round
(``specens cluster --generalist RUN/student``, then specialists and ``Ensemble.load``). Its training
is :func:`~specens.generalist.train.train_generalist` with a :class:`DistillConfig`, so it
resumes, stops early on validation top-1 and records its cost like every generalist; a rerun with
another config is refused (or restarted), and one with another teacher too, since the run, the
routing and the cache directories are fields of the config, and the ensemble's fingerprints are
recorded in ``teacher.json`` and checked on resumption.

**The report** (:func:`compare`): student vs generalist vs ensemble on one split, top-1 and NLL,
inference FLOPs and measured seconds per example (side by side in one pass), and the share of the
ensemble's top-1 gain over the generalist that the student keeps; written to ``distill.json`` (a
:class:`~specens.inference.distill_report.DistillReport`) beside the student, with the run's
compute-matched baselines where ``specens baseline`` made them.
"""

from __future__ import annotations

import dataclasses
import time
import typing
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from specens.core.config import (
    OptimParts,
    SoftTargetParts,
    config_to_json,
    load_config,
    param,
    redefault,
    with_defaults,
)
from specens.core.cost import format_flops, forward_flops
from specens.core.errors import CheckpointError
from specens.core.io import check_header, check_outside_inputs, check_target, read_json, write_json_atomic
from specens.core.progress import progress_bar
from specens.core.records import Record
from specens.data.shards import iter_split
from specens.generalist.checkpoint import load_generalist, training_config
from specens.generalist.config import TrainConfig
from specens.generalist.evaluate import Metrics

from .baseline_report import BaselineReport
from .distill_report import DistillReport, ModelRow, StudentTraining
from .ensemble import Ensemble
from .teachers import EnsembleTeacher, QCacheTeacher

REPORT = "distill.json"
# What the student inherits from the generalist's own training config unless overridden: its model
# and how it was optimised. Not inherited: epochs and stopping, the teacher, the data's subsets.
INHERITED = (
    "model",
    "model_kwargs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "warmup",
    "jitter",
    "train_split",
    "val_split",
    "shuffle_buffer",
    "amp",
    "seed",
)


@dataclass(frozen=True, kw_only=True)
class DistillConfig(TrainConfig):
    """A student's training: :class:`TrainConfig` with the specialist ensemble of ``run``
    as its teacher. ``specens distill`` fills ``data``, ``out``, ``init`` and the fields in
    :data:`INHERITED` from the run's generalist; ``--set`` overrides any field."""

    SECTION: typing.ClassVar[str] = "distill"

    run: str = ""  # the run directory whose ensemble (generalist, clusters, specialists) is the teacher
    top_n: int = param(1, ge=1)  # the ensemble's routing: specialists of the generalist's top n classes
    all_specialists: bool = False  # also the specialists the validation gate switched off
    q_cache: tuple[str, ...] = ()  # `specens infer --save-q` outputs, one per split read; () computes q on the fly
    epochs: int = redefault(OptimParts, "epochs", 10)  # the student starts from the generalist: a fine-tuning budget
    patience: int = redefault(OptimParts, "patience", 3)
    alpha: float = redefault(SoftTargetParts, "alpha", 0.9)  # docs/method.md §1's typical weight of the soft term
    temperature: float = redefault(SoftTargetParts, "temperature", 2.0)

    def checks(self) -> list[tuple[bool, str]]:
        return [
            *super().checks(),
            (bool(self.run), "run: the run directory of the teaching ensemble is required"),
            (not self.teacher, "teacher: a distillation's teacher is its run's ensemble; leave teacher empty"),
        ]

    @property
    def has_teacher(self) -> bool:
        return True


def distill_config(
    run_dir: str | Path, data: str, out: str | None = None, overrides: dict | None = None
) -> DistillConfig:
    """The student's config: the generalist's model and optimisation (:data:`INHERITED`), its
    weights as the start (unless another model is asked for), ``DistillConfig``'s defaults for the
    rest, then ``overrides`` (field -> value or string, as ``--set`` gives them)."""
    run_dir = Path(run_dir)
    gen_dir = run_dir / "generalist"
    trust_code = str((overrides or {}).get("trust_code", "false")).lower() == "true"
    saved = training_config(gen_dir, trust_code)
    values = {k: saved[k] for k in (*INHERITED, "trust_code") if k in saved}
    values.update(data=data, out=out or str(run_dir / "student"), run=str(run_dir), init=str(gen_dir))
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    cfg = load_config(DistillConfig, None, {**values, **overrides})
    recorded = with_defaults(saved, TrainConfig)  # a field the generalist's config predates: its default
    same_model = (cfg.model, config_to_json(cfg)["model_kwargs"]) == (recorded["model"], recorded["model_kwargs"])
    if not same_model and "init" not in overrides:  # another architecture starts from scratch
        cfg = load_config(DistillConfig, None, {**values, **overrides, "init": ""})
    return cfg


def distill(
    run_dir: str | Path,
    data: str,
    out: str | None = None,
    *,
    overrides: dict | None = None,
    split: str = "test",
    progress: bool = True,
    restart: bool = False,
    echo=print,
) -> DistillReport:
    """Train (or resume) the student of ``run_dir``'s ensemble on ``data`` and compare it with
    the generalist and the ensemble on ``split``; returns the report, also saved as
    ``<out>/distill.json``."""
    from specens.generalist.train import RUN_FILES, train_generalist

    cfg = distill_config(run_dir, data, out, overrides)
    check_outside_inputs(cfg.out, "--out", data=cfg.data, transfer=cfg.transfer)  # before teacher.json is written
    check_target(cfg.out, RUN_FILES, "a student's run directory")
    if (Path(cfg.out) / "model.json").exists() and not (Path(cfg.out) / "teacher.json").exists():
        raise CheckpointError(
            f"{cfg.out}: holds a generalist that is not a student (no teacher.json); the student "
            "is never trained over it: choose another --out"
        )
    ens = Ensemble.load(
        cfg.run, device=cfg.device, top_n=cfg.top_n, all_specialists=cfg.all_specialists, trust_code=cfg.trust_code
    )
    ens.dataset_info(data)
    if cfg.q_cache:
        sources = [(cfg.data, cfg.train_split)] + [(t, cfg.transfer_split) for t in cfg.transfer]
        teacher = QCacheTeacher(cfg.q_cache, ens, sources)
    else:
        teacher = EnsembleTeacher(ens)
    baselines = Path(cfg.run) / "baselines" / "baselines.json"
    prior = _baseline_rows(baselines, split) if baselines.is_file() else {}  # refused before any training
    _check_teacher(Path(cfg.out), ens.fingerprints, restart)
    result = train_generalist(cfg, progress=progress, restart=restart, teacher=teacher)
    report = compare(ens, result.run_dir, data, split, progress=progress, trust_code=cfg.trust_code)
    report = dataclasses.replace(report, config=config_to_json(cfg), baselines=prior)
    write_json_atomic(Path(result.run_dir) / REPORT, report.to_json())
    echo(format_report(report))
    return report


def _baseline_rows(path: Path, split: str) -> dict:
    """Top-1 and NLL of the compute-matched alternatives in ``baselines.json`` made on ``split``
    (none when made on another); a malformed file is refused naming it."""
    b = BaselineReport.read(path)
    if b.split != split:
        return {}
    return {k: {"top1": v.top1, "nll": v.nll} for k, v in b.rows.items() if k not in ("generalist", "specialists")}


@dataclass(frozen=True, kw_only=True)
class TeacherRecord(Record):
    """``<out>/teacher.json``: the fingerprints of the ensemble a student was started from."""

    ARTIFACT: typing.ClassVar = ("specens.student-teacher", 1)

    ensemble: dict[str, typing.Any]  # Ensemble.fingerprints: the generalist's, the clusters', the specialists'


def _check_teacher(out: Path, fingerprints: dict, restart: bool) -> None:
    """Refuse to resume a student whose teaching ensemble changed under the same run directory
    (specialists retrained, the gate re-decided): the config names the run, not its weights.
    ``<out>/teacher.json`` (:class:`TeacherRecord`) records the fingerprints the student was
    started with; one written before it had a header holds them bare, and still reads."""
    path = out / "teacher.json"
    if path.is_file() and not restart:
        data = read_json(path)
        if isinstance(data, dict) and "format" in data:
            check_header(data, path, *TeacherRecord.ARTIFACT)
            old = TeacherRecord.from_json(data, str(path)).ensemble
        else:
            old = data
        if old != fingerprints:
            raise CheckpointError(
                f"{path}: this student was trained from another ensemble ({old}) than the run's "
                f"now ({fingerprints}); rerun with --restart (restart=True) or use another --out"
            )
    write_json_atomic(path, TeacherRecord(ensemble=fingerprints).to_json())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def compare(
    ens: Ensemble,
    student_dir: str | Path,
    data: str,
    split: str = "test",
    batch_size: int = 256,
    progress: bool = True,
    timing_examples: int = 4096,
    rounds: int = 3,
    trust_code: bool = False,
) -> DistillReport:
    """Student vs generalist vs ensemble on ``split``: top-1, NLL, inference FLOPs and seconds per
    example, and the share of the ensemble's gain the student keeps (:class:`DistillReport`).

    Timing (:func:`time_models`): on the split's first ``timing_examples`` examples, held in
    memory, each model runs whole passes on its own, in turn, ``rounds`` times; its time is its
    fastest pass. Interleaving the three batch by batch made the generalist look faster than the
    student of the same architecture (1.9x on Banking77): its weights were still in the CPU caches
    from the ensemble's own generalist pass."""
    info = ens.dataset_info(data)
    student = load_generalist(student_dir, ens.device, trust_code)
    metrics, active, held = _score_three(ens, student.model, data, split, batch_size, info, progress, timing_examples)
    seconds = time_models(
        {
            "student": lambda x: F.softmax(student.model(x).float(), 1),
            "generalist": lambda x: F.softmax(ens.generalist.model(x).float(), 1),
            "ensemble": ens.forward,
        },
        held,
        ens.device,
        rounds,
    )
    n = metrics["student"].n
    rows = _rows(ens, student.model, held[0][:8], metrics, active / max(n, 1), seconds)
    g, e, s = (rows[k].top1 for k in ("generalist", "ensemble", "student"))
    student_cost = student.record.metrics.cost if student.record.metrics else None
    gen_cost = ens.training_costs["generalist"]
    keys = [f.name for f in dataclasses.fields(StudentTraining)]
    return DistillReport(
        dataset=info.name,
        split=split,
        n=n,
        rows=rows,
        ensemble_gain=e - g,
        student_gain=s - g,
        kept=(s - g) / (e - g) if e > g else None,
        student_over_generalist_seconds=seconds["student"] / seconds["generalist"],
        ensemble_over_generalist_seconds=seconds["ensemble"] / seconds["generalist"],
        mean_active_specialists=active / max(n, 1),
        student_training=StudentTraining(**{k: getattr(student_cost, k) if student_cost else None for k in keys}),
        generalist_training_flops=gen_cost.train_flops if gen_cost else None,
        fingerprints={"student": student.fingerprint, **ens.fingerprints},
    )


def _rows(
    ens: Ensemble, student: torch.nn.Module, example, metrics: dict, mean_active: float, seconds: dict
) -> dict[str, ModelRow]:
    """The comparison's rows: each model's top-1, top-5 and NLL with its inference FLOPs and
    measured seconds per example (the ensemble's FLOPs: the generalist's plus ``mean_active``
    specialists')."""
    f_g = forward_flops(ens.generalist.model, example)
    flops = {
        "generalist": f_g,
        "ensemble": f_g + mean_active * ens.specialist_flops(example),
        "student": forward_flops(student, example),
    }
    return {
        name: ModelRow(
            **{k: v for k, v in m.result().items() if k in ("top1", "top5", "nll")},
            flops_per_example=flops[name],
            seconds_per_example=seconds[name],
        )
        for name, m in metrics.items()
    }


def _score_three(ens, student, data, split, batch_size, info, progress, timing_examples):
    """One pass over ``split``: the metrics of generalist, ensemble and student, the specialist
    passes the ensemble ran, and the first ``timing_examples`` inputs, kept for the timing."""
    metrics = {name: Metrics() for name in ("generalist", "ensemble", "student")}
    active, held, n_held = 0, [], 0
    total = info.split(split).num_samples
    bar = progress_bar(total=total, unit="ex", unit_scale=True, desc=f"compare {split}", enabled=progress)
    for batch in iter_split(data, split, batch_size, info=info):
        x, y = batch.inputs.to(ens.device), batch.labels
        if n_held < timing_examples:
            held.append(x)
            n_held += len(x)
        out = ens.forward(x)
        active += int(out.active.sum())
        metrics["student"].update(student(x).float().cpu(), y)
        metrics["generalist"].update(torch.log(out.p_general.clamp_min(1e-30)).cpu(), y)
        metrics["ensemble"].update(torch.log(out.q.clamp_min(1e-30)).cpu(), y)
        bar.update(len(batch))
    bar.close()
    return metrics, active, held


@torch.no_grad()
def time_models(models: dict, batches: list[torch.Tensor], device: torch.device, rounds: int = 3) -> dict[str, float]:
    """Seconds per example of each callable over ``batches``: a whole untimed warm-up pass each,
    then ``rounds`` rounds in which each model makes one timed pass in turn; the fastest pass
    counts (what the model costs when nothing else disturbs it)."""
    n = sum(len(x) for x in batches)
    best = dict.fromkeys(models, float("inf"))
    for r in range(rounds + 1):
        for name, run in models.items():
            _sync(device)
            t0 = time.perf_counter()
            for x in batches:
                run(x)
            _sync(device)
            if r > 0:
                best[name] = min(best[name], (time.perf_counter() - t0) / max(n, 1))
    return best


def format_report(r: DistillReport) -> str:
    """The report as an aligned plain-text table."""
    lines = [
        f"{r.dataset} {r.split}: {r.n} examples; the ensemble runs "
        f"{r.mean_active_specialists:.2f} specialists per example on average",
        f"{'':<14}{'top-1':>8}{'NLL':>9}{'FLOP/example':>16}{'time':>8}",
    ]
    for name in ("generalist", "ensemble", "student"):
        row = r.rows[name]
        rel = row.seconds_per_example / r.rows["generalist"].seconds_per_example
        lines.append(f"{name:<14}{row.top1:>8.4f}{row.nll:>9.4f}{format_flops(row.flops_per_example):>16}{rel:>7.2f}x")
    for name, row in r.baselines.items():
        lines.append(f"{name:<14}{row['top1']:>8.4f}{row['nll']:>9.4f}   (specens baseline, same split)")
    if r.kept is None:
        lines.append(
            f"the ensemble does not beat the generalist at top-1 here ({r.ensemble_gain:+.4f}): no gain to "
            f"keep; the student is {r.student_gain:+.4f} from the generalist"
        )
    else:
        lines.append(
            f"the student keeps {r.kept:.0%} of the ensemble's top-1 gain "
            f"({r.student_gain:+.4f} of {r.ensemble_gain:+.4f})"
        )
    t = r.student_training
    if t.train_flops and r.generalist_training_flops:
        lines.append(
            f"student training: {format_flops(t.train_flops)} "
            f"({t.train_flops / r.generalist_training_flops:.2f}x the generalist's), "
            f"{t.wall_seconds:.0f} s, {t.epochs} epochs"
        )
    return "\n".join(lines)

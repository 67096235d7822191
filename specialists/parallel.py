"""Training every specialist: one Ray task each, or sequentially with ``local=True``.

Ray's lifetime is :func:`specens.core.raysession.ray_session`'s; it checks the inputs before
anything trains, skips specialists whose artifacts are complete for the current generalist,
clusters and config (and refuses, or with ``restart`` retrains, those made with another config),
submits one task per remaining specialist with declared resources (a GPU or a fraction of one
where the cluster has GPUs, CPUs otherwise; ``max_calls=1`` so no worker process, and no GPU
memory, is reused between specialists; ``max_retries`` with ``retry_exceptions``), and collects
them with ``ray.wait``, reporting done / running / failed, each one's metrics and an ETA. A
retried task resumes from the specialist's last epoch checkpoint.

Connection (:func:`~specens.core.raysession.ray_session`): inside ``ray job submit`` it joins
that cluster; otherwise it starts a local one on 127.0.0.1 and shuts it down when the specialists
are done. A Ray session the caller started is used as it is and left running.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from specens.clustering.cluster import load_clusters
from specens.clustering.regime import RegimeCheck, examples_per_class, regime_check
from specens.clustering.report import read_error_capture
from specens.core.device import resolve_device
from specens.core.errors import CheckpointError, ConfigError
from specens.core.io import check_no_links, check_outside_inputs, check_target
from specens.core.loop import stale_changes
from specens.core.raysession import RETRIED_EXCEPTIONS, ray_session
from specens.data.format import INFO_FILE, load_info
from specens.generalist.checkpoint import load_generalist, read_record

from .fit import FitReport
from .partition import ensure_partition
from .record import (
    META,
    SPECIALIST_FILES,
    SpecialistMetrics,
    SpecialistRecord,
    read_specialist,
    specialist_dir,
    work_dir,
)
from .train import SpecialistConfig, complete_changes, train_specialist


@dataclass
class RunSummary:
    trained: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # already complete
    failed: dict[int, str] = field(default_factory=dict)
    metrics: dict[int, SpecialistMetrics] = field(default_factory=dict)  # of each specialist trained
    fits: dict[int, FitReport] = field(default_factory=dict)  # of each specialist trained or complete
    seconds: float = 0.0

    def failure_line(self) -> str:
        """The failed specialists and the first failure's cause, in one line (the others' causes
        are in the per-task lines above it)."""
        first = next(iter(self.failed))
        causes = f"the first, {first}: {self.failed[first]}"
        return f"{len(self.failed)} specialist(s) failed: {sorted(self.failed)}; {causes}"


def check_inputs(cfg: SpecialistConfig):
    """Everything that can be wrong before training: returns (generalist fingerprint, clusters)."""
    gen = load_generalist(cfg.generalist, trust_code=cfg.trust_code)
    clusters = load_clusters(cfg.clusters, gen.fingerprint, gen.n_classes)
    info = load_info(cfg.data)
    gen.check_fits(info, cfg.generalist, f"{cfg.data}/{INFO_FILE}")
    counts = info.split("train").class_counts
    for m, g in enumerate(clusters.groups):
        n = sum(counts[c] for c in g)
        if n == 0 or n == sum(counts):
            raise CheckpointError(
                f"{cfg.clusters}: group {m} has {n} of {sum(counts)} training examples; a "
                "specialist needs examples both in and outside its group"
            )
    return gen.fingerprint, clusters


def _summary_line(m: int, record: SpecialistRecord) -> str:
    return (
        f"specialist {m:3d}: {len(record.group)} classes, pi {record.pi:.4f}, best epoch "
        f"{record.metrics.best_epoch} of {len(record.metrics.history)}, "
        f"{'ON' if record.gate.on else 'gated off'} ({record.gate.why}); "
        f"{record.cost.wall_seconds:.0f} s, of which training {record.cost.train_seconds:.0f} s\n"
        f"specialist {m:3d} fit: {record.fit.line()}"
    )


def plan(
    cfg: SpecialistConfig, wanted: list[int], gen_fp: str, clusters_fp: str, restart: bool = False
) -> tuple[list[int], list[int]]:
    """Split ``wanted`` into (to train, already complete). A specialist, or an interrupted attempt
    at one, made with another generalist, clusters or config is refused with one error naming the
    differences, or retrained with ``restart`` (the rerun policy of :mod:`specens.core.loop`)."""
    todo, done, stale = [], [], []
    check_outside_inputs(cfg.out, "--out", data=cfg.data, generalist=cfg.generalist, clusters=cfg.clusters)
    for m in wanted:  # a directory holding anything but a specialist's files, or a link, stops the run before any work
        check_target(
            check_no_links(cfg.out, specialist_dir(cfg.out, m)), SPECIALIST_FILES, "a trained specialist", META
        )
    for m in wanted:
        changes = complete_changes(cfg, m, gen_fp, clusters_fp)
        if changes == []:
            done.append(m)
            continue
        todo.append(m)
        if changes is None:  # not complete: an interrupted attempt must match too
            changes = stale_changes(work_dir(cfg.out, m), cfg)
        if changes:
            stale.append(f"{specialist_dir(cfg.out, m)} ({'; '.join(changes)})")
    if stale and not restart:
        raise CheckpointError(
            f"{len(stale)} specialist(s) were trained, or started, with other settings: "
            f"{stale[0]}{' …' if len(stale) > 1 else ''}; rerun with --restart (restart=True) "
            "to retrain them, or use another --out"
        )
    return todo, done


def train_all(
    cfg: SpecialistConfig,
    *,
    local: bool = False,
    max_retries: int = 2,
    cpus_per_specialist: int = 1,
    gpus_per_specialist: float | None = None,
    indices: list[int] | None = None,
    restart: bool = False,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    echo=print,
    epoch_lines: bool = True,
) -> RunSummary:
    """Train the specialists of ``cfg.clusters`` that are not complete yet; see the module doc.

    gpus_per_specialist: None = 1 when the cluster has GPUs, else 0; a fraction packs several
    small specialists on one GPU. on_epoch_end(epoch, record) runs inside each specialist's
    process after each epoch (with Ray it must pickle); tests inject faults through it.
    epoch_lines: a line per specialist epoch, printed by the driver (``echo``) in order with its own
    lines, which say when each starts, ends and what the gate decided (with Ray, the workers send
    them through a queue, which the driver empties before each summary, so that no epoch line
    arrives after the summary of its specialist, as Ray's log streaming let them).
    """
    t0 = time.perf_counter()
    if local and gpus_per_specialist is not None:
        raise ConfigError("gpus_per_specialist applies to Ray tasks, and local=True trains without Ray")
    _check_device(cfg.device, local, gpus_per_specialist)
    gen_fp, clusters = check_inputs(cfg)
    wanted = list(range(len(clusters.groups))) if indices is None else indices
    summary = RunSummary()
    todo, summary.skipped = plan(cfg, wanted, gen_fp, clusters.fingerprint, restart)
    summary.fits = {m: read_specialist(specialist_dir(cfg.out, m)).fit for m in summary.skipped}
    echo(f"{len(wanted)} specialists: {len(summary.skipped)} already complete, {len(todo)} to train")
    if todo:
        echo(_regime(cfg).line())
        # one pass over the data for all of them, before any starts (:mod:`.partition`)
        _partition(cfg, clusters, echo)
    if cfg.threads == 0:
        cfg = dataclasses.replace(cfg, threads=cpus_per_specialist)
    if local:
        _train_here(cfg, todo, summary, restart, on_epoch_end, epoch_lines, echo)
    elif todo:
        with ray_session():
            _train_with_ray(
                cfg,
                todo,
                summary,
                max_retries=max_retries,
                cpus=cpus_per_specialist,
                gpus=gpus_per_specialist,
                restart=restart,
                on_epoch_end=on_epoch_end,
                epoch_lines=epoch_lines,
                echo=echo,
            )
    summary.seconds = time.perf_counter() - t0
    return summary


def _train_here(cfg, todo, summary, restart, on_epoch_end, epoch_lines, echo) -> None:
    """``train_all(local=True)``: the specialists one after another in this process."""

    def report(epoch: int, record: dict) -> None:
        if epoch_lines:
            echo(_epoch_line(record))
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    for m in todo:
        record = train_specialist(cfg, m, on_epoch_end=report, restart=restart)
        summary.trained.append(m)
        summary.metrics[m] = record.metrics
        summary.fits[m] = record.fit
        echo(_summary_line(m, record))


def _check_device(device: str, local: bool, gpus: float | None) -> None:
    """Refuse ``device`` in the driver, before the partition pass or any Ray task, where the
    specialists could not have it: in this process (``local``), or in the Ray tasks of a cluster
    started on this machine, it must exist here; a Ray cluster joined elsewhere (``RAY_ADDRESS``, or
    a session the caller started) is asked once connected (:func:`_check_ray_device`)."""
    if local:
        resolve_device(device)
        return
    if os.environ.get("RAY_ADDRESS") or ("ray" in sys.modules and sys.modules["ray"].is_initialized()):
        return
    resolve_device(device)
    _check_ray_device(device, gpus if gpus is not None else (1 if torch.cuda.is_available() else 0))


def _check_ray_device(device: str, gpus: float) -> None:
    """A Ray task sees only the GPUs it was given (Ray sets its CUDA_VISIBLE_DEVICES): none with
    ``gpus_per_specialist`` 0, and as ``cuda:0`` onwards the ones it holds."""
    if not device.startswith("cuda") or os.environ.get("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"):
        return
    if gpus == 0:
        raise ConfigError(
            f"device {device!r}: each Ray task is given no GPU (gpus_per_specialist 0, or a cluster "
            "without GPUs); use device cpu or auto, or give the tasks GPUs (--gpus-per-specialist)"
        )
    index = int(device.partition(":")[2] or 0)
    if index >= math.ceil(gpus):
        raise ConfigError(
            f"device {device!r}: a Ray task sees only the {math.ceil(gpus)} GPU(s) it is given, as cuda:0 "
            "onwards; use device cuda (or auto)"
        )


def _cause(e: BaseException) -> str:
    """A failed task's exception as one line: the task's own (Ray wraps it) and its last line."""
    cause = getattr(e, "cause", None) or e
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"


def _regime(cfg: SpecialistConfig) -> RegimeCheck:
    """The regime check on the generalist's record and the error capture `specens cluster` measured
    (its ``report.json`` beside ``clusters.json``, when there is one)."""
    capture = read_error_capture(Path(cfg.clusters).with_name("report.json"))
    return regime_check(read_record(cfg.generalist).metrics, capture, examples_per_class(load_info(cfg.data)))


def _partition(cfg: SpecialistConfig, clusters, echo) -> None:
    """Partition the data on this (the driver's) node: its GPU if it has one and ``cfg`` allows."""
    device = resolve_device(cfg.device if torch.cuda.is_available() else "cpu")
    gen = load_generalist(cfg.generalist, device, cfg.trust_code)
    ensure_partition(cfg.out, gen, clusters, cfg.data, load_info(cfg.data), cfg.val_split, cfg.top_n, device, echo)


def _epoch_line(r: dict) -> str:
    val = f" routed val NLL {r['val_nll']:.4f}, {r['val_correct']}/{r['val_routed']} right" if "val_nll" in r else ""
    return f"specialist {r['index']}: epoch {r['epoch']} loss {r['train_loss']:.4f}{val}"


def _task(cfg: SpecialistConfig, index: int, restart: bool, on_epoch_end, lines) -> dict:
    """One specialist in a Ray worker; ``lines``: the driver's queue of epoch lines, or None."""

    def report(epoch: int, r: dict) -> None:
        if lines is not None:
            try:
                lines.put(_epoch_line(r))  # returns once the queue holds it, before the task can end
            except Exception:  # noqa: BLE001 (the queue lost: a progress line must not fail the specialist)
                pass
        if on_epoch_end is not None:
            on_epoch_end(epoch, r)

    return train_specialist(cfg, index, on_epoch_end=report, restart=restart)


class _EpochLines:
    """The Ray workers' epoch lines, queued in an actor that takes no CPU and printed by the driver."""

    def __init__(self, echo):
        import ray
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})  # dies with the driver only
        self.echo = echo

    def drain(self) -> None:
        import ray

        try:
            n = self.queue.qsize()
            lines = self.queue.get_nowait_batch(n) if n else []
        except ray.exceptions.RayActorError:  # the queue lost (its node gone): the epoch lines only
            lines = []
        for line in lines:
            self.echo(line)


def _train_with_ray(cfg, todo, summary, *, max_retries, cpus, gpus, restart, on_epoch_end, epoch_lines, echo) -> None:
    import ray

    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    _check_ray_device(cfg.device, gpus)  # a cluster joined elsewhere: its GPUs are known only now
    remote = ray.remote(max_calls=1)(_task).options(
        num_cpus=cpus, num_gpus=gpus, max_retries=max_retries, retry_exceptions=RETRIED_EXCEPTIONS
    )
    lines = _EpochLines(echo) if epoch_lines else None
    queue = None if lines is None else lines.queue
    pending = {remote.remote(cfg, m, restart, on_epoch_end, queue): m for m in todo}  # submit everything first
    started = time.perf_counter()
    echo(f"submitted {len(pending)} Ray tasks ({cpus} CPU, {gpus} GPU each)")
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        if lines is not None:
            lines.drain()  # a finished task's lines were queued before it ended: they come first
        if not done:
            continue
        for ref in done:
            m = pending.pop(ref)
            try:
                record = ray.get(ref)  # already finished: this does not block
            except Exception as e:  # the task failed after all its retries
                summary.failed[m] = _cause(e)
                echo(f"specialist {m:3d}: FAILED after {max_retries} retries: {summary.failed[m]}")
                continue
            summary.trained.append(m)
            summary.metrics[m] = record.metrics
            summary.fits[m] = record.fit
            echo(_summary_line(m, record))
        finished = len(summary.trained) + len(summary.failed)
        rate = finished / (time.perf_counter() - started)
        eta = f", ETA {len(pending) / rate:.0f} s" if pending and rate > 0 else ""
        echo(
            f"[{finished}/{len(todo)}] done {len(summary.trained)}, running/queued {len(pending)}, "
            f"failed {len(summary.failed)}{eta}"
        )
    if lines is not None:
        lines.queue.shutdown(force=True)

"""Training every specialist: one Ray task each, or sequentially with ``local=True``.

This is the only module that imports Ray. It checks the inputs before anything trains, skips
specialists whose artifacts are complete for the current generalist, clusters and config,
submits one task per remaining specialist with declared resources (a GPU or a fraction of one
where the cluster has GPUs, CPUs otherwise; ``max_calls=1`` so no worker process, and no GPU
memory, is reused between specialists; ``max_retries`` with ``retry_exceptions``), and collects
them with ``ray.wait``, reporting done / running / failed, each one's metrics and an ETA. A
retried task resumes from the specialist's last epoch checkpoint.

Connection: inside ``ray job submit`` (``RAY_ADDRESS`` is set) it joins that cluster; otherwise it
starts a local one on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

from specens.clustering.cluster import load_clusters
from specens.data.format import load_info
from specens.generalist.checkpoint import CheckpointError, load_generalist

from .train import SpecialistConfig, is_complete, train_specialist


@dataclass
class RunSummary:
    trained: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # already complete
    failed: dict[int, str] = field(default_factory=dict)
    metrics: dict[int, dict] = field(default_factory=dict)
    seconds: float = 0.0


def check_inputs(cfg: SpecialistConfig):
    """Everything that can be wrong before training: returns (generalist fingerprint, clusters)."""
    gen = load_generalist(cfg.generalist)
    clusters = load_clusters(cfg.clusters, gen.fingerprint, gen.n_classes)
    info = load_info(cfg.data)
    if info.classes != gen.classes:
        raise CheckpointError(f"{cfg.generalist} was trained on other classes than {cfg.data}/dataset.json")
    counts = info.split("train").class_counts
    for m, g in enumerate(clusters.groups):
        n = sum(counts[c] for c in g)
        if n == 0 or n == sum(counts):
            raise CheckpointError(f"{cfg.clusters}: group {m} has {n} of {sum(counts)} training examples; a "
                                  "specialist needs examples both in and outside its group")
    return gen.fingerprint, clusters


def _summary_line(m: int, meta: dict) -> str:
    last = meta["metrics"]["history"][-1] if meta["metrics"]["history"] else {}
    val = f", val top-1 {last['val_top1']:.3f}" if "val_top1" in last else ""
    return (f"specialist {m:3d}: {len(meta['group'])} classes, pi {meta['pi']:.4f}, dustbin correction "
            f"{meta['dustbin_correction']:+.3f}, best epoch {meta['metrics']['best_epoch']}{val}")


def train_all(cfg: SpecialistConfig, *, local: bool = False, max_retries: int = 2, cpus_per_specialist: int = 1,
              gpus_per_specialist: float | None = None, indices: list[int] | None = None,
              echo=print) -> RunSummary:
    """Train the specialists of ``cfg.clusters`` that are not complete yet; see the module doc.

    gpus_per_specialist: None = 1 when the cluster has GPUs, else 0; a fraction packs several
    small specialists on one GPU.
    """
    t0 = time.perf_counter()
    gen_fp, clusters = check_inputs(cfg)
    wanted = list(range(len(clusters.groups))) if indices is None else indices
    summary = RunSummary()
    todo = []
    for m in wanted:
        (summary.skipped if is_complete(cfg, m, gen_fp, clusters.fingerprint) else todo).append(m)
    echo(f"{len(wanted)} specialists: {len(summary.skipped)} already complete, {len(todo)} to train")
    if cfg.threads == 0:
        cfg = dataclasses.replace(cfg, threads=cpus_per_specialist)
    if local:
        for m in todo:
            meta = train_specialist(cfg, m, progress=lambda r: echo(f"  specialist {r['index']}: epoch {r['epoch']}"))
            summary.trained.append(m)
            summary.metrics[m] = meta["metrics"]
            echo(_summary_line(m, meta))
    elif todo:
        _train_with_ray(cfg, todo, summary, max_retries, cpus_per_specialist, gpus_per_specialist, echo)
    summary.seconds = time.perf_counter() - t0
    return summary


def _task(cfg: SpecialistConfig, index: int) -> dict:
    return train_specialist(cfg, index, progress=lambda r: print(
        f"specialist {r['index']}: epoch {r['epoch']} loss {r['train_loss']:.4f} "
        f"val {r.get('val_top1', float('nan')):.3f}", flush=True))


def _train_with_ray(cfg, todo, summary, max_retries, cpus, gpus, echo) -> None:
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=True)
        else:
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=True)
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    remote = ray.remote(max_calls=1)(_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=max_retries,
                                                    retry_exceptions=True)
    pending = {remote.remote(cfg, m): m for m in todo}  # submit everything first
    started = time.perf_counter()
    echo(f"submitted {len(pending)} Ray tasks ({cpus} CPU, {gpus} GPU each)")
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            m = pending.pop(ref)
            try:
                meta = ray.get(ref)  # already finished: this does not block
            except Exception as e:  # the task failed after all its retries
                summary.failed[m] = f"{type(e).__name__}: {str(e).splitlines()[-1] if str(e) else ''}"
                echo(f"specialist {m:3d}: FAILED after {max_retries} retries: {summary.failed[m]}")
                continue
            summary.trained.append(m)
            summary.metrics[m] = meta["metrics"]
            echo(_summary_line(m, meta))
        finished = len(summary.trained) + len(summary.failed)
        rate = finished / (time.perf_counter() - started)
        eta = f", ETA {len(pending) / rate:.0f} s" if pending and rate > 0 else ""
        echo(f"[{finished}/{len(todo)}] done {len(summary.trained)}, running/queued {len(pending)}, "
             f"failed {len(summary.failed)}{eta}")

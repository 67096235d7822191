"""``specens demo``: the whole pipeline on the embedded glyph dataset (the README's main command).

Stages, each skipped when a rerun finds its output complete: render the glyphs, train the
generalist, cluster its confusions, train the specialists in parallel on a local Ray cluster,
batch inference over the test shards, the evaluation (generalist vs ensemble, Table 4, cost), and
the compute-matched comparison: the generalist trained further with the specialists' training
FLOPs, the alternative a user would otherwise take (``specens baseline``'s (a)).
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from specens.core import options
from specens.core.config import MAX_LR


@click.command("demo")
@click.option(
    "--run",
    "run_dir",
    default="runs/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Run directory; rerunning resumes and skips finished stages.",
)
@click.option("--classes", "n_classes", default=100, show_default=True, help="Glyph classes.")
@click.option("--epochs", default=6, show_default=True, help="Generalist epochs.")
@click.option("--groups", "n_groups", default=0, help="Specialists (k-means groups); 0 = one per 10 classes.")
@click.option(
    "--specialist-epochs",
    default=0,
    help="The most epochs a specialist runs (0: the specialists' default, 30); each stops earlier when its "
    "routed validation stops improving.",
)
@click.option(
    "--specialist-lr",
    default=0.0,
    type=click.FloatRange(min=0, max=MAX_LR),
    help="The specialists' peak learning rate (0: each chooses its own by one-epoch trials on validation).",
)
@click.option(
    "--baseline/--no-baseline",
    default=True,
    show_default=True,
    help="Also train the generalist further with the specialists' compute and compare.",
)
@click.option("--local", is_flag=True, help="Train the specialists in this process instead of through Ray.")
@options.device()
def demo(run_dir, n_classes, epochs, n_groups, specialist_epochs, specialist_lr, baseline, local, device):
    """The whole pipeline on the embedded glyph dataset: data, generalist, clusters, specialists
    (Ray), batch inference, evaluation, and the generalist trained further with the specialists'
    compute for comparison (the README gives its time)."""
    from specens.inference.baselines import compute_matched, format_table
    from specens.inference.ensemble import Ensemble
    from specens.inference.evaluate import evaluate_ensemble, format_report, save_report
    from specens.inference.infer import infer

    t0 = time.perf_counter()

    def stage(i: int, text: str) -> None:
        click.echo(click.style(f"[{i}/{7 if baseline else 6} {time.perf_counter() - t0:5.0f} s] {text}", bold=True))

    root = Path(run_dir)
    data = _dataset(stage, root / "glyphs", n_classes)
    generalist = _generalist(stage, root, data, epochs, device)
    k = n_groups or max(2, n_classes // 10)
    clusters = _clusters(stage, root, data, generalist, k, device)
    _specialists(stage, root, data, generalist, clusters, k, (specialist_epochs, specialist_lr), local, device)

    stage(5, "batch inference over the test shards")
    ens = Ensemble.load(root, device=device)
    infer(str(root), str(data), str(root / "predictions"), split="test", ensemble=ens)

    stage(6, "evaluation on the test faces (never seen in training)")
    r = evaluate_ensemble(ens, str(data), "test")
    save_report(r, root / "evaluation")
    click.echo(format_report(r))
    if baseline:
        stage(7, f"the same compute spent on the generalist instead: {_baseline_plan(ens, root)}")
        b = compute_matched(root, str(data), "test", device, alternatives=("continued",), echo=click.echo, evaluation=r)
        click.echo(format_table(b))
    click.echo(
        f"\ndone in {time.perf_counter() - t0:.0f} s; run directory {root}: generalist/, clusters/, "
        "specialists/, predictions/, evaluation/ (evaluation.json, table4.png)"
    )
    click.echo(_verdict(r, b if baseline else None))


def _dataset(stage, data: Path, n_classes: int) -> Path:
    """Stage 1: the embedded glyphs rendered into ``data`` (reused when already there)."""
    from specens.data.format import INFO_FILE
    from specens.data.glyphs import import_glyphs

    if (data / INFO_FILE).is_file():
        stage(1, f"dataset: reusing {data}")
    else:
        stage(1, f"dataset: rendering {n_classes} glyph classes into {data}")
        import_glyphs(str(data), n_classes=n_classes)
    return data


def _generalist(stage, root: Path, data: Path, epochs: int, device: str) -> str:
    """Stage 2: the generalist trained (resumed when interrupted) and its test accuracy printed."""
    from specens.generalist.config import TrainConfig
    from specens.generalist.evaluate import evaluate_generalist
    from specens.generalist.train import train_generalist

    cfg = TrainConfig(data=str(data), out=str(root / "generalist"), epochs=epochs, device=device)
    if _trained(cfg):
        stage(2, f"generalist: reusing {cfg.out}")
    else:
        stage(2, f"generalist: training ({epochs} epochs at most)")
    train_generalist(cfg)  # a complete run is checked and returned as it is
    m = evaluate_generalist(cfg.out, str(data), "test", device=device, progress=False)
    click.echo(f"generalist test top-1 {m['top1']:.4f}, top-5 {m['top5']:.4f}")
    return cfg.out


def _trained(cfg) -> bool:
    """Whether ``cfg.out`` holds a generalist exported from training with ``cfg`` (a rerun reuses it)."""
    from specens.core.config import config_changes
    from specens.core.errors import SpecensError
    from specens.generalist.checkpoint import read_record

    if not (Path(cfg.out) / "model.json").is_file():
        return False
    try:
        return config_changes(read_record(cfg.out).config, cfg) == []
    except SpecensError:  # unreadable: training says what is wrong
        return False


def _baseline_plan(ens, root: Path) -> str:
    """Stage 7's line, before it starts: the epochs and FLOPs the compute-matched generalist will
    train (as ``compute_matched``'s (a) counts them) and their time at the generalist's measured
    seconds per epoch; or that a rerun reuses it (exported, for the same number of epochs)."""
    import math

    from specens.core.config import with_defaults
    from specens.core.cost import format_flops
    from specens.core.errors import SpecensError
    from specens.generalist.checkpoint import read_record
    from specens.generalist.config import TrainConfig
    from specens.inference.baselines import BASELINES, budget

    b, g = budget(ens), ens.training_costs["generalist"]
    epochs = max(1, math.ceil(b.examples / g.examples_per_epoch))
    out = root / BASELINES / "continued"
    try:
        if (out / "model.json").is_file() and with_defaults(read_record(out).config, TrainConfig)["epochs"] == epochs:
            return f"reusing {out}"
    except SpecensError:  # unreadable: the stage says what is wrong
        pass
    seconds = g.wall_seconds / max(g.epochs, 1) * epochs
    return (
        f"training it {epochs} more epochs ({format_flops(b.specialists_flops)}, the specialists' training FLOPs; "
        f"about {seconds:.0f} s at the generalist's pace)"
    )


def _clusters(stage, root: Path, data: Path, generalist: str, k: int, device: str) -> Path:
    """Stage 3: the generalist's confusions clustered into ``k`` groups (reused when there)."""
    from specens.clustering.cluster import ClusterConfig, cluster

    clusters = root / "clusters" / "clusters.json"
    if clusters.is_file():
        stage(3, f"clusters: reusing {clusters}")
    else:
        stage(3, f"clustering the generalist's confusions into {k} groups")
        config = ClusterConfig(
            generalist=generalist, data=str(data), out=str(clusters.parent), n_groups=k, device=device
        )
        click.echo(cluster(config).summary())
    return clusters


def _specialists(stage, root, data, generalist, clusters, k, length, local, device) -> None:
    """Stage 4: one specialist per group, in parallel through Ray unless ``local``; ``length``:
    (the most epochs, the learning rate), each 0 for the specialists' default."""
    from specens.specialists.parallel import train_all
    from specens.specialists.train import SpecialistConfig

    stage(4, f"specialists: {k}, {'sequentially' if local else 'in parallel on a local Ray cluster'}")
    epochs, lr = length
    settings = {**({"epochs": epochs} if epochs else {}), **({"lr": lr} if lr else {})}
    config = SpecialistConfig(
        generalist=generalist, clusters=str(clusters), data=str(data), out=str(root), device=device, **settings
    )
    summary = train_all(config, local=local, echo=click.echo)
    if summary.failed:
        raise click.ClickException(f"{summary.failure_line()}; rerun to retry them")


def _verdict(r, b) -> str:
    """The demo's last line: what its tables mean, and where the measured regimes are."""
    e = r.ensemble.top1
    if b is None:
        return (
            f"the ensemble: test top-1 {e:.4f} against its generalist's {r.generalist.top1:.4f}; "
            "`specens baseline` says whether the same compute spent otherwise buys more"
        )
    c = b.rows["continued"].top1
    if c >= e:
        return (
            f"verdict: here the generalist trained further with the specialists' FLOPs is the better use of them "
            f"({c:.4f} against the ensemble's {e:.4f}); specialists beat further training where a converged "
            "generalist under-fits, and a wider generalist beats them there (README, 'When it helps'; "
            "benchmarks/RESULTS.md)"
        )
    return (
        f"verdict: here the ensemble beats the generalist trained further with the same FLOPs ({e:.4f} against "
        f"{c:.4f}); before keeping the specialists, `specens baseline` tries k generalists and a wider one "
        "at the ensemble's serving cost, which beat them on most datasets measured (README, 'When it helps')"
    )

"""``specens cluster``: fit confusable groups from a generalist and a transfer set, or from any
model's predictions file."""

from __future__ import annotations

import click

from specens.core import options
from specens.core.config import parse_overrides


@click.command("cluster")
@options.config_file("ClusterConfig", "cluster")
@click.option("--generalist", help="Run directory of the generalist (with --data; or --predictions instead).")
@click.option("--data", help="Dataset directory or URL of the transfer set the generalist runs on.")
@click.option(
    "--predictions",
    metavar="FILE",
    help="Instead of --generalist and --data: an .npz of any model's 'logits' or 'probs' (N, C), 'labels' (N,) "
    "and 'classes' (C strings) on a labelled transfer set (docs/clustering.md).",
)
@click.option("--out", help=options.required("Folder for clusters.json, report.json, covariance.png, group_sizes.png."))
@click.option(
    "--groups",
    "n_groups",
    help="K, the number of k-means groups, or 'auto': chosen from the class count and the errors the groups "
    "capture [default: the config's, auto].",
)
@click.option(
    "--temperature",
    type=float,
    help="T of the soft predictions softmax(z / T); probabilities q given: q^(1/T) renormalised [default: the "
    "config's, 4].",
)
@options.overrides
@options.quiet
@options.trust_code
def cluster_cli(config_path, generalist, data, predictions, out, n_groups, temperature, sets, quiet, trust_code):
    """Covariance of the generalist's soft predictions (or of any model's, from --predictions),
    k-means on its columns, and a report of whether the groups are worth specialists
    (docs/method.md §3)."""
    from .cluster import ClusterConfig, cluster

    overrides = {
        "generalist": generalist,
        "data": data,
        "predictions": predictions,
        "out": out,
        "n_groups": n_groups,
        "temperature": temperature,
        "trust_code": trust_code or None,
        **parse_overrides(sets),
    }
    cfg = options.load(ClusterConfig, config_path, overrides)
    report = cluster(cfg, progress=not quiet)
    click.echo(report.table())
    click.echo(f"wrote {cfg.out}/clusters.json, report.json, covariance.png, group_sizes.png")

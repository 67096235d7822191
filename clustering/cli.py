"""``specens cluster``: fit confusable groups from a generalist and a transfer set."""

from __future__ import annotations

import click

from specens.core import options
from specens.core.config import load_config, parse_overrides


@click.command("cluster")
@options.config_file("ClusterConfig", "cluster")
@click.option("--generalist", help="Run directory of the generalist.")
@click.option("--data", help="Dataset directory or URL of the transfer set.")
@click.option("--out", help="Folder for clusters.json, report.json, covariance.png, group_sizes.png.")
@click.option("--groups", "n_groups", type=int, help="K, the number of k-means groups.")
@click.option("--temperature", type=float, help="T of the soft predictions (default 4).")
@options.overrides
@options.quiet
@options.trust_code
def cluster_cli(config_path, generalist, data, out, n_groups, temperature, sets, quiet, trust_code):
    """Covariance of the generalist's soft predictions, k-means on its columns, and a report of
    whether the groups are worth specialists (docs/method.md §3)."""
    from .cluster import ClusterConfig, cluster

    overrides = {
        "generalist": generalist,
        "data": data,
        "out": out,
        "n_groups": n_groups,
        "temperature": temperature,
        "trust_code": trust_code or None,
        **parse_overrides(sets),
    }
    report = cluster(load_config(ClusterConfig, config_path, overrides), progress=not quiet)
    click.echo(report.table())
    click.echo(f"wrote {out or 'out'}/clusters.json, report.json, covariance.png, group_sizes.png")

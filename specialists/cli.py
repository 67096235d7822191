"""``specens specialists …``: train the specialists, in parallel with Ray or sequentially."""

from __future__ import annotations

import click
from click.core import ParameterSource

from specens.core import options
from specens.core.config import parse_overrides


@click.group("specialists")
def specialists_cli():
    """One specialist per group of clusters.json (docs/method.md §4), trained in parallel with Ray."""


@specialists_cli.command("train")
@options.config_file("SpecialistConfig", "specialists")
@click.option("--generalist", help=options.required("Run directory of the generalist."))
@click.option("--clusters", help=options.required("clusters.json from `specens cluster`."))
@click.option("--data", help=options.required("Dataset directory or URL."))
@click.option("--out", help=options.required("Run directory; specialists are written to OUT/specialists/sNNN/."))
@click.option("--epochs", type=int)
@click.option("--local", is_flag=True, help="Train sequentially in this process, without Ray (debugging).")
@click.option(
    "--cpus-per-specialist",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Ray CPUs (and torch threads) per task.",
)
@click.option(
    "--gpus-per-specialist",
    type=click.FloatRange(min=0),
    default=None,
    help="Ray GPUs per task; default 1 when the cluster has GPUs, else 0. A fraction packs small ones.",
)
@click.option(
    "--max-retries",
    default=2,
    show_default=True,
    type=click.IntRange(min=0),
    help="Retries of a failed specialist (it resumes).",
)
@click.option(
    "--restart", is_flag=True, help="Retrain specialists trained (or started) with another config (default: refuse)."
)
@options.overrides
@options.quiet
@options.trust_code
def train(
    config_path,
    generalist,
    clusters,
    data,
    out,
    epochs,
    local,
    cpus_per_specialist,
    gpus_per_specialist,
    max_retries,
    restart,
    sets,
    quiet,
    trust_code,
):
    """Train every specialist not already complete. Inside `ray job submit` it joins that
    cluster (RAY_ADDRESS); otherwise it starts a local one. Rerunning skips finished specialists."""
    if local:  # Ray's resources and retries: nothing without Ray
        given = click.get_current_context().get_parameter_source
        for name, option in (("gpus_per_specialist", "--gpus-per-specialist"), ("max_retries", "--max-retries")):
            if given(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
                raise click.ClickException(
                    f"{option} applies to Ray tasks, and --local trains in this process without Ray: drop one of them"
                )
    from .fit import summarise
    from .parallel import train_all
    from .train import SpecialistConfig

    overrides = {
        "generalist": generalist,
        "clusters": clusters,
        "data": data,
        "out": out,
        "epochs": epochs,
        "trust_code": trust_code or None,
        **parse_overrides(sets),
    }
    cfg = options.load(SpecialistConfig, config_path, overrides)
    summary = train_all(
        cfg,
        local=local,
        max_retries=max_retries,
        cpus_per_specialist=cpus_per_specialist,
        gpus_per_specialist=gpus_per_specialist,
        restart=restart,
        echo=click.echo,
        epoch_lines=not quiet,
    )
    click.echo(summarise(summary.fits))
    click.echo(
        f"trained {len(summary.trained)}, skipped {len(summary.skipped)} complete, failed "
        f"{len(summary.failed)} in {summary.seconds:.0f} s; artifacts in {cfg.out}/specialists/"
    )
    if summary.failed:
        raise click.ClickException(summary.failure_line())

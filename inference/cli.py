"""The ``specens`` command. ``inference/`` is the top of the pipeline, the one layer that may
import every stage, so the root command group lives here; each stage's subcommands live in that
stage's own ``cli`` module and stay thin wrappers over its Python API."""

from __future__ import annotations

import importlib.metadata

import click

from specens.clustering.cli import cluster_cli
from specens.data.cli import data_cli
from specens.data.format import DataError
from specens.generalist.checkpoint import CheckpointError
from specens.generalist.cli import generalist_cli
from specens.generalist.config import ConfigError
from specens.specialists.cli import specialists_cli

from .demo import demo

# Errors that mean "your input is wrong": shown as one line, exit code 1, no traceback.
USER_ERRORS = (DataError, ConfigError, CheckpointError, FileNotFoundError)


class _Root(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            raise click.ClickException(str(e)) from e


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(importlib.metadata.version("specens"), prog_name="specens")
def cli():
    """specens: specialist ensembles for classifiers with large label spaces
    (Hinton, Vinyals & Dean 2015, sections 5-6).

    \b
    The pipeline, one command group per stage:
      specens data …         import datasets into WebDataset shards
      specens generalist …   train / eval / predict the generalist
      specens cluster        group the classes the generalist confuses
      specens specialists …  train one specialist per group, in parallel with Ray
      specens infer          batch inference with the ensemble over shards
      specens evaluate       generalist vs ensemble: top-1, conditional accuracy, Table 4
      specens demo           the whole pipeline on the embedded glyph dataset
    """


cli.add_command(data_cli)
cli.add_command(generalist_cli)
cli.add_command(cluster_cli)
cli.add_command(specialists_cli)
cli.add_command(demo)


@cli.command("infer")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory: generalist/, clusters/clusters.json, specialists/.")
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Dataset directory (dataset.json + shards).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory; rerun to resume.")
@click.option("--split", default="test", show_default=True)
@click.option("--top-k", default=5, show_default=True, help="Classes written per sample.")
@click.option("--save-q", is_flag=True, help="Also write the full q of each shard as <shard>.q.npy.")
@click.option("--top-n", default=1, show_default=True, help="Route to the specialists of the generalist's top n classes.")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--device", default="auto", show_default=True)
def infer_cmd(run_dir, data, out, split, top_k, save_q, top_n, batch_size, device):
    """Predict every sample of a split with the ensemble; one output file per input shard."""
    from .infer import infer

    m = infer(run_dir, data, out, split=split, top_k=top_k, save_q=save_q, batch_size=batch_size, top_n=top_n,
              device=device)
    click.echo(f"{m['n_samples']} predictions in {len(m['shards'])} shard file(s) under {out}")


@cli.command("evaluate")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory: generalist/, clusters/clusters.json, specialists/.")
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Labelled dataset directory.")
@click.option("--split", default="test", show_default=True)
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Where evaluation.json and table4.png go [default: RUN/evaluation].")
@click.option("--top-n", default=1, show_default=True, help="Route to the specialists of the generalist's top n classes.")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--device", default="auto", show_default=True)
def evaluate_cmd(run_dir, data, split, out, top_n, batch_size, device):
    """Generalist alone vs the ensemble: top-1/5, conditional accuracy, the paper's Table 4."""
    from .ensemble import Ensemble
    from .evaluate import evaluate_ensemble, format_report, save_report

    ens = Ensemble.load(run_dir, device=device, top_n=top_n)
    r = evaluate_ensemble(ens, data, split, batch_size)
    out = out or f"{run_dir}/evaluation"
    save_report(r, out)
    click.echo(format_report(r))
    click.echo(f"saved {out}/evaluation.json and {out}/table4.png")


def main() -> None:
    cli(prog_name="specens")

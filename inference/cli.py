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
      specens demo           the whole pipeline on the embedded glyph dataset
    """


cli.add_command(data_cli)
cli.add_command(generalist_cli)
cli.add_command(cluster_cli)
cli.add_command(specialists_cli)
cli.add_command(demo)


def main() -> None:
    cli(prog_name="specens")

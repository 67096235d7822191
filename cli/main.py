"""The ``specens`` command: one group per stage, each stage's subcommands in that stage's own
``cli`` module (thin wrappers over its Python API), and the one error policy: a
:class:`~specens.core.errors.SpecensError` (or a file the system cannot open) is printed as one
line, ``Error: <message>``, with exit status 1; anything else is a bug and keeps its traceback.

The stages' ``cli`` modules import no torch, scikit-learn, SciPy, Ray or WebDataset at module
level (each command imports its stage's API when it runs), so ``--help`` answers at once;
tests/test_cli_help.py checks it."""

from __future__ import annotations

import importlib.metadata
import warnings

import click

from specens.clustering.cli import cluster_cli
from specens.core.errors import SpecensError, TrustedCodeWarning
from specens.data.cli import data_cli
from specens.generalist.cli import generalist_cli
from specens.inference.cli import baseline_cmd, distill_cmd, evaluate_cmd, infer_cmd
from specens.specialists.cli import specialists_cli

from .demo import demo


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """specens' own warnings (building trusted code) as one ``Warning:`` line; others as Python shows them."""
    if issubclass(category, TrustedCodeWarning):
        click.echo(f"Warning: {message}", err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def _one_line(message: str) -> str:
    """A user error's message as one line: an error re-raised from a DataLoader worker carries the
    worker's traceback, whose last line is the error itself."""
    if "Original Traceback" in message:
        last = [ln for ln in message.splitlines() if ln.strip()][-1]
        return last.split(": ", 1)[1] if last.startswith("specens.") and ": " in last else last
    return " ".join(message.split("\n"))


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(e)


class _Root(click.Group):
    def invoke(self, ctx: click.Context):
        warnings.showwarning = _show_warning
        warnings.simplefilter("always", TrustedCodeWarning)
        try:
            return super().invoke(ctx)
        except SpecensError as e:
            raise click.ClickException(_one_line(str(e))) from e
        except click.BadParameter as e:  # an option's value out of its range or type: one line, as any bad input
            raise click.ClickException(e.format_message()) from e
        except (MemoryError, RuntimeError) as e:  # torch's allocators raise RuntimeError subclasses
            if not _out_of_memory(e):
                raise
            raise click.ClickException(
                "out of memory: the model, batch_size or data do not fit this machine "
                f"({_one_line(str(e)) or type(e).__name__}); lower batch_size or the model's "
                "size"
            ) from e
        except OSError as e:  # a path the system cannot open or write: missing, a directory, no permission
            if e.filename is None:
                raise
            raise click.ClickException(f"{e.filename}: {e.strerror}") from e


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
      specens evaluate       generalist vs ensemble: top-1, conditional accuracy, Table 4, cost
      specens baseline       the specialists vs the same compute spent otherwise
      specens distill        the ensemble distilled back into one network
      specens demo           the whole pipeline on the embedded glyph dataset
    """


for command in (
    data_cli,
    generalist_cli,
    cluster_cli,
    specialists_cli,
    infer_cmd,
    evaluate_cmd,
    baseline_cmd,
    distill_cmd,
    demo,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="specens")

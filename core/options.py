"""Command-line options that several stages' commands share, so that each means the same
everywhere."""

from __future__ import annotations

import click

trust_code = click.option(
    "--trust-code",
    is_flag=True,
    help="Build models that the loaded run directories name as code (model 'package.module:callable'): "
    "importing it runs that code. Only for directories you trust; by default such a model is refused.",
)
overrides = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any config field (repeatable), e.g. --set lr=0.001 --set 'model_kwargs={\"width\": 32}'.",
)
quiet = click.option("--quiet", is_flag=True, help="Only the results: no progress bars, no per-epoch lines.")
top_n = click.option(
    "--top-n",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Route to the specialists of the generalist's top n classes.",
)
all_specialists = click.option(
    "--all-specialists", is_flag=True, help="Use every trained specialist, also those the validation gate switched off."
)


def device(configured: bool = False):
    """``--device``; for a command built from a config (``configured``), unset leaves the config's."""
    if configured:
        return click.option("--device", default=None, help="auto, cpu, cuda or cuda:N [default: the config's, auto].")
    return click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")


REQUIRED = "[required unless in --config]"


def required(help: str):
    """``help`` of an option that a command built from a config needs from the command line or the file."""
    return f"{help} {REQUIRED}"


def load(cls: type, config_path: str | None, overrides: dict):
    """:func:`specens.core.config.load_config` for the running command: a required key that neither
    the command line nor ``--config`` gave is named as the command's option (``--data``), as click
    names a missing option, not as the config key the Python API reports."""
    from specens.core.config import MissingKeys, load_config

    try:
        return load_config(cls, config_path, overrides)
    except MissingKeys as e:
        if not e.keys:
            raise
        params = click.get_current_context().command.params
        names = {p.name: p.opts[0] for p in params if isinstance(p, click.Option)}
        opts = ", ".join(repr(names.get(k, f"--set {k}=...")) for k in e.keys)
        keys = ", ".join(e.keys)
        where = f"{e.path} has no {keys} either" if e.path else f"or {keys} in a --config file"
        raise click.ClickException(f"Missing option{'s' if len(e.keys) > 1 else ''} {opts} ({where})") from None


def config_file(config_class: str, section: str):
    """``--config``: a TOML file of the stage's config fields."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        help=f"TOML file of {config_class} fields (top level or a [{section}] table).",
    )


def run_dir(help: str):
    """``--run``: a run directory the command reads."""
    return click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help=help)

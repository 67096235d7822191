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

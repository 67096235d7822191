"""Shared by the benchmark scripts: a Markdown table, and appending it to RESULTS.md."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def former_featurizer():
    """The text featuriser the early text tables were measured with (word 1-2 grams and character
    3-grams, repeats kept, 96 tokens), for the benchmarks that reproduce them."""
    from specens.data.text import HashedNgrams

    return HashedNgrams(max_tokens=96, char_ngrams=3, char_min=3, unique=False)


def markdown_table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def record(name: str, command: str, table: str) -> None:
    """Append ``table`` under a heading naming the benchmark, the date and the machine."""
    with open(RESULTS, "a") as f:
        f.write(f"\n### {name} ({time.strftime('%Y-%m-%d')}, {machine()})\n\n`{command}`\n\n{table}\n")


def add_settings_option(ap, flag: str, dest: str, help: str) -> None:
    """A repeatable ``FLAG KEY=VALUE`` option collected into ``dest`` (for ``parse_overrides``)."""
    ap.add_argument(flag, dest=dest, action="append", default=[], metavar="KEY=VALUE", help=help)

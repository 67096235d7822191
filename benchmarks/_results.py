"""Shared by the benchmark scripts: a Markdown table, and appending it to RESULTS.md."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


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

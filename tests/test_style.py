"""The tree passes the project's ruff configuration (pyproject.toml): lint and format."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff(command):
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))  # this environment's, activated or not
    assert ruff, "ruff is a dev dependency: pip install -e '.[dev]'"
    r = subprocess.run([ruff, *command], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

"""``specens --help`` at every level answers without importing the heavy stack (torch,
scikit-learn, SciPy, Ray, WebDataset, matplotlib): the stages' ``cli`` modules import their APIs
inside the commands, and the packages they live in import their exports on first use.

Each check runs in a fresh interpreter (this one has imported torch long ago) and asserts which
modules were imported, not a time, which would be flaky on a shared machine."""

import subprocess
import sys

import click
import pytest

from specens.cli.main import cli

HEAVY = ("torch", "sklearn", "scipy", "ray", "webdataset", "matplotlib")


def _command_paths(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under ``group``, as the words that name it (``()`` is the root)."""
    ctx = click.Context(group)
    out = [path]
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        out += _command_paths(cmd, (*path, name)) if isinstance(cmd, click.Group) else [(*path, name)]
    return out


CHECK = """
import sys
from click.testing import CliRunner
from specens.cli.main import cli

r = CliRunner().invoke(cli, sys.argv[1:], prog_name="specens")
assert r.exit_code == 0, (r.exit_code, r.output, r.exception)
assert "specens" in r.output, r.output
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
assert not heavy, f"imported {{heavy}}"
"""


def test_every_command_is_checked():
    paths = _command_paths(cli)
    for expected in [
        (),
        ("generalist", "train"),
        ("cluster",),
        ("specialists", "train"),
        ("infer",),
        ("data", "glyphs"),
    ]:
        assert expected in paths


@pytest.mark.parametrize("args", [[*p, "--help"] for p in _command_paths(cli)] + [["--version"]], ids=" ".join)
def test_help_imports_no_heavy_module(args):
    r = subprocess.run(
        [sys.executable, "-c", CHECK.format(heavy=HEAVY), *args], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr


def test_lazy_package_exports():
    """The packages whose exports are imported on first use still give every name in ``__all__``
    (as ``from specens.inference import Ensemble`` did), and refuse others as modules do."""
    import specens.clustering
    import specens.inference

    for package in (specens.clustering, specens.inference):
        for name in package.__all__:
            assert getattr(package, name).__name__ == name
            assert name in dir(package)
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            package.nope  # noqa: B018

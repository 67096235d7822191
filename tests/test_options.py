"""Options that would do nothing, and messages that would mislead (issue 44): each combination is
refused as one ``Error:`` line naming the option or key at fault, or accepted and said plainly."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from specens.cli.main import cli


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def assert_refused(r, culprit: str) -> None:
    """Exit 1, no traceback, exactly one line on stderr: ``Error: ...`` naming ``culprit``."""
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 1, (r.exit_code, r.output)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert culprit in lines[0], (culprit, lines[0])


# -- 1. options that do nothing -------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, culprit",
    [
        (("--gpus-per-specialist", 1), "--gpus-per-specialist applies to Ray tasks"),
        (("--max-retries", 3), "--max-retries applies to Ray tasks"),
    ],
)
def test_ray_options_are_refused_with_local(tmp_path, extra, culprit):
    args = ("specialists", "train", "--local", "--generalist", tmp_path, "--clusters", tmp_path / "c.json")
    assert_refused(run_cli(*args, "--data", tmp_path, "--out", tmp_path / "o", *extra), culprit)


@pytest.mark.parametrize(
    "sets, culprit",
    [
        (("--teacher", "T", "--set", "alpha=0"), "alpha=0 leaves the teacher unused"),
        (("--set", "temperature=4"), "temperature=4.0 does nothing without a teacher"),
        (("--set", "alpha=0.5"), "alpha=0.5 does nothing without a teacher"),
        (("--set", "teacher_mean=geometric"), "teacher_mean='geometric' does nothing without a teacher"),
        (("--set", "transfer_split=val"), "transfer_split='val' does nothing without transfer sets"),
        (("--teacher", "T", "--set", "transfer_split=val"), "transfer_split='val' does nothing without transfer"),
    ],
)
def test_soft_target_settings_without_their_teacher_are_refused(tmp_path, sets, culprit):
    r = run_cli("generalist", "train", "--data", tmp_path, "--out", tmp_path / "o", *sets)
    assert_refused(r, culprit)
    assert not (tmp_path / "o").exists()


def test_soft_target_settings_with_a_teacher_are_accepted():
    from specens.generalist.config import TrainConfig
    from specens.inference.distill import DistillConfig

    cfg = TrainConfig(data="d", out="o", teacher=("t",), alpha=0.5, temperature=4.0, teacher_mean="geometric")
    assert (cfg.alpha, cfg.temperature) == (0.5, 4.0)
    TrainConfig(data="d", out="o", teacher=("t",), transfer=("x",), transfer_split="val")
    # a student at alpha 0 is the labels-only control of tests/test_distill.py and the benchmarks
    assert DistillConfig(data="d", out="o", run="r", alpha=0.0).alpha == 0.0

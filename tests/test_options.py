"""Options that would do nothing, and messages that would mislead (issue 44): each combination is
refused as one ``Error:`` line naming the option or key at fault, or accepted and said plainly."""

from __future__ import annotations

import json
import shutil

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


# -- 2. a net near chance is not exported without a word -------------------------------------------


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory) -> str:
    """40 synthetic classes, 20 training and 10 validation examples each."""
    from specens.data.synthetic import import_synthetic

    out = tmp_path_factory.mktemp("options") / "ds"
    import_synthetic(str(out), n_classes=40, n_groups=4, dim=32, n_train=20, n_val=10, n_test=2, seed=0)
    return str(out)


@pytest.mark.parametrize("lr, warned", [(1e-7, True), (3e-2, False)])
def test_a_net_near_chance_is_exported_with_a_warning_naming_lr(small_ds, tmp_path, lr, warned):
    args = ("generalist", "train", "--data", small_ds, "--out", tmp_path / "g", "--epochs", 3, "--quiet")
    r = run_cli(*args, "--set", f"lr={lr}", "--set", 'model_kwargs={"hidden": [32]}', "--set", "threads=1")
    assert r.exit_code == 0, r.output
    assert "generalist " in r.stdout and ": best epoch " in r.stdout and "val top-1 " in r.stdout
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("Warning: ")]
    if warned:
        assert len(warnings) == 1 and "near chance" in warnings[0] and f"lr={lr:g}" in warnings[0], r.stderr
        assert "chance 0.0250 (40 classes)" in warnings[0]
    else:
        assert not warnings, r.stderr


# -- 3. the specialists' device is checked in the driver, and a Ray failure names its cause --------


@pytest.mark.parametrize("local", [True, False])
def test_a_device_this_machine_lacks_is_refused_before_any_work(tmp_path, local):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = ("specialists", "train", *(["--local"] if local else []), "--generalist", tmp_path / "g")
    r = run_cli(
        *args, "--clusters", tmp_path / "c.json", "--data", tmp_path, "--out", tmp_path / "o", "--set", "device=cuda"
    )
    assert_refused(r, "device 'cuda': CUDA is not available on this machine")
    assert not (tmp_path / "o").exists()  # no partition pass, no Ray


def test_a_ray_task_given_no_gpu_cannot_use_cuda():
    from specens.core.errors import ConfigError
    from specens.specialists.parallel import _check_ray_device

    for device, gpus in (("cuda", 0), ("cuda:0", 0), ("cuda:1", 1), ("cuda:2", 0.5)):
        with pytest.raises(ConfigError, match=f"device '{device}': "):
            _check_ray_device(device, gpus)
    for device, gpus in (("cpu", 0), ("auto", 0), ("cuda", 1), ("cuda:0", 0.25), ("cuda:1", 2)):
        _check_ray_device(device, gpus)


def test_the_failure_line_gives_the_first_failures_cause():
    from specens.specialists.parallel import RunSummary, _cause

    ray = pytest.importorskip("ray")
    from specens.core.errors import ConfigError

    wrapped = ray.exceptions.RayTaskError(
        "_task", "Traceback ...\nlong", ConfigError("device 'cuda': no")
    ).as_instanceof_cause()
    assert _cause(wrapped) == "ConfigError: device 'cuda': no"
    assert _cause(RuntimeError("first\nlast")) == "RuntimeError: last"
    summary = RunSummary(failed={3: "ConfigError: device 'cuda': no", 0: "OSError: gone"})
    assert summary.failure_line() == "2 specialist(s) failed: [0, 3]; the first, 3: ConfigError: device 'cuda': no"


# -- 4. a missing required option is named as the command's option ------------------------------


@pytest.mark.parametrize(
    "command, missing",
    [
        (("generalist", "train"), ("--data", "--out")),
        (("specialists", "train"), ("--generalist", "--clusters", "--data", "--out")),
    ],
)
def test_missing_options_are_named_as_options_and_marked_in_help(command, missing):
    r = run_cli(*command)
    names = ", ".join(repr(o) for o in missing)
    keys = ", ".join(o[2:] for o in missing)
    assert_refused(r, f"Missing options {names} (or {keys} in a --config file)")
    r = run_cli(*command, *missing[0:1], "X")
    rest = missing[1:]
    assert_refused(r, f"Missing option{'s' if len(rest) > 1 else ''} {', '.join(repr(o) for o in rest)} (")
    help_text = " ".join(run_cli(*command, "--help").stdout.split())
    for option in missing:
        assert f"{option} TEXT" in help_text
    assert help_text.count("[required unless in --config]") == len(missing)


def test_a_config_file_without_a_required_key_is_named_with_the_option(tmp_path):
    (tmp_path / "c.toml").write_text('[generalist]\nout = "o"\n')
    r = run_cli("generalist", "train", "--config", tmp_path / "c.toml")
    assert_refused(r, f"Missing option '--data' ({tmp_path}/c.toml has no data either)")


def test_cluster_groups_shows_its_default():
    help_text = " ".join(run_cli("cluster", "--help").stdout.split())
    assert "--groups TEXT K, the number of k-means groups, or 'auto': chosen from the class count" in help_text
    assert "[default: the config's, auto]" in help_text


# -- 6. the demo says what a rerun reuses, and what its last stage will cost -----------------------


SMALL = dict(epochs=1, model_kwargs={"hidden": [8]}, threads=1)


@pytest.fixture(scope="module")
def small_generalist(small_ds, tmp_path_factory) -> str:
    from specens.generalist.config import TrainConfig
    from specens.generalist.train import train_generalist

    out = tmp_path_factory.mktemp("options") / "g"
    return train_generalist(TrainConfig(data=small_ds, out=str(out), **SMALL), progress=False).run_dir


def test_demo_reuses_only_a_generalist_trained_with_its_config(small_ds, small_generalist, tmp_path):
    from specens.cli.demo import _trained
    from specens.generalist.config import TrainConfig

    cfg = TrainConfig(data=small_ds, out=small_generalist, **SMALL)
    assert _trained(cfg)
    assert _trained(TrainConfig(**{**cfg.__dict__, "device": "cpu"}))  # changes nothing computed
    assert not _trained(TrainConfig(**{**cfg.__dict__, "epochs": 2}))  # the rerun trains (or refuses)
    assert not _trained(TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "g")}))


def test_demo_states_the_compute_matched_stage_before_it_starts(small_generalist, tmp_path):
    from types import SimpleNamespace

    from specens.cli.demo import _baseline_plan
    from specens.core.cost import TrainingCost

    def cost(examples, epochs, flops, wall):
        return TrainingCost(
            examples=examples,
            steps=1,
            epochs=epochs,
            flops_per_example=1.0,
            teacher_flops_per_example=0.0,
            parameters=1,
            train_flops=flops,
            train_seconds=wall,
            train_cpu_seconds=wall,
            validation_seconds=0.0,
            wall_seconds=wall,
            cpu_seconds=wall,
            overhead_seconds=0.0,
            epochs_resumed=0,
        )

    # the generalist: 6 epochs of 1,000 examples, 6e9 FLOPs in 60 s; the specialists: 2.1e10 FLOPs in all
    ens = SimpleNamespace(
        training_costs={
            "generalist": cost(6000, 6, 6e9, 60.0),
            "specialists": [cost(1, 1, 1e10, 1), cost(1, 1, 1.1e10, 1)],
        }
    )
    plan = (
        "training it 21 more epochs (21 GFLOP, the specialists' training FLOPs; about 210 s at the generalist's pace)"
    )
    assert _baseline_plan(ens, tmp_path / "fresh") == plan
    other, same = tmp_path / "other", tmp_path / "same"
    shutil.copytree(small_generalist, other / "baselines" / "continued")  # trained for 1 epoch, not 21
    assert _baseline_plan(ens, other) == plan
    shutil.copytree(small_generalist, same / "baselines" / "continued")
    record = json.loads((same / "baselines" / "continued" / "model.json").read_text())
    record["config"]["epochs"] = 21  # the config is outside the fingerprint: the record stays valid
    (same / "baselines" / "continued" / "model.json").write_text(json.dumps(record))
    assert _baseline_plan(ens, same) == f"reusing {same}/baselines/continued"

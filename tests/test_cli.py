"""The `specens` command: exit codes and exact messages, through the real executable where the
entry point is under test, else in process through the root command it calls (a process per
check would mostly import torch again)."""

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def specens(*args, cwd=None):
    exe = Path(sys.executable).with_name("specens")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def specens_here(*args):
    """``specens ARGS`` in this process, through the root command the entry point calls (the same
    error policy: a SpecensError is one ``Error:`` line and exit status 1); the result has
    ``returncode``, ``stdout`` and ``stderr`` as from ``specens``, which spawns the real
    executable where the entry point itself is under test."""
    from types import SimpleNamespace

    from click.testing import CliRunner

    from specens.cli.main import cli

    r = CliRunner().invoke(cli, [str(a) for a in args], prog_name="specens")
    if r.exception is not None and not isinstance(r.exception, SystemExit):  # a bug: keep its traceback
        raise r.exception
    return SimpleNamespace(returncode=r.exit_code, stdout=r.stdout, stderr=r.stderr)


def test_help_at_every_level():
    for args in ([], ["data"], ["data", "glyphs"], ["generalist"], ["generalist", "train"], ["demo"]):
        r = specens_here(*args, "--help")  # in process: a process per level would only import torch again
        assert r.returncode == 0, r.stderr
        assert "Usage: specens" in r.stdout


def test_data_then_train_then_eval(tmp_path):
    ds, run = tmp_path / "ds", tmp_path / "run"
    r = specens_here("data", "synthetic", "--out", ds, "--classes", 6, "--groups", 2, "--train-per-class", 60)
    assert r.returncode == 0, r.stderr
    assert "synthetic, 6 classes, 2 known groups" in r.stdout
    r = specens_here(
        "generalist",
        "train",
        "--data",
        ds,
        "--out",
        run,
        "--epochs",
        2,
        "--quiet",
        "--set",
        'model_kwargs={"hidden": [32]}',
        "--set",
        "lr=0.01",
    )
    assert r.returncode == 0, r.stderr
    assert re.search(r"generalist [0-9a-f]{16} in .*: best epoch \d", r.stdout)
    r = specens_here("generalist", "eval", "--run", run, "--data", ds)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["top1"] > 0.5  # 6 classes, chance 0.17
    r = specens_here("cluster", "--generalist", run, "--data", ds, "--out", tmp_path / "cl", "--groups", 2, "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("2 groups over 6 classes")
    assert "agreement with the known grouping: ARI" in r.stdout
    assert {p.name for p in (tmp_path / "cl").iterdir()} == {
        "clusters.json",
        "report.json",
        "covariance.png",
        "group_sizes.png",
    }
    r = specens_here("cluster", "--generalist", run, "--data", ds, "--out", tmp_path / "cl", "--groups", 7, "--quiet")
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"Error: n_groups must be below the 6 classes of {ds} (a specialist's dustbin needs classes outside its "
        "group), got 7"
    )
    spec = ("specialists", "train", "--local", "--generalist", run, "--clusters", tmp_path / "cl" / "clusters.json")
    spec += ("--data", ds, "--epochs", 1, "--set", "batch_size=16")
    r = specens_here(*spec, "--out", tmp_path / "loud")
    assert r.returncode == 0, r.stderr
    assert "specialist 1: epoch 1 loss " in r.stdout and "trained 2, skipped 0 complete, failed 0" in r.stdout
    r = specens_here(*spec, "--out", tmp_path / "quiet", "--quiet")  # the same results, without the epoch lines
    assert r.returncode == 0, r.stderr
    assert "epoch 1 loss" not in r.stdout and "trained 2, skipped 0 complete, failed 0" in r.stdout


def test_missing_dataset_json_is_one_line_error(tmp_path):
    r = specens("data", "info", tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"Error: {tmp_path}/dataset.json: missing; a dataset directory needs its "
        "dataset.json (an import that was interrupted writes it last)"
    )


def test_unknown_config_key_is_named(tmp_path):
    r = specens_here("generalist", "train", "--data", tmp_path, "--out", tmp_path / "r", "--set", "epoch=3")
    assert r.returncode == 1
    assert r.stderr.startswith("Error: config: unknown key 'epoch'; valid keys are alpha, amp, batch_size")
    r = specens_here("generalist", "train", "--data", tmp_path, "--out", tmp_path / "r", "--set", "lr=-1")
    assert r.stderr.strip() == "Error: config: lr must be in (0, 10], got -1.0"


def test_bad_source_files_are_named(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x05" * 3 + b"\x00" * 10)
    (src / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05" + b"\x00" * 5)
    r = specens_here("data", "mnist", "--source", src, "--out", tmp_path / "o")
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"Error: {src}/train-images-idx3-ubyte: header says (5, 5, 5), but holds 10 values (truncated?)"
    )


def test_specialists_refuse_clusters_of_another_generalist(synthetic_run, tmp_path):
    d = json.loads(open(synthetic_run["clusters"]).read())
    (tmp_path / "c.json").write_text(json.dumps({**d, "generalist_fingerprint": "ffffffffffffffff"}))
    r = specens_here(
        "specialists",
        "train",
        "--local",
        "--generalist",
        synthetic_run["generalist"],
        "--clusters",
        tmp_path / "c.json",
        "--data",
        synthetic_run["data"],
        "--out",
        tmp_path / "run",
    )
    assert r.returncode == 1
    fp = json.loads((Path(synthetic_run["generalist"]) / "model.json").read_text())["fingerprint"]
    assert r.stderr.strip() == (
        f"Error: {tmp_path}/c.json: made from generalist ffffffffffffffff, but the generalist given is {fp}"
    )


def _one_line_error(args, expected: str) -> None:
    """``specens ARGS`` fails with exit status 1 and one line, ``Error: …`` containing ``expected``
    (in process: an uncaught exception would show as ``r.exception``, not as a SystemExit)."""
    from click.testing import CliRunner

    from specens.cli.main import cli

    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert isinstance(r.exception, SystemExit) and r.exit_code == 1, (args, r.exception, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), (args, r.stderr)
    assert expected in lines[0], (args, lines[0])


def test_every_bad_input_is_one_line_naming_the_culprit(synthetic_run, glyph_ds, tmp_path):
    import shutil

    import torch

    syn, gen = synthetic_run["data"], synthetic_run["generalist"]
    copy = tmp_path / "gen"
    shutil.copytree(gen, copy)
    saved = json.loads((Path(gen) / "model.json").read_text())["config"]
    spec = [
        "specialists",
        "train",
        "--local",
        "--generalist",
        gen,
        "--clusters",
        synthetic_run["clusters"],
        "--data",
        syn,
        "--out",
        tmp_path / "s",
    ]
    cases = [
        (
            ["generalist", "train", "--data", syn, "--out", tmp_path / "a", "--set", "model=nosuch"],
            "model must be one of ['bag', 'cnn', 'hf', 'mlp', 'ngram', 'resnet'], 'module:callable' or '' "
            "(by input kind), got 'nosuch'",
        ),
        (
            ["generalist", "train", "--data", syn, "--out", tmp_path / "b", "--set", "model=resnet"],
            "model 'resnet': resnet takes images of shape (C, H, W), got input shape [16]",
        ),
        (["generalist", "train", "--data", syn, "--out", tmp_path / "c", "--device", "cuda:7"], "device 'cuda:7': "),
        (
            ["generalist", "train", "--data", syn, "--out", tmp_path / "d", "--device", "tpu"],
            "device must be 'auto', 'cpu' or 'cuda[:N]', got 'tpu'",
        ),
        (
            [
                "generalist",
                "train",
                "--data",
                syn,
                "--out",
                copy,
                "--set",
                f"lr={saved['lr'] * 2}",
                "--set",
                f"epochs={saved['epochs']}",
                "--set",
                'model_kwargs={"hidden": [64]}',
                "--set",
                "batch_size=64",
            ],
            f"{copy}/checkpoints holds a run made with another config (lr: {saved['lr']} -> {saved['lr'] * 2})",
        ),
        (["generalist", "train", "--config", tmp_path / "none.toml"], f"{tmp_path}/none.toml: no such config file"),
        (
            ["generalist", "eval", "--run", gen, "--data", glyph_ds],
            f"{gen} was trained on 20 classes, {glyph_ds}/dataset.json has 30 that differ (class 0 is",
        ),
        (["generalist", "predict", "--run", gen, "--data", glyph_ds, "--out", tmp_path / "p"], "has 30 that differ"),
        (
            ["cluster", "--generalist", gen, "--data", syn, "--out", tmp_path / "cl", "--set", "representation=cov"],
            "The 'representation' parameter of ConfusionClusterer must be a str among {",
        ),
        (["cluster", "--generalist", gen, "--data", glyph_ds, "--out", tmp_path / "cl"], "has 30 that differ"),
        (
            ["cluster", "--generalist", gen, "--data", syn, "--out", tmp_path / "cl", "--set", "split=dev"],
            "dataset.json: no split 'dev'",
        ),
        ([*spec, "--set", "alpha=2"], "config: alpha must be in [0, 1], got 2.0"),
        ([*spec, "--set", "device=cuda:7"], "device 'cuda:7': "),
        ([*spec[:-4], "--data", glyph_ds, "--out", tmp_path / "s"], "has 30 that differ"),
        (["evaluate", "--run", tmp_path / "nothing", "--data", syn], "model.json: missing; is"),
        (
            ["infer", "--run", synthetic_run["root"], "--data", syn, "--out", tmp_path / "i"],
            "s000/specialist.json: missing",
        ),
        (["baseline", "--run", synthetic_run["root"], "--data", syn], "s000/specialist.json: missing"),
    ]
    for args, expected in cases:
        if "cuda" in " ".join(map(str, args)) and torch.cuda.device_count() > 7:
            continue
        _one_line_error(args, expected)
    assert not (tmp_path / "a").exists() and not (tmp_path / "cl").exists()  # refused before writing anything
    assert json.loads((copy / "model.json").read_text()) == json.loads((Path(gen) / "model.json").read_text())


def test_the_demo_refuses_a_learning_rate_no_stage_would_take_before_running_one(tmp_path):
    from click.testing import CliRunner

    from specens.cli.main import cli

    r = CliRunner().invoke(cli, ["demo", "--run", str(tmp_path / "demo"), "--specialist-lr", "20"])
    assert r.exit_code == 1 and "--specialist-lr" in r.stderr and "not in the range 0<=x<=10" in r.stderr, r.stderr
    assert not (tmp_path / "demo").exists()

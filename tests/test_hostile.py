"""Hostile and malformed inputs through the real command tree: every one is refused with exit
status 1 and one ``Error:`` line naming the culprit, and leaves every file already written
byte-identical; a run directory never makes specens import the code it names."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from specens.cli.main import cli
from specens.generalist.checkpoint import generalist_fingerprint
from specens.specialists.record import specialist_fingerprint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A complete run on 8 synthetic classes (generalist, 2 groups, 2 specialists) and its dataset."""
    from specens.clustering.cluster import ClusterConfig, cluster
    from specens.data.synthetic import import_synthetic
    from specens.generalist.config import TrainConfig
    from specens.generalist.train import train_generalist
    from specens.specialists.parallel import train_all
    from specens.specialists.train import SpecialistConfig

    root = tmp_path_factory.mktemp("hostile")
    import_synthetic(
        str(root / "ds"), n_classes=8, n_groups=2, dim=8, n_train=40, n_val=10, n_test=4, seed=0, shard_size=200
    )
    import_synthetic(str(root / "ds_wide"), n_classes=8, n_groups=2, dim=12, n_train=4, n_val=2, n_test=2, seed=0)
    run = root / "run"
    train_generalist(
        TrainConfig(
            data=str(root / "ds"),
            out=str(run / "generalist"),
            epochs=2,
            batch_size=32,
            lr=3e-3,
            model="mlp",
            model_kwargs={"hidden": [16]},
            threads=1,
        ),
        progress=False,
    )
    cluster(
        ClusterConfig(generalist=str(run / "generalist"), data=str(root / "ds"), out=str(run / "clusters"), n_groups=2),
        progress=False,
    )
    train_all(
        SpecialistConfig(
            generalist=str(run / "generalist"),
            clusters=str(run / "clusters" / "clusters.json"),
            data=str(root / "ds"),
            out=str(run),
            epochs=1,
            batch_size=32,
            threads=1,
        ),
        local=True,
        echo=lambda *_: None,
    )
    return root


@pytest.fixture
def work(tiny, tmp_path) -> Path:
    """A fresh copy of ``tiny`` to mutate."""
    shutil.copytree(tiny, tmp_path / "w")
    return tmp_path / "w"


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_refused(r, culprit: str) -> None:
    """Exit 1, no traceback, exactly one line on stderr: ``Error: ...`` naming ``culprit``."""
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 1, (r.exit_code, r.output)
    lines = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.strip() and not _progress(ln)]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert culprit in lines[0], (culprit, lines[0])


def _progress(line: str) -> bool:
    """A progress bar's line (tqdm on stderr), not a message."""
    return "it/s]" in line or "s/it]" in line or "ex/s]" in line or "?it" in line or "?ex" in line


def edit_json(path: Path, change) -> None:
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


def refingerprint_generalist(gdir: Path) -> None:
    """What a hostile author does after editing model.json: make the fingerprint fit again."""

    def fix(d):
        d["fingerprint"] = generalist_fingerprint(d["weights_fingerprint"], d["model"], d["classes"])

    edit_json(gdir / "model.json", fix)


def refingerprint_specialist(sdir: Path) -> None:
    edit_json(sdir / "specialist.json", lambda d: d.update(fingerprint=specialist_fingerprint(d)))


# ----------------------------------------------------------------------------- the case table
# (name, mutation of the copied tree, command arguments with {w} for its root, culprit in the message)

G, S0, S1, CL, DS = (
    "run/generalist/model.json",
    "run/specialists/s000",
    "run/specialists/s001",
    "run/clusters/clusters.json",
    "ds/dataset.json",
)


def _j(rel, change):
    return lambda w: edit_json(w / rel, change)


def _text(rel, text):
    return lambda w: (w / rel).write_text(text)


def _swap_weights(w):
    a, b = w / S0 / "model.safetensors", w / S1 / "model.safetensors"
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)


def _truncate(rel, keep=0.5):
    def f(w):
        p = w / rel
        p.write_bytes(p.read_bytes()[: int(p.stat().st_size * keep)])

    return f


def _shard(w):
    return next((w / "ds").glob("test-*.tar")).name


EVAL = ("generalist", "eval", "--run", "{w}/run/generalist", "--data", "{w}/ds")
INFER = ("infer", "--run", "{w}/run", "--data", "{w}/ds", "--out", "{w}/pred")
SPEC = (
    "specialists",
    "train",
    "--local",
    "--generalist",
    "{w}/run/generalist",
    "--clusters",
    "{w}/" + CL,
    "--data",
    "{w}/ds",
    "--out",
    "{w}/run2",
    "--epochs",
    "1",
)
CLUSTER = ("cluster", "--generalist", "{w}/run/generalist", "--data", "{w}/ds", "--out", "{w}/cl2", "--quiet")
TRAIN = (
    "generalist",
    "train",
    "--data",
    "{w}/ds",
    "--out",
    "{w}/g2",
    "--quiet",
    "--set",
    "model=mlp",
    "--set",
    'model_kwargs={"hidden": [8]}',
)


def _mine(w: Path, name: str = "mine", files=("notes.txt",)) -> Path:
    """A user's folder beside the run, holding their own files."""
    (w / name).mkdir(parents=True, exist_ok=True)
    for f in files:
        (w / name / f).write_text("the user's own")
    return w / name


def _link(rel: str, target: str = "mine", files=("notes.txt",)):
    """``rel`` (moved aside if present) made a symbolic link to a user's folder ``target``."""

    def f(w: Path) -> None:
        _mine(w, target, files)
        if (w / rel).exists():
            (w / rel).rename(w / "aside")
        (w / rel).parent.mkdir(parents=True, exist_ok=True)
        (w / rel).symlink_to(w / target, target_is_directory=True)

    return f


def _moved_link(rel: str):
    """``rel`` moved to a user's place and linked back: a shared run whose folder points outside."""

    def f(w: Path) -> None:
        (w / rel).rename(w / "elsewhere")
        (w / rel).symlink_to(w / "elsewhere", target_is_directory=True)

    return f


def _nan_weights(rel: str, meta: str, refingerprint):
    """A NaN in the first weight of ``rel``'s safetensors, the fingerprints made to fit again."""

    def f(w: Path) -> None:
        from safetensors.torch import load_file, save_file

        from specens.core.io import fingerprint

        path = w / rel / "model.safetensors"
        state = load_file(str(path))
        first = next(k for k, v in state.items() if v.is_floating_point())
        state[first].view(-1)[0] = float("nan")
        save_file(state, str(path))
        edit_json(w / rel / meta, lambda d: d.update(weights_fingerprint=fingerprint(path)))
        refingerprint(w / rel)

    return f


NON_FINITE = [  # weights that would predict NaN are refused when loaded, not evaluated with exit 0
    (
        "generalist NaN weights",
        _nan_weights("run/generalist", "model.json", refingerprint_generalist),
        EVAL,
        "non-finite",
    ),
    ("specialist NaN weights", _nan_weights(S0, "specialist.json", refingerprint_specialist), INFER, "non-finite"),
    (
        "specialist NaN weights, evaluate",
        _nan_weights(S0, "specialist.json", refingerprint_specialist),
        ("evaluate", "--run", "{w}/run", "--data", "{w}/ds", "--quiet"),
        "non-finite",
    ),
    (
        "cluster on a NaN generalist",
        _nan_weights("run/generalist", "model.json", refingerprint_generalist),
        CLUSTER,
        "non-finite",
    ),
]


LINKS = [  # a link inside an output directory is never followed to write, replace or delete
    ("partition linked outside", _link("run2/specialists/groups"), SPEC, "groups: is a symbolic link"),
    ("partition a user's folder", lambda w: _mine(w / "run2/specialists", "groups"), SPEC, "groups: holds files"),
    (
        "specialists/ linked outside",
        _moved_link("run/specialists"),
        SPEC[:-4] + ("--out", "{w}/run", "--restart"),
        "is a symbolic link",
    ),
    ("generalist checkpoints linked", _link("g2/checkpoints"), TRAIN, "checkpoints (a symbolic link)"),
    ("checkpoint epoch linked", _link("g2/checkpoints/epoch-0000"), TRAIN, "epoch-0000 (a symbolic link)"),
    (
        "evaluation/ linked to a user's table4.png",
        _link("run/evaluation", files=("table4.png",)),
        ("evaluate", "--run", "{w}/run", "--data", "{w}/ds", "--quiet"),
        "evaluation: is a symbolic link",
    ),
    (
        "evaluation.json a user's folder",
        lambda w: _mine(w / "ev", "evaluation.json"),
        ("evaluate", "--run", "{w}/run", "--data", "{w}/ds", "--quiet", "--out", "{w}/ev"),
        "evaluation.json/",
    ),
    (
        "baselines linked outside",
        _link("run/baselines"),
        ("baseline", "--run", "{w}/run", "--data", "{w}/ds"),
        "baselines: is a symbolic link",
    ),
    (
        "evaluate --out over a user's evaluation.json",
        lambda w: _mine(w, "ev", ("evaluation.json",)),
        ("evaluate", "--run", "{w}/run", "--data", "{w}/ds", "--quiet", "--out", "{w}/ev"),
        "holds evaluation.json but no evaluation.json that specens wrote",
    ),
    (
        "evaluate --out over a user's table4.png",
        lambda w: _mine(w, "ev", ("table4.png",)),
        ("evaluate", "--run", "{w}/run", "--data", "{w}/ds", "--quiet", "--out", "{w}/ev"),
        "holds table4.png but no evaluation.json",
    ),
    (
        "cluster --out over a user's report.json",
        lambda w: _mine(w, "c3", ("report.json",)),
        CLUSTER[:-3] + ("--out", "{w}/c3", "--quiet"),
        "holds report.json but no clusters.json that specens wrote",
    ),
    # no output is written inside an input
    (
        "distill --out inside the data",
        lambda w: None,
        ("distill", "--run", "{w}/run", "--data", "{w}/ds", "--out", "{w}/ds/st", "--epochs", 1),
        "inside the input --data",
    ),
    ("data synthetic --seed -1", lambda w: None, ("data", "synthetic", "--out", "{w}/s", "--seed", -1), "--seed"),
    ("specialists --out the dataset", lambda w: None, SPEC[:-4] + ("--out", "{w}/ds"), "inside the input --data"),
    (
        "cluster --out inside the generalist",
        lambda w: None,
        CLUSTER[:-3] + ("--out", "{w}/run/generalist/c", "--quiet"),
        "inside the input --generalist",
    ),
    (
        "generalist --out inside the data",
        lambda w: None,
        TRAIN[:4] + ("--out", "{w}/ds/g") + TRAIN[6:],
        "inside the input --data",
    ),
    ("infer --out the dataset", lambda w: None, INFER[:-2] + ("--out", "{w}/ds"), "inside the input --data"),
    (
        "infer into a user's *.q.npy",
        lambda w: (_mine(w, "pred", ()), np.save(w / "pred" / "x.q.npy", np.zeros(2))),
        INFER,
        "holds x.q.npy but no infer.json that specens wrote",
    ),
    (
        "data glyphs --like DATA --out DATA",
        lambda w: (w / "none.ttf").write_bytes(b"not a font"),
        ("data", "glyphs", "--like", "{w}/ds", "--out", "{w}/ds", "--font", "{w}/none.ttf"),
        "inside the input --like",
    ),
    (
        "data clinc150 --out its own source folder",
        lambda w: None,
        ("data", "clinc150", "--source", "{w}/ds", "--out", "{w}/ds"),
        "inside the input --source",
    ),
]


def _token_ids(w: Path) -> None:
    """{w}/ds_int: the tiny dataset's classes and input shape, but int64 token ids for inputs."""
    from specens.data.importers import import_arrays

    np.save(w / "xi.npy", np.random.default_rng(0).integers(1, 50, (80, 8)))
    np.save(w / "yi.npy", np.repeat(np.arange(8), 10))
    classes = json.loads((w / DS).read_text())["classes"]
    import_arrays(str(w / "xi.npy"), str(w / "yi.npy"), str(w / "ds_int"), classes, shard_size=100)


def _bad_cmap(w: Path) -> None:
    """{w}/bad.ttf: a DejaVu face whose cmap table's header and first subtable records are 0xff."""
    from fontTools.ttLib import TTFont

    from specens.data.render import font_dir

    src = Path(font_dir()) / "DejaVuSans.ttf"
    offset = TTFont(str(src), lazy=True).reader.tables["cmap"].offset
    data = bytearray(src.read_bytes())
    data[offset : offset + 40] = b"\xff" * 40
    (w / "bad.ttf").write_bytes(bytes(data))


def _arrays(w: Path, n: int = 8) -> None:
    """{w}/x.npy and {w}/y.npy: ``n`` rows of 3 classes, for ``data arrays``."""
    np.save(w / "x.npy", np.zeros((n, 2), np.float32))
    np.save(w / "y.npy", np.arange(n) % 3)


ARRAYS = ("data", "arrays", "--x", "{w}/x.npy", "--y", "{w}/y.npy", "--out", "{w}/arr")


class _Interrupted(Exception):
    """Raised after a training's first epoch, as a killed run stops: its state is left to resume."""


def _resumable(edit):
    """A mutation: {w}/g2 is a generalist run interrupted after epoch 1 of 2 (what ``RESUME``
    continues), then ``edit(checkpoints folder)`` changes its training state."""

    def mutate(w: Path) -> None:
        from specens.generalist.config import TrainConfig
        from specens.generalist.train import train_generalist

        def stop(epoch, record):
            raise _Interrupted

        cfg = TrainConfig(
            data=str(w / "ds"),
            out=str(w / "g2"),
            epochs=2,
            model="mlp",
            model_kwargs={"hidden": [8]},
            checkpoint_every=0,
        )
        with pytest.raises(_Interrupted):
            train_generalist(cfg, progress=False, on_epoch_end=stop)
        edit(w / "g2" / "checkpoints")

    return mutate


def _planted_state(ckpt: Path) -> None:
    """state.pt: a pickle that would run a command (touching a file the snapshot would see)."""
    import os
    import pickle

    class Planted:
        def __reduce__(self):
            return os.system, (f"touch {ckpt.parent / 'pwned'}",)

    (ckpt / "epoch-0000" / "state.pt").write_bytes(pickle.dumps(Planted()))


def _moments_reshaped(ckpt: Path) -> None:
    """state.pt: valid, but the optimizer's moments of another shape than their parameters'."""
    import torch

    path = ckpt / "epoch-0000" / "state.pt"
    state = torch.load(path, weights_only=True)
    for moments in state["optimizer"]["state"].values():
        moments.update(exp_avg=torch.zeros(3))
    torch.save(state, path)


RESUME = (*TRAIN, "--epochs", 2)
LATEST, PROGRESS = "latest.json", "epoch-0000/progress.json"

TRACEBACKS = [  # each ended in a Python traceback (issue 44)
    # token ids into a float model, and floats into a token model, refused at the dataset's boundary
    ("eval on token ids", _token_ids, (*EVAL[:-1], "{w}/ds_int"), "ds_int/dataset.json holds input dtype int64"),
    ("infer on token ids", _token_ids, (*INFER[:4], "{w}/ds_int", *INFER[5:]), "takes float32 inputs"),
    ("cluster on token ids", _token_ids, (*CLUSTER[:4], "{w}/ds_int", *CLUSTER[5:]), "dataset.json holds input dtype"),
    (
        "train a token model on floats",
        lambda w: None,
        (*TRAIN[:-4], "--set", "model=ngram"),
        "(model 'ngram') takes int64 inputs (token ids), but",
    ),
    # a font whose character map fontTools cannot decode
    (
        "glyphs from a font with a corrupt cmap",
        _bad_cmap,
        ("data", "glyphs", "--out", "{w}/gl", "--font", "{w}/bad.ttf", "--classes", 4),
        "bad.ttf: its character map (cmap table) cannot be read",
    ),
    # a config file that is not UTF-8, or whose stage section is not a table
    (
        "config file not UTF-8",
        lambda w: (w / "t.toml").write_bytes(b"\xff\xfe"),
        (*TRAIN, "--config", "{w}/t.toml"),
        "t.toml: not UTF-8",
    ),
    (
        "config section not a table",
        lambda w: (w / "t.toml").write_text("generalist = 5\n"),
        (*TRAIN, "--config", "{w}/t.toml"),
        "t.toml: [generalist] must be a table",
    ),
    # data arrays --classes: a file that is empty, not UTF-8 or names a class twice; arrays without rows
    *(
        (
            f"data arrays --classes {what}",
            lambda w, text=text: (_arrays(w), (w / "names.txt").write_bytes(text)),
            (*ARRAYS, "--classes", "{w}/names.txt"),
            culprit,
        )
        for what, text, culprit in (
            ("empty", b"", "names.txt: names no class"),
            ("blank lines", b"\n \n", "names.txt: names no class"),
            ("not UTF-8", b"\xff\xfe", "names.txt: not UTF-8"),
            ("a name twice", b"a\nb\na\n", "names.txt: class name 'a' is given twice"),
        )
    ),
    ("data arrays of no rows", lambda w: _arrays(w, 0), ARRAYS, "y.npy: no labels"),
    # numbers at the edge of their range: bounded where the config is checked, before any work
    (
        "specialists --set rho=1e-300",
        lambda w: None,
        (*SPEC, "--set", "rho=1e-300"),
        "rho=1e-300 puts 0 of each batch of 128 from the group",
    ),
    (
        "specialists --set rho=1-2**-53",
        lambda w: None,
        (*SPEC, "--set", "rho=0.9999999999999999"),
        "rho * batch_size must round to an int in [1, 127]",
    ),
    *(
        (
            f"{args[0]} --set seed=2**70",
            lambda w: None,
            (*args, "--set", f"seed={2**70}"),
            f"seed must be in [0, {2**63 - 1}]",
        )
        for args in (TRAIN, SPEC)
    ),
    *(
        (
            f"distill --set temperature={t}",
            lambda w: None,
            ("distill", "--run", "{w}/run", "--data", "{w}/ds", "--quiet", "--epochs", 1, "--set", f"temperature={t}"),
            "temperature must be in [0.01, 100]",
        )
        for t in ("1e308", "1e-308")
    ),
    # the compute-matched budgets are multiples of the generalist's training cost
    (
        "baseline on a generalist that cost nothing",
        _j(G, lambda d: d["metrics"]["cost"].update(train_flops=0)),
        ("baseline", "--run", "{w}/run", "--data", "{w}/ds"),
        "model.json: 'metrics'.cost.train_flops is 0 for",
    ),
    # an interrupted run's training state, edited: refused naming the file before any of it is used
    *(
        (f"resume: {what}", _resumable(lambda c, rel=rel, change=change: edit_json(c / rel, change)), RESUME, culprit)
        for what, rel, change, culprit in (
            (
                "latest.json dir outside",
                LATEST,
                lambda d: d.update(dir="../../elsewhere"),
                "latest.json: 'dir' is '../../elsewhere', not the name of a state directory",
            ),
            ("latest.json without dir", LATEST, lambda d: d.pop("dir"), "latest.json: missing keys ['dir']"),
            (
                "latest.json dir a number",
                LATEST,
                lambda d: d.update(dir=0),
                "latest.json: 'dir' must be a string, got 0",
            ),
            ("latest.json another format", LATEST, lambda d: d.update(format="x"), "latest.json: 'format' is 'x'"),
            ("progress.json without history", PROGRESS, lambda d: d.pop("history"), "missing keys ['history']"),
            ("progress.json epoch a string", PROGRESS, lambda d: d.update(epoch="0"), "progress.json: 'epoch' must be"),
            ("progress.json epoch ahead", PROGRESS, lambda d: d.update(epoch=5), "progress.json: 'epoch' is 5"),
            (
                "progress.json best not in history",
                PROGRESS,
                lambda d: d["best"].update(val_top1=1.0),
                "progress.json: 'best' must be one of",
            ),
            (
                "progress.json history of strings",
                PROGRESS,
                lambda d: d["history"][0].update(val_top1="x"),
                "progress.json: 'history' must be",
            ),
        )
    ),
    (
        "resume: state.pt a pickled object",
        _resumable(_planted_state),
        RESUME,
        "state.pt: not a specens training state (weights_only load refused it)",
    ),
    ("resume: state.pt moments reshaped", _resumable(_moments_reshaped), RESUME, "state.pt: the optimizer's 'exp_avg'"),
]

CASES = [
    *LINKS,
    *NON_FINITE,
    *TRACEBACKS,
    # the generalist's model.json
    ("model.json not JSON", _text(G, "{oops"), EVAL, "model.json: not valid JSON"),
    ("model.json empty", _text(G, ""), EVAL, "model.json: not valid JSON"),
    ("model.json a list", _text(G, "[1, 2]"), EVAL, "model.json: 'format'"),
    ("model.json other format", _j(G, lambda d: d.update(format="x")), EVAL, "'format' is 'x'"),
    ("model.json old version", _j(G, lambda d: d.update(format_version=1)), EVAL, "'format_version' is 1"),
    ("model.json no model", _j(G, lambda d: d.pop("model")), EVAL, "missing keys ['model']"),
    ("model.json extra key", _j(G, lambda d: d.update(evil=1)), EVAL, "unknown keys ['evil']"),
    ("input_shape a string", _j(G, lambda d: d["model"].update(input_shape="abc")), EVAL, "'input_shape'"),
    ("n_classes a bool", _j(G, lambda d: d["model"].update(n_classes=True)), EVAL, "'n_classes'"),
    ("kwargs a list", _j(G, lambda d: d["model"].update(kwargs=[])), EVAL, "'kwargs'"),
    ("classes repeated", _j(G, lambda d: d.update(classes=["a"] * 8)), EVAL, "'classes' must be a list of distinct"),
    ("classes not strings", _j(G, lambda d: d.update(classes=list(range(8)))), EVAL, "'classes'"),
    ("one class too few", _j(G, lambda d: d.update(classes=d["classes"][:-1])), EVAL, "7 classes but"),
    ("fingerprint edited", _j(G, lambda d: d.update(fingerprint="0" * 16)), EVAL, "edited after export"),
    (
        "spec edited, fingerprint not",
        _j(G, lambda d: d["model"]["kwargs"].update(hidden=[32])),
        EVAL,
        "edited after export",
    ),
    ("cost not an object", _j(G, lambda d: d["metrics"].update(cost="x")), EVAL, "metrics'.cost"),
    ("cost negative", _j(G, lambda d: d["metrics"]["cost"].update(train_flops=-1)), EVAL, "train_flops"),
    ("history not a list", _j(G, lambda d: d["metrics"].update(history=5)), EVAL, "metrics'.history"),
    ("weights replaced", _truncate("run/generalist/model.safetensors", 0.9), EVAL, "model.safetensors: fingerprint"),
    (
        "weights missing",
        lambda w: (w / "run/generalist/model.safetensors").unlink(),
        EVAL,
        "model.safetensors: missing",
    ),
    (
        "unknown registry model",
        lambda w: (
            _j(G, lambda d: d["model"].update(name="nosuch"))(w),
            refingerprint_generalist(w / "run/generalist"),
        ),
        EVAL,
        "'nosuch'",
    ),
    (
        "registry model, bad kwargs",
        lambda w: (
            _j(G, lambda d: d["model"]["kwargs"].update(hidden="x"))(w),
            refingerprint_generalist(w / "run/generalist"),
        ),
        EVAL,
        "model 'mlp'",
    ),
    (
        "a record stating sizes its weights do not hold",
        lambda w: (
            _j(G, lambda d: d["model"]["kwargs"].update(hidden=[10**9]))(w),
            refingerprint_generalist(w / "run/generalist"),
        ),
        EVAL,
        "weights do not fit the model its record describes",
    ),
    (
        "code named by model.json",
        lambda w: (
            _j(G, lambda d: d["model"].update(name="os:system"))(w),
            refingerprint_generalist(w / "run/generalist"),
        ),
        EVAL,
        "--trust-code",
    ),
    (
        "the reported attack",
        lambda w: (
            _j(
                G,
                lambda d: d["model"].update(
                    name="subprocess:Popen", input_shape=["sh", "-c", f"touch {w}/marker"], kwargs={}
                ),
            )(w),
            refingerprint_generalist(w / "run/generalist"),
        ),
        EVAL,
        "model.json",
    ),
    # the dataset
    ("dataset.json not JSON", _text(DS, "nope"), EVAL, "dataset.json: not valid JSON"),
    ("classes not a list", _j(DS, lambda d: d.update(classes="abc")), EVAL, "'classes' must be"),
    (
        "shape negative",
        _j(DS, lambda d: d["input"].update(shape=[-8])),
        EVAL,
        "'input'.shape must be a list of ints >= 1",
    ),
    ("dtype unknown", _j(DS, lambda d: d["input"].update(dtype="float16")), EVAL, "'input'.dtype must be one of"),
    (
        "input shape absurd",
        _j(DS, lambda d: d["input"].update(shape=[1, 100_000, 100_000])),
        EVAL,
        "holds more than 16777216 values per input",
    ),
    (
        "buckets absurd",
        _j(DS, lambda d: d.update(featurizer={"kind": "hashed-ngrams", "buckets": 2**40})),
        EVAL,
        "'featurizer'.buckets must be an int >= 2 and <= 16777216 or null",
    ),
    (
        "char_min beyond char_ngrams",
        _j(
            DS, lambda d: d.update(featurizer={"kind": "hashed-ngrams", "buckets": 64, "char_ngrams": 3, "char_min": 9})
        ),
        EVAL,
        "char_min must be in [1, char_ngrams=3], got 9",
    ),
    ("input not an object", _j(DS, lambda d: d.update(input=[1])), EVAL, "'input"),
    ("groups of ints", _j(DS, lambda d: d.update(groups=[1, 2])), EVAL, "'groups'"),
    (
        "counts negative",
        _j(DS, lambda d: d["splits"]["test"].update(class_counts=[-1] + [5] * 7)),
        EVAL,
        "'splits'.test.class_counts must be a list of ints >= 0",
    ),
    (
        "count a float",
        _j(DS, lambda d: d["splits"]["test"].update(num_samples=32.0)),
        EVAL,
        "'splits'.test.num_samples must be an int",
    ),
    ("count disagrees", _j(DS, lambda d: d["splits"]["test"].update(num_samples=33)), EVAL, "num_samples=33"),
    (
        "shard name escapes",
        _j(DS, lambda d: d["splits"]["test"]["shards"][0].update(name="../x.tar")),
        EVAL,
        "'splits'.test.shards[0]: 'name' '../x.tar' is not a shard file name",
    ),
    ("dataset.json extra key", _j(DS, lambda d: d.update(extra=1)), EVAL, "unknown keys ['extra']"),
    ("shard missing", lambda w: (w / "ds" / _shard(w)).unlink(), EVAL, "lists shards that do not exist"),
    ("shard truncated", lambda w: _truncate(f"ds/{_shard(w)}", 0.5)(w), EVAL, ".tar"),
    (
        "classes of another dataset",
        _j(DS, lambda d: d.update(classes=[f"z{i}" for i in range(8)])),
        EVAL,
        "differ (class 0",
    ),
    (
        "dataset of another input shape",
        lambda w: None,
        ("generalist", "eval", "--run", "{w}/run/generalist", "--data", "{w}/ds_wide"),
        "takes inputs of shape [8]",
    ),
    (
        "infer on another input shape",
        lambda w: None,
        ("infer", "--run", "{w}/run", "--data", "{w}/ds_wide", "--out", "{w}/pred"),
        "takes inputs of shape [8]",
    ),
    (
        "cluster on another input shape",
        lambda w: None,
        ("cluster", "--generalist", "{w}/run/generalist", "--data", "{w}/ds_wide", "--out", "{w}/cl2", "--quiet"),
        "takes inputs of shape [8]",
    ),
    ("data info: truncated shard", lambda w: _truncate(f"ds/{_shard(w)}", 0.5)(w), ("data", "info", "{w}/ds"), ".tar"),
    (
        "data info: counts of another import",
        _j(DS, lambda d: d["splits"]["test"].update(class_counts=[5, 3] + d["splits"]["test"]["class_counts"][2:])),
        ("data", "info", "{w}/ds"),
        "class_counts[0]",
    ),
    # clusters.json
    ("clusters not JSON", _text(CL, "]"), INFER, "clusters.json: not valid JSON"),
    ("group out of range", _j(CL, lambda d: d["groups"][0].append(99)), INFER, "outside [0, 8)"),
    ("group member not an int", _j(CL, lambda d: d["groups"][0].append(1.5)), INFER, "holds 1.5, not a class index"),
    ("group member null", _j(CL, lambda d: d["groups"][0].append(None)), INFER, "holds null, not a class index"),
    (
        "cluster at T 1e-6",
        lambda w: None,
        (*CLUSTER, "--temperature", "1e-6"),
        "soft predictions at temperature 1e-06 carry no confusion",
    ),
    ("cluster at T 1e300", lambda w: None, (*CLUSTER, "--temperature", "1e300"), "carry no confusion between classes"),
    ("jitter on arrays", lambda w: None, (*TRAIN, "--set", "jitter=1"), "jitter 1: shifts images"),
    (
        "train_fraction 1e-9",
        lambda w: None,
        (*TRAIN, "--set", "train_fraction=1e-9"),
        "train_fraction 1e-09 keeps no example",
    ),
    ("group repeats a class", _j(CL, lambda d: d["groups"][0].append(d["groups"][0][0])), INFER, "repeats a class"),
    ("no groups", _j(CL, lambda d: d.update(groups=[])), SPEC, "holds no groups"),
    ("groups not lists", _j(CL, lambda d: d.update(groups=[1, 2])), SPEC, "clusters.json"),
    (
        "clusters of another generalist",
        _j(CL, lambda d: d.update(generalist_fingerprint="f" * 16)),
        SPEC,
        "made from generalist ffff",
    ),
    ("clusters for other n_classes", _j(CL, lambda d: d.update(n_classes=9)), SPEC, "made for 9 classes"),
    ("clusters old version", _j(CL, lambda d: d.update(format_version=0)), SPEC, "'format_version' is 0"),
    # specialists
    ("specialist weights swapped", _swap_weights, INFER, "model.safetensors: fingerprint"),
    ("specialist.json not JSON", _text(f"{S0}/specialist.json", "x"), INFER, "specialist.json: not valid JSON"),
    ("gate.on a string", _j(f"{S0}/specialist.json", lambda d: d["gate"].update(on="yes")), INFER, "'gate'"),
    (
        "correction a string",
        _j(f"{S0}/specialist.json", lambda d: d.update(dustbin_correction="x")),
        INFER,
        "'dustbin_correction'",
    ),
    ("group edited", _j(f"{S0}/specialist.json", lambda d: d["group"].pop()), INFER, "specialist.json"),
    ("specialist key missing", _j(f"{S0}/specialist.json", lambda d: d.pop("pi")), INFER, "missing keys ['pi']"),
    ("specialist extra key", _j(f"{S0}/specialist.json", lambda d: d.update(x=1)), INFER, "unknown keys ['x']"),
    (
        "specialist fingerprint edited",
        _j(f"{S0}/specialist.json", lambda d: d.update(fingerprint="1" * 16)),
        INFER,
        "edited after training",
    ),
    (
        "specialist cost negative",
        lambda w: (
            _j(f"{S0}/specialist.json", lambda d: d["cost"].update(steps=-1))(w),
            refingerprint_specialist(w / S0),
        ),
        INFER,
        "steps",
    ),
    (
        "specialist of another index",
        lambda w: (_j(f"{S0}/specialist.json", lambda d: d.update(index=1))(w), refingerprint_specialist(w / S0)),
        INFER,
        "specialist 1",
    ),
    ("specialist missing", lambda w: shutil.rmtree(w / S1), INFER, "has no trained specialist"),
    # options
    ("infer --top-k 0", lambda w: None, (*INFER, "--top-k", 0), "--top-k"),
    ("infer --batch-size 0", lambda w: None, (*INFER, "--batch-size", 0), "--batch-size"),
    ("infer --top-n 0", lambda w: None, (*INFER, "--top-n", 0), "--top-n"),
    ("infer --workers 0", lambda w: None, (*INFER, "--workers", 0), "--workers"),
    ("infer --split nosuch", lambda w: None, (*INFER, "--split", "nosuch"), "no split 'nosuch'"),
    ("eval --batch-size 0", lambda w: None, (*EVAL, "--batch-size", 0), "--batch-size"),
    ("cluster --groups C", lambda w: None, (*CLUSTER, "--groups", 8), "n_groups must be below the 8 classes"),
    ("cluster --groups > C", lambda w: None, (*CLUSTER, "--groups", 9), "n_groups must be below the 8 classes of"),
    ("cluster --temperature 0", lambda w: None, (*CLUSTER, "--temperature", 0), "temperature must be > 0"),
    ("cluster --out a file", lambda w: (w / "cl2").write_text("mine"), CLUSTER, "cl2: is a file"),
    (
        "cluster --out someone's folder",
        lambda w: ((w / "cl2").mkdir(), (w / "cl2" / "notes.txt").write_text("x")),
        CLUSTER,
        "(notes.txt); refusing to write into it",
    ),
    (
        "infer --out someone's folder",
        lambda w: ((w / "pred").mkdir(), (w / "pred" / "a.txt").write_text("x")),
        INFER,
        "(a.txt); refusing to write into it",
    ),
    (
        "predict --out someone's folder",
        lambda w: ((w / "p").mkdir(), (w / "p" / "a.txt").write_text("x")),
        ("generalist", "predict", "--run", "{w}/run/generalist", "--data", "{w}/ds", "--out", "{w}/p"),
        "(a.txt); refusing to write into it",
    ),
    (
        "evaluate --out someone's folder",
        lambda w: ((w / "ev").mkdir(), (w / "ev" / "a.txt").write_text("x")),
        ("evaluate", "--run", "{w}/run", "--data", "{w}/ds", "--out", "{w}/ev"),
        "(a.txt); refusing to write into it",
    ),
    (
        "train --out someone's folder",
        lambda w: ((w / "g2").mkdir(), (w / "g2" / "a.txt").write_text("x")),
        TRAIN,
        "(a.txt); refusing to write into it",
    ),
    ("train --set lr=1e9", lambda w: None, (*TRAIN, "--set", "lr=1e9"), "lr must be in (0, 10]"),
    (
        "train --set epochs=1e22",
        lambda w: None,
        (*TRAIN, "--set", "epochs=10000000000000000000000"),
        "epochs must be in [1, 100000]",
    ),
    ("train --set warmup=1", lambda w: None, (*TRAIN, "--set", "warmup=1"), "warmup must be in [0, 1)"),
    ("train --set batch_size=0", lambda w: None, (*TRAIN, "--set", "batch_size=0"), "batch_size must be >= 1"),
    (
        "cluster --out beside other outputs",
        lambda w: shutil.copy(w / CL, w / "run" / "clusters.json"),
        ("cluster", "--generalist", "{w}/run/generalist", "--data", "{w}/ds", "--out", "{w}/run", "--quiet"),
        "holds files that are not a `specens cluster` output (clusters/, generalist/, specialists/)",
    ),
    (
        "data glyphs --out a dataset beside a user's file",
        lambda w: (w / "ds" / "raw.txt").write_text("mine"),
        ("data", "synthetic", "--out", "{w}/ds", "--classes", 4),
        "(raw.txt); refusing",
    ),
    (
        "train --out someone's checkpoints",
        lambda w: ((w / "g2" / "checkpoints").mkdir(parents=True), (w / "g2" / "weights.pt").write_text("x")),
        TRAIN,
        "(weights.pt); refusing",
    ),
    (
        "a stray file in a specialist's directory",
        lambda w: (
            (w / "run2/specialists/s000").mkdir(parents=True) or (w / "run2/specialists/s000/notes.txt").write_text("x")
        ),
        SPEC,
        "(notes.txt); refusing",
    ),
    (
        "a teacher list of numbers",
        lambda w: (w / "t.toml").write_text("teacher = [5]\n"),
        ("generalist", "train", "--config", "{w}/t.toml", "--data", "{w}/ds", "--out", "{w}/g2"),
        "teacher: expected a list of str",
    ),
    (
        "a record's training config naming a number as teacher",
        lambda w: (_j(G, lambda d: d["config"].update(teacher=[5]))(w), refingerprint_generalist(w / "run/generalist")),
        ("baseline", "--run", "{w}/run", "--data", "{w}/ds", "--only", "continued"),
        "teacher: expected a list of str",
    ),
    (
        "train: a model larger than memory",
        lambda w: None,
        (
            "generalist",
            "train",
            "--data",
            "{w}/ds",
            "--out",
            "{w}/g2",
            "--quiet",
            "--set",
            "model=mlp",
            "--set",
            'model_kwargs={"hidden": [10000000000]}',
        ),
        "can't allocate memory",
    ),
    (
        "train: more workers than shards",
        lambda w: None,
        (*TRAIN, "--set", "num_workers=64"),
        "too few for 64 DataLoader workers",
    ),
    ("cluster --set top_k > C", lambda w: None, (*CLUSTER, "--set", "top_k=1000"), "top_k must be at most the 8"),
    ("dataset.json not UTF-8", lambda w: (w / DS).write_bytes(b"\xff\xfe\x00abc"), EVAL, "dataset.json: not UTF-8"),
    ("format_version a string", _j(G, lambda d: d.update(format_version="2")), EVAL, "'format_version' is '2' (a str)"),
    ("train --set threads=-1", lambda w: None, (*TRAIN, "--set", "threads=-1"), "threads must be >= 0"),
    (
        "train --set exclude_classes=[99]",
        lambda w: None,
        (*TRAIN, "--set", "exclude_classes=[99]"),
        "exclude_classes: 99 is not a class",
    ),
    ("train without --data", lambda w: None, ("generalist", "train", "--out", "{w}/g2"), "Missing option '--data'"),
    ("cluster --temperature nan", lambda w: None, (*CLUSTER, "--temperature", "nan"), "must be a finite number"),
    ("cluster --temperature inf", lambda w: None, (*CLUSTER, "--temperature", "inf"), "must be a finite number"),
    ("cluster --groups 1", lambda w: None, (*CLUSTER, "--groups", 1), "a group holds all 8 classes"),
    ("data synthetic --noise -1", lambda w: None, ("data", "synthetic", "--out", "{w}/s", "--noise", -1), "noise"),
    (
        "baseline on another input shape",
        lambda w: None,
        ("baseline", "--run", "{w}/run", "--data", "{w}/ds_wide"),
        "takes inputs of shape [8]",
    ),
    (
        "distill over the run's generalist",
        lambda w: None,
        ("distill", "--run", "{w}/run", "--data", "{w}/ds", "--out", "{w}/run/generalist", "--restart", "--quiet"),
        "is not a student",
    ),
    (
        "distill with a malformed baselines.json",
        lambda w: ((w / "run/baselines").mkdir(), (w / "run/baselines/baselines.json").write_text("[]")),
        ("distill", "--run", "{w}/run", "--data", "{w}/ds", "--quiet", "--epochs", 1),
        "baselines.json: 'format' is 'list'",
    ),
    (
        "distill: teacher.json a directory",
        lambda w: (w / "run/student/teacher.json").mkdir(parents=True),
        ("distill", "--run", "{w}/run", "--data", "{w}/ds", "--quiet", "--epochs", 1),
        "run directory (teacher.json/)",
    ),
    (
        "correction not the one pi and rho give",
        lambda w: (
            _j(f"{S0}/specialist.json", lambda d: d.update(dustbin_correction=1e308))(w),
            refingerprint_specialist(w / S0),
        ),
        INFER,
        "but pi and rho give",
    ),
    (
        "specialist cost emptied",
        _j(f"{S0}/specialist.json", lambda d: d.update(cost={})),
        INFER,
        "'cost': missing keys",
    ),
    (
        "specialist classes renamed",
        lambda w: (
            _j(f"{S0}/specialist.json", lambda d: d.update(classes=["z"] * len(d["group"])))(w),
            refingerprint_specialist(w / S0),
        ),
        INFER,
        "class names are not those of its group",
    ),
    (
        "specialists train over swapped weights",
        _swap_weights,
        SPEC[:-4] + ("--out", "{w}/run", "--epochs", "1"),
        "not a valid specialist",
    ),
    (
        "specialists train over swapped directories",
        lambda w: ((w / S0).rename(w / "tmp"), (w / S1).rename(w / S0), (w / "tmp").rename(w / S1)),
        SPEC[:-4] + ("--out", "{w}/run", "--epochs", "1"),
        "the record of specialist 1, not 0",
    ),
    ("specialists --set rho=1", lambda w: None, (*SPEC, "--set", "rho=1"), "rho must be in (0, 1)"),
    ("specialists --set lr=-0.1", lambda w: None, (*SPEC, "--set", "lr=-0.1"), "lr must be in [0, 10]"),
    ("data synthetic --classes 1", lambda w: None, ("data", "synthetic", "--out", "{w}/s", "--classes", 1), "classes"),
    (
        "data glyphs --classes 1",
        lambda w: None,
        ("data", "glyphs", "--out", "{w}/s", "--classes", 1),
        "n_classes must be at least 2",
    ),
    (
        "data arrays into a dataset: bad labels",
        lambda w: (np.save(w / "x.npy", np.zeros((4, 2), np.float32)), np.save(w / "y.npy", np.array([0, 1, 2, -1]))),
        ("data", "arrays", "--x", "{w}/x.npy", "--y", "{w}/y.npy", "--out", "{w}/ds"),
        "y.npy: labels span",
    ),
]


# ----------------------------------------------------------------------------- cluster --predictions
# A model's predictions file (clustering/predictions.py) refused by key, and groups made from one
# refused where specialists need their generalist's.

PRED = ("cluster", "--predictions", "{w}/p.npz", "--out", "{w}/cl2", "--quiet")


def _preds(**change):
    """A mutation: {w}/p.npz, valid predictions for the tiny dataset's 8 classes (two confusable
    halves), with ``change`` applied (a key set to None is left out)."""

    def mutate(w: Path) -> None:
        rng = np.random.default_rng(0)
        labels = np.arange(40) % 8
        logits = rng.normal(0, 0.3, (40, 8)) + 2 * np.eye(8)[labels]
        logits[:, :4] += (labels < 4)[:, None] * rng.normal(1, 0.8, (40, 1))  # classes 0-3 confused together
        arrays = {"logits": logits, "labels": labels, "classes": np.array(json.loads((w / DS).read_text())["classes"])}
        arrays |= change
        np.savez(w / "p.npz", **{k: v for k, v in arrays.items() if v is not None})

    return mutate


class _Planted:
    """Unpickled, it would create ``path``: what a hostile object array in an .npz can do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _planted_preds(w: Path) -> None:
    _preds(classes=np.array([_Planted(str(w / "pwned"))] * 8, dtype=object))(w)


def _pickle_named_npz(w: Path) -> None:
    import pickle

    (w / "p.npz").write_bytes(pickle.dumps({"logits": [[0.0, 1.0]]}))


def _clustered_preds(w: Path) -> None:
    """{w}/pc: `specens cluster --predictions` output for the tiny dataset's classes."""
    from specens.clustering import cluster_predictions

    _preds()(w)
    cluster_predictions(w / "p.npz", w / "pc", n_groups=2)


PREDICTIONS = [
    ("predictions: NaN logits", _preds(logits=np.full((40, 8), np.nan)), PRED, "p.npz: key 'logits' holds NaN"),
    ("predictions: logits 1-d", _preds(logits=np.zeros(40)), PRED, "p.npz: key 'logits' must be a 2-d float array"),
    ("predictions: 39 labels", _preds(labels=np.arange(39) % 8), PRED, "p.npz: key 'labels' must be integers of shape"),
    ("predictions: labels as floats", _preds(labels=np.arange(40.0) % 8), PRED, "p.npz: key 'labels' must be integers"),
    ("predictions: label 8 of 8", _preds(labels=np.arange(40) % 9), PRED, "p.npz: key 'labels' holds 8, outside"),
    ("predictions: 7 names", _preds(classes=np.array(list("abcdefg"))), PRED, "p.npz: key 'classes' must be 8 strings"),
    ("predictions: a name twice", _preds(classes=np.array(list("abcdefga"))), PRED, "key 'classes' names 'a' twice"),
    (
        "predictions: one class",
        _preds(logits=np.zeros((40, 1)), labels=np.zeros(40, int), classes=np.array(["a"])),
        PRED,
        "p.npz: key 'classes' names 1 class(es); clustering needs at least 2",
    ),
    ("predictions: one row", _preds(logits=np.zeros((1, 8)), labels=np.zeros(1, int)), PRED, "'logits' has 1 row(s)"),
    ("predictions: probs off the simplex", _preds(logits=None, probs=np.full((40, 8), 0.2)), PRED, "row 0 sums to 1.6"),
    ("predictions: logits and probs", _preds(probs=np.full((40, 8), 0.125)), PRED, "holds both 'logits' and 'probs'"),
    ("predictions: no labels", _preds(labels=None), PRED, "p.npz: no key 'labels'"),
    (
        "predictions: class names an object array",
        _preds(classes=np.array(list("abcdefgh"), dtype=object)),
        PRED,
        "p.npz: key 'classes' is an object array",
    ),
    ("predictions: a planted pickle", _planted_preds, PRED, "p.npz: key 'classes' is an object array"),
    ("predictions: a pickle named .npz", _pickle_named_npz, PRED, "p.npz: not an .npz file"),
    (
        "predictions: an .npy",
        lambda w: np.save(w / "p.npy", np.zeros((4, 2))),
        (*PRED[:2], "{w}/p.npy", *PRED[3:]),
        "p.npy: one .npy array",
    ),
    ("predictions: no such file", lambda w: None, PRED, "p.npz: no such file"),
    (
        "predictions with --generalist",
        _preds(),
        (*PRED, "--generalist", "{w}/run/generalist"),
        "predictions (--predictions) replaces generalist and data (--generalist, --data)",
    ),
    ("predictions: --groups C", _preds(), (*PRED, "--groups", 8), "n_groups must be below the 8 classes of"),
    (
        "specialists train on groups from predictions",
        _clustered_preds,
        (*SPEC[:6], "{w}/pc/clusters.json", *SPEC[7:]),
        "clusters.json: made from a predictions file",
    ),
]
CASES += PREDICTIONS

# ----------------------------------------------------------------------------- generalist import
# A model directory or state dict from someone else (generalist/importing.py): refused by file and
# key before anything is built or written.

BERT_DIR = "{w}/bert"
IMPORT = ("generalist", "import", "--hf", BERT_DIR, "--data", "{w}/tok", "--out", "{w}/imported", "--quiet")
TEXTS = [(f"{verb} {noun} please", f"{verb}_{noun}") for verb in ("pay", "show") for noun in ("bill", "card")] * 6


def _bert(edit=None, drop=(), retokenize: bool = False):
    """A mutation: {w}/bert, a two-layer BERT classifier and its tokenizer as save_pretrained writes
    them, and {w}/tok, TEXTS tokenized by it (by another tokenizer with ``retokenize``); then its
    config.json edited by ``edit`` and the files in ``drop`` removed."""

    def mutate(w: Path) -> None:
        transformers = pytest.importorskip("transformers")
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        from specens.data.tables import write_text_dataset
        from specens.data.text import Tokenized

        def tokenizer_dir(path: Path, words) -> None:
            tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
            tok.pre_tokenizer = pre_tokenizers.Whitespace()
            tok.train_from_iterator(words, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
            transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]").save_pretrained(path)

        classes = sorted({c for _, c in TEXTS})
        tokenizer_dir(w / "bert", [t for t, _ in TEXTS])
        labels = dict(enumerate(classes))
        config = transformers.BertConfig(
            vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8,
            max_position_embeddings=16, id2label=labels, label2id={v: k for k, v in labels.items()},
        )  # fmt: skip
        transformers.BertForSequenceClassification(config).save_pretrained(w / "bert")
        if retokenize:
            tokenizer_dir(w / "other", ["please show pay bill card"] * 3)
        rows = {"train": TEXTS, "val": TEXTS[:4], "test": TEXTS[:4]}
        featurizer = Tokenized(str(w / ("other" if retokenize else "bert")), 8)
        write_text_dataset(str(w / "tok"), "tok", classes, rows, featurizer)
        if edit:
            cfg = json.loads((w / "bert" / "config.json").read_text())
            edit(cfg)
            (w / "bert" / "config.json").write_text(json.dumps(cfg))
        for name in drop:
            (w / "bert" / name).unlink()

    return mutate


def _bert_bin(w: Path) -> None:
    _bert(drop=["model.safetensors"])(w)
    (w / "bert" / "pytorch_model.bin").write_bytes(b"a pickle")


def _typed_tokenizer(w: Path) -> None:
    """{w}/bert's tokenizer made to give a single text token type 1, and {w}/t.csv to tokenize."""
    _bert()(w)
    path = w / "bert" / "tokenizer.json"
    tok = json.loads(path.read_text())
    tok["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"Sequence": {"id": "A", "type_id": 1}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {},
    }
    path.write_text(json.dumps(tok))
    (w / "t.csv").write_text("text,label\n" + "".join(f"{t},{c}\n" for t, c in TEXTS))


def _state_pt(w: Path, state) -> None:
    import torch

    torch.save(state, w / "net.pt")


STATE = ("generalist", "import", "--weights", "{w}/net.pt", "--model", "mlp", "--data", "{w}/ds", "--out", "{w}/sd")
STATE += ("--set", 'model_kwargs={"hidden": [16]}')
IMPORTS = [
    ("import: config names code", _bert(lambda c: c.update(auto_map={"AutoConfig": "evil.Config"})), IMPORT,
     "config.json: 'auto_map' names code"),
    ("import: trust_remote_code", _bert(lambda c: c.update(trust_remote_code=True)), IMPORT, "'trust_remote_code'"),
    ("import: unknown model type", _bert(lambda c: c.update(model_type="llama")), IMPORT,
     "model_type 'llama' is not one specens builds"),
    ("import: labels not the dataset's", _bert(lambda c: c["id2label"].update({"0": "refund"})), IMPORT,
     "labels are not the dataset's 4 classes"),
    ("import: placeholder labels", _bert(lambda c: c.update(id2label={str(i): f"LABEL_{i}" for i in range(4)})),
     IMPORT, "placeholders (LABEL_0 ...)"),
    ("import: weights of another size", _bert(lambda c: c.update(hidden_size=16)), IMPORT,
     "model.safetensors: the weights do not fit the model: wrong shapes"),
    ("import: only a pickled .bin", _bert_bin, IMPORT, "pytorch_model.bin are pickles"),
    ("import: data from another tokenizer", _bert(retokenize=True), IMPORT, "tokenized by tokenizer"),
    ("import: a hashed n-gram dataset", _bert(), (*IMPORT[:5], "{w}/ds", *IMPORT[6:]),
     "ds/dataset.json was not tokenized for a transformers model"),
    ("import: texts longer than its positions", _bert(lambda c: c.update(max_position_embeddings=4)), IMPORT,
     "texts of 8 tokens, but"),
    ("import: no tokenizer.json", _bert(drop=["tokenizer.json"]), IMPORT, "bert/tokenizer.json: no such file"),
    ("import: out inside the model", _bert(), (*IMPORT[:7], "{w}/bert/run", "--quiet"),
     "bert/run lies inside the input --hf"),
    ("import: a transformers state dict", lambda w: _state_pt(w, {}), (*STATE[:5], "hf", *STATE[6:-2]),
     "--model hf: a transformers model comes in with --hf MODEL_DIR"),
    ("data: a tokenizer giving type ids", _typed_tokenizer,
     ("data", "text", "--train", "{w}/t.csv", "--out", "{w}/tok2", "--tokenizer", BERT_DIR),
     "bert/tokenizer.json: gives a single text token type ids other than 0"),
    ("import: a decoder config", _bert(lambda c: c.update(is_decoder=True)), IMPORT,
     "config.json: 'is_decoder' is true"),
    ("import: a million layers", _bert(lambda c: c.update(num_hidden_layers=10**6)), IMPORT,
     "config.json: 'num_hidden_layers' must be an int in [1, 256]"),
    ("import: an unknown activation", _bert(lambda c: c.update(hidden_act="evil")), IMPORT,
     "config.json: 'hidden_act' 'evil' is not an activation"),
    ("import: heads not dividing the width", _bert(lambda c: c.update(num_attention_heads=3)), IMPORT,
     "config.json: transformers does not build this config (The hidden size (8) is not a multiple"),
    ("import: a mistyped field", _bert(lambda c: c.update(layer_norm_eps="tiny")), IMPORT,
     "config.json: transformers does not build this config (Validation error for field 'layer_norm_eps'"),
    ("import: state dict of another size", lambda w: _state_pt(w, {"body.1.weight": np.zeros(1)}), STATE,
     "net.pt: not a state dict"),
    ("import: state dict of wrong shapes", lambda w: _state_pt(w, _mlp_state(w, hidden=4)), STATE,
     "net.pt: the weights do not fit the model: wrong shapes"),
]  # fmt: skip


def _mlp_state(w: Path, hidden: int) -> dict:
    from specens.generalist.models import mlp

    return mlp((8,), 8, hidden=[hidden]).state_dict()


CASES += IMPORTS


@pytest.mark.parametrize("name,mutate,args,culprit", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_refused_in_one_line_and_loses_nothing(work, name, mutate, args, culprit):
    mutate(work)
    before = snapshot(work)
    r = run_cli(*(str(a).replace("{w}", str(work)) for a in args))
    assert_refused(r, culprit)
    assert snapshot(work) == before  # nothing already written changed or vanished; nothing half-written appeared


def test_there_are_at_least_sixty_cases():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


# ----------------------------------------------------------------------------- code named by a run directory

PAYLOAD = """
import pathlib
pathlib.Path({marker!r}).touch()  # what importing the named module does: anything at all

from specens.generalist.models import mlp as make
"""


def _plant_code(w: Path, marker: Path, monkeypatch) -> None:
    """The attack: model.json (and each specialist's record) names a module whose import runs
    code, here a module beside the run that touches ``marker``; the fingerprints are recomputed to
    fit, as a hostile author would."""
    (w / "payload").mkdir()
    (w / "payload" / "specens_payload.py").write_text(PAYLOAD.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(w / "payload"))
    name = "specens_payload:make"
    gdir = w / "run" / "generalist"
    edit_json(gdir / "model.json", lambda d: (d["model"].update(name=name), d["config"].update(model=name)))
    refingerprint_generalist(gdir)
    for sdir in (w / "run" / "specialists").glob("s*"):
        edit_json(sdir / "specialist.json", lambda d: d["model"]["generalist_model"].update(name=name))
        refingerprint_specialist(sdir)


LOADERS = [
    ("generalist", "eval", "--run", "{w}/run/generalist", "--data", "{w}/ds"),
    ("generalist", "predict", "--run", "{w}/run/generalist", "--data", "{w}/ds", "--out", "{w}/p"),
    ("generalist", "train", "--data", "{w}/ds", "--out", "{w}/g2", "--teacher", "{w}/run/generalist", "--quiet"),
    ("cluster", "--generalist", "{w}/run/generalist", "--data", "{w}/ds", "--out", "{w}/cl2", "--quiet"),
    SPEC,
    ("infer", "--run", "{w}/run", "--data", "{w}/ds", "--out", "{w}/pred"),
    ("evaluate", "--run", "{w}/run", "--data", "{w}/ds"),
    ("baseline", "--run", "{w}/run", "--data", "{w}/ds", "--only", "continued"),
    ("distill", "--run", "{w}/run", "--data", "{w}/ds", "--quiet"),
]


@pytest.mark.parametrize("args", LOADERS, ids=[" ".join(a[:2]) for a in LOADERS])
def test_a_run_directory_never_runs_the_code_it_names(work, args, monkeypatch):
    marker = work / "pwned"
    _plant_code(work, marker, monkeypatch)
    r = run_cli(*(str(a).replace("{w}", str(work)) for a in args))
    assert_refused(r, "--trust-code")
    assert not marker.exists()


def test_trust_code_opts_in_and_says_so(work, monkeypatch):
    marker = work / "pwned"
    _plant_code(work, marker, monkeypatch)
    r = run_cli("generalist", "eval", "--run", work / "run" / "generalist", "--data", work / "ds", "--trust-code")
    assert r.exit_code == 0, r.output
    assert marker.exists()  # the user asked for it: the named module was imported
    warning = [ln for ln in r.stderr.splitlines() if ln.startswith("Warning: ")]
    assert len(warning) == 1 and "specens_payload:make" in warning[0] and "trusted" in warning[0]


FILES = [  # a config file travels like a shared directory: it grants no trust and names no code alone
    ("generalist", "train", "--config", "{w}/t.toml", "--data", "{w}/ds", "--out", "{w}/g2", "--quiet"),
    ("cluster", "--config", "{w}/t.toml", "--generalist", "{w}/run/generalist", "--data", "{w}/ds", "--out", "{w}/c2"),
]


@pytest.mark.parametrize("args", FILES, ids=[a[0] for a in FILES])
def test_a_config_file_grants_no_trust(work, args, monkeypatch):
    marker = work / "pwned"
    _plant_code(work, marker, monkeypatch)
    (work / "t.toml").write_text("trust_code = true\n")
    r = run_cli(*(str(a).replace("{w}", str(work)) for a in args))
    assert_refused(r, "t.toml: 'trust_code' is not read from a config file")
    assert not marker.exists()


def test_a_config_file_names_code_only_with_the_flag(work, monkeypatch):
    marker = work / "pwned"
    _plant_code(work, marker, monkeypatch)
    monkeypatch.delitem(sys.modules, "specens_payload", raising=False)  # imported by an earlier test
    (work / "t.toml").write_text('model = "specens_payload:make"\n')
    r = run_cli(*(str(a).replace("{w}", str(work)) for a in FILES[0]))
    assert_refused(r, "t.toml: model = 'specens_payload:make' names code to import")
    assert not marker.exists()
    r = run_cli(*(str(a).replace("{w}", str(work)) for a in FILES[0]), "--epochs", 1, "--trust-code")
    assert r.exit_code == 0, r.output
    assert marker.exists()  # the user vouched for the file: its code ran


def test_training_may_name_the_users_own_code(work):
    r = run_cli(
        "generalist",
        "train",
        "--data",
        work / "ds",
        "--out",
        work / "g2",
        "--quiet",
        "--epochs",
        1,
        "--set",
        "model=specens.generalist.models:mlp",
        "--set",
        'model_kwargs={"hidden": [8]}',
    )
    assert r.exit_code == 0, r.output
    # loading the result names that code: refused without the opt-in, allowed with it
    assert_refused(run_cli("generalist", "eval", "--run", work / "g2", "--data", work / "ds"), "--trust-code")
    r = run_cli("generalist", "eval", "--run", work / "g2", "--data", work / "ds", "--trust-code")
    assert r.exit_code == 0 and json.loads(r.stdout)["top1"] >= 0


# ----------------------------------------------------------------------------- nothing already written is lost


def test_a_failed_import_leaves_the_dataset_there_intact(work, tmp_path):
    from PIL import Image

    src = tmp_path / "imgs"
    for c in ("a", "b"):
        (src / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((4, 4), 40 * i, np.uint8)).save(src / c / f"{i}.png")
    r = run_cli("data", "folder", "--source", src, "--out", work / "imgds")
    assert r.exit_code == 0, r.output
    before = snapshot(work / "imgds")
    (src / "b" / "3.png").write_bytes(b"not a png")
    r = run_cli("data", "folder", "--source", src, "--out", work / "imgds")
    assert_refused(r, "3.png: cannot be read as an image")
    assert snapshot(work / "imgds") == before
    assert not [p for p in work.iterdir() if p.name.startswith(".")]  # no build directory left behind


def test_a_diverging_run_stops_and_exports_nothing(work):
    from specens.core.errors import TrainingDiverged
    from specens.generalist.config import TrainConfig
    from specens.generalist.train import train_generalist

    cfg = TrainConfig(
        data=str(work / "ds"),
        out=str(work / "g2"),
        epochs=2,
        model="mlp",
        optimizer="sgd",
        lr=10.0,
        momentum=0.99,
        model_kwargs={"hidden": [64, 64]},
        warmup=0.0,
        schedule="constant",
    )
    with pytest.raises(
        TrainingDiverged,
        match=r"generalist training diverged at epoch \d+, step \d+: .*nothing was "
        r"exported. Lower the learning rate",
    ):
        train_generalist(cfg, progress=False)
    assert not (work / "g2" / "model.json").exists() and not (work / "g2" / "checkpoints").exists()


def test_a_non_finite_loss_or_gradient_is_caught_at_its_step():
    import torch

    from specens.core.errors import TrainingDiverged
    from specens.core.loop import finite_loss

    model = torch.nn.Linear(2, 2)
    loss = model(torch.ones(1, 2)).sum()
    loss.backward()
    assert finite_loss(loss, model, "x", 0, 0, 1) == float(loss.detach())
    with pytest.raises(TrainingDiverged, match="x training diverged at epoch 3, step 5: the loss is nan"):
        finite_loss(torch.tensor(float("nan")), model, "x", 2, 4, 10)
    model.weight.grad[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match="the gradient norm is inf"):
        finite_loss(loss, model, "x", 0, 0, 1)


# ----------------------------------------------------------------------------- every field of every record


def _paths(d: dict, nested=("model", "input", "gate", "metrics", "cost", "splits")) -> list[tuple[str, ...]]:
    """Every top-level key, and the keys one level down in the objects named ``nested``."""
    out = [(k,) for k in d]
    out += [(k, k2) for k in nested if isinstance(d.get(k), dict) for k2 in d[k]]
    return out


_MUTATIONS = {
    "deleted": None,
    "null": lambda v: None,
    "a string": lambda v: "x",
    "a list": lambda v: [],
    "negative": lambda v: -1,
    "huge": lambda v: 1e300,
}


def _mutated(d: dict, path: tuple[str, ...], how: str) -> dict:
    d = json.loads(json.dumps(d))
    parent = d
    for k in path[:-1]:
        parent = parent[k]
    if how == "deleted":
        del parent[path[-1]]
    else:
        parent[path[-1]] = _MUTATIONS[how](parent[path[-1]])
    return d


def test_every_field_mutated_is_accepted_unchanged_or_refused_in_one_line(tiny, tmp_path):
    w = tmp_path / "w"
    shutil.copytree(tiny, w)

    def predictions(out: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(out.glob("*.jsonl"))}

    base = run_cli("infer", "--run", w / "run", "--data", w / "ds", "--out", tmp_path / "base")
    assert base.exit_code == 0, base.output
    expected = predictions(tmp_path / "base")
    files = [w / G, w / S0 / "specialist.json", w / CL, w / DS]
    tried, refused, n = 0, 0, 0
    for f in files:
        original = f.read_bytes()
        record = json.loads(original)
        cases = [(p, how) for p in _paths(record) for how in _MUTATIONS] + [(("extra_key",), "added")]
        for path, how in cases:
            mutated = {**record, "extra_key": 1} if how == "added" else _mutated(record, path, how)
            f.write_text(json.dumps(mutated))
            n += 1
            r = run_cli("infer", "--run", w / "run", "--data", w / "ds", "--out", tmp_path / f"o{n}")
            where = f"{f.name} {'.'.join(path)} {how}"
            if r.exit_code == 0:
                assert predictions(tmp_path / f"o{n}") == expected, where
            else:
                try:
                    assert_refused(r, f.name)
                except AssertionError as e:
                    raise AssertionError(f"{where}: {e}") from None
                refused += 1
            tried += 1
        f.write_bytes(original)
    assert tried > 150 and refused > tried // 2  # most fields matter; the rest must not change a prediction


def test_a_shared_trunk_specialist_loads_only_on_its_generalist(work):
    from specens.core.errors import CheckpointError
    from specens.specialists.record import load_specialist

    _j(f"{S0}/specialist.json", lambda d: d.update(top_blocks=1))(work)
    refingerprint_specialist(work / S0)
    with pytest.raises(CheckpointError, match="runs on its generalist's trunk: pass generalist_model"):
        load_specialist(work / S0)  # alone, its trunk would be a fresh, untrained one

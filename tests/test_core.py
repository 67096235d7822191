"""The shared infrastructure: atomic writes, the rerun policy, the error family, the scikit-learn
contract of the clusterer."""

import json

import numpy as np
import pytest

from specens.core.config import config_changes, load_config
from specens.core.errors import CheckpointError, ConfigError, DataError, SpecensError, check_same_classes
from specens.core.io import TEMP_GLOB, atomic_path, write_bytes_atomic


def test_atomic_path_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "f.bin"
    write_bytes_atomic(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old" and list(tmp_path.glob(TEMP_GLOB)) == []
    with atomic_path(target) as a, atomic_path(target) as b:  # two concurrent writers never share a name
        assert a != b and a.match(TEMP_GLOB) and b.match(TEMP_GLOB)
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert target.read_bytes() == b"a"  # the last to finish wins, whole
    with atomic_path(tmp_path / "d", directory=True) as d:
        (d / "x").write_text("1")
    with atomic_path(tmp_path / "d", directory=True) as d:
        (d / "y").write_text("2")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["y"]


def test_config_changes_ignore_resumable_fields_and_fill_defaults():
    from specens.generalist.config import TrainConfig

    cfg = TrainConfig(data="d", out="o", lr=0.01)
    saved = json.loads(json.dumps(TrainConfig(data="d", out="elsewhere", device="cpu", threads=3).__dict__))
    assert config_changes(saved, cfg) == ["lr: 0.002 -> 0.01"]  # out, device, threads may change
    del saved["train_fraction"], saved["lr"]  # written before these fields existed: their defaults
    assert config_changes(saved, cfg) == ["lr: 0.002 -> 0.01"]


def test_config_changes_compare_paths_by_what_they_name(tmp_path, monkeypatch):
    """A run addressed relative against absolute, or through a link, is the same run; a moved one
    is told apart with a line saying that only the paths differ."""
    from specens.generalist.config import TrainConfig

    (tmp_path / "d").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "d")
    monkeypatch.chdir(tmp_path)
    saved = json.loads(json.dumps(TrainConfig(data="d", out="o", teacher=("t",)).__dict__))
    for data in (str(tmp_path / "d"), "via", "./d/"):
        assert config_changes(saved, TrainConfig(data=data, out="o", teacher=(str(tmp_path / "t"),))) == []
    changes = config_changes(saved, TrainConfig(data="moved/d", out="o", teacher=("t",)))
    assert changes[0] == "data: 'd' -> 'moved/d'" and changes[-1].startswith("only paths differ")
    assert "only paths" not in " ".join(config_changes(saved, TrainConfig(data="moved/d", out="o", lr=0.01)))


def test_declared_constraints_are_checked_together_and_shared_parts_keep_them():
    """param() declares a field's constraint next to it; every broken one is reported at once in
    one style; a stage re-declaring a shared field's default (redefault) keeps its bounds; union
    fields coerce override strings (null, numbers, bare words)."""
    import dataclasses

    from specens.core.config import OptimParts, Validated, load_config, param, redefault

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Stage(OptimParts):
        name: str = param("a", choices=("a", "b", "c"))
        ratio: float = param(0.5, gt=0, lt=1)
        size: int | str | None = "auto"
        lr: float = redefault(OptimParts, "lr", 0.5)

    assert Stage().lr == 0.5 and Stage().epochs == OptimParts().epochs
    with pytest.raises(ConfigError) as e:
        Stage(name="z", ratio=1.0, lr=0.0, epochs=0, optimizer="adam", warmup=-0.1)
    assert str(e.value).split("; ") == [
        "epochs must be in [1, 100000], got 0",
        "optimizer must be 'adamw' or 'sgd', got 'adam'",
        "lr must be in (0, 10], got 0.0",
        "warmup must be in [0, 1), got -0.1",
        "name must be one of ('a', 'b', 'c'), got 'z'",
        "ratio must be in (0, 1), got 1.0",
    ]
    with pytest.raises(ConfigError, match="batch_size must be a number, got 'x'"):
        Stage(batch_size="x")
    assert [load_config(Stage, None, {"size": v}).size for v in ("null", "16", "auto")] == [None, 16, "auto"]
    with pytest.raises(ConfigError, match=r"size: expected int or str or null, got 1.5"):
        load_config(Stage, None, {"size": "1.5"})

    @dataclasses.dataclass(frozen=True)
    class Cross(Validated):
        def checks(self):
            return [(False, "first"), (True, "never"), (False, "second")]

    with pytest.raises(ConfigError, match="^first; second$"):
        Cross()


def test_every_user_error_is_one_family_and_classes_are_checked_once():
    for e in (ConfigError, DataError, CheckpointError):
        assert issubclass(e, SpecensError) and issubclass(e, ValueError)
    check_same_classes(["a", "b"], ("a", "b"), "x", "y")
    with pytest.raises(
        CheckpointError,
        match=r"^run was trained on 2 classes, d/dataset.json has 2 that differ "
        r"\(class 1 is 'b' there and 'c' here\)$",
    ):
        check_same_classes(["a", "b"], ["a", "c"], "run", "d/dataset.json")
    with pytest.raises(CheckpointError, match="has 3 that differ \\(one list extends the other\\)"):
        check_same_classes(["a", "b"], ["a", "b", "c"], "run", "d")


def test_resolve_device_names_the_bad_value():
    import torch

    from specens.core.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device 'tpu': expected"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device 'cuda': CUDA is not available on this machine"):
            resolve_device("cuda")


def test_confusion_clusterer_follows_the_scikit_learn_estimator_contract():
    from sklearn.base import clone
    from sklearn.model_selection import ParameterGrid

    from specens.clustering import ConfusionClusterer

    est = ConfusionClusterer(3, representation="offdiag", random_state=4)
    assert est.get_params()["representation"] == "offdiag" and est.get_params()["n_groups"] == 3
    assert est.set_params(n_groups=2, overlap=1.5) is est and est.n_groups == 2 and est.overlap == 1.5
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(6) * 0.3, size=400)
    sizes = {}
    for params in ParameterGrid({"n_groups": [2, 3], "min_size": [1]}):  # what a grid search does
        fitted = clone(est).set_params(**params).fit(p)
        sizes[params["n_groups"]] = len(fitted.groups_)
    assert set(sizes) == {2, 3} and all(v >= 1 for v in sizes.values())
    with pytest.raises(ValueError, match="'representation' parameter of ConfusionClusterer must be a str among"):
        ConfusionClusterer(2, representation="cov").check_params()


def _loop(tmp_path, epochs, checkpoint_every, scores):
    """An EpochLoop over a one-weight model whose weight is the epoch number, scored by ``scores``."""
    from dataclasses import dataclass

    import torch

    from specens.core.loop import EpochLoop, EpochRecord

    @dataclass(frozen=True)
    class Cfg:
        lr: float = 0.1

    @dataclass(frozen=True, kw_only=True)
    class Scored(EpochRecord):  # a stage's record: the loop's figures and its own
        score: float | None = None

    model = torch.nn.Linear(1, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    seen = []

    def train_epoch(epoch):
        with torch.no_grad():
            model.weight.fill_(epoch + 1.0)
        return {"examples": 4, "steps": 1}

    def checkpoints(epoch, record):
        from specens.core.checkpoint import training_progress

        prog = training_progress(tmp_path)
        seen.append(None if prog is None else prog.epoch)

    loop = EpochLoop(
        tmp_path,
        model,
        opt,
        sched,
        Cfg(),
        epochs,
        lambda r, b: r.score > b.score,
        record=Scored,
        on_epoch_end=[checkpoints],
        checkpoint_every=checkpoint_every,
    )
    result = loop.run(train_epoch, lambda: {"score": scores[len(seen)]})
    return model, result, seen


def test_the_loop_checkpoints_by_time_and_keeps_the_best_in_memory(tmp_path):
    """checkpoint_every=0: a state after every epoch; a long interval: only after the last one.
    Either way the model ends with the best epoch's weights and records carry their cost."""
    from safetensors.torch import load_file

    from specens.core.loop import BEST

    scores = [0.1, 0.9, 0.5, 0.2]
    model, result, seen = _loop(tmp_path / "every", 4, 0, scores)
    assert seen == [0, 1, 2, 3] and float(model.weight.detach()) == 2.0 and result.best.epoch == 2
    model, result, seen = _loop(tmp_path / "rarely", 4, 3600, scores)
    assert seen == [None, None, None, 3] and float(model.weight.detach()) == 2.0
    assert float(load_file(tmp_path / "rarely" / BEST)["weight"]) == 2.0
    for r in result.history:
        assert r.examples == 4 and r.seconds >= 0 and r.cpu_seconds >= 0 and r.val_seconds >= 0


def test_ray_keeps_every_workers_line_when_a_stage_imports_it():
    """Ray folds log lines alike but for their numbers (specialist 1's epoch line and specialist
    2's) into one line plus a colour-coded notice, unless RAY_DEDUP_LOGS=0 when Ray is imported:
    the stages that use Ray set it first."""
    import os
    import subprocess
    import sys

    code = (
        "import specens.specialists.parallel, specens.inference.infer, ray\n"
        "from ray._private import ray_constants\n"  # where Ray keeps the switch it read on import
        "print(ray_constants.RAY_DEDUP_LOGS)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_DEDUP_LOGS"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_progress_bars_are_drawn_on_a_terminal_only():
    import io

    from specens.core.progress import progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert progress_bar(range(3), desc="x", unit="it", file=io.StringIO()).disable  # a pipe or a file
    shown = Terminal()
    assert list(progress_bar(range(3), desc="x", unit="it", file=shown)) == [0, 1, 2]
    assert "3/3" in shown.getvalue()
    assert progress_bar(range(3), desc="x", unit="it", enabled=False, file=Terminal()).disable


def test_a_second_process_training_into_the_same_directory_is_refused(tmp_path):
    """Two trainings into one directory wrote, pruned and published each other's checkpoints (two
    of ten simultaneous processes failed on a vanished temporary): the second is now refused at
    once, naming the directory, and the lock goes with the first (a killed one releases it too)."""
    from specens.core.io import LOCK, exclusive
    from specens.data.synthetic import import_synthetic
    from specens.generalist.config import TrainConfig
    from specens.generalist.train import train_generalist

    import_synthetic(str(tmp_path / "ds"), n_classes=4, n_groups=2, dim=4, n_train=8, n_val=4, n_test=2, seed=0)
    cfg = TrainConfig(data=str(tmp_path / "ds"), out=str(tmp_path / "g"), epochs=1, model="mlp", threads=1)
    with exclusive(tmp_path / "g", "a generalist"):  # as another process holding it would
        with pytest.raises(CheckpointError, match=r"g: another process is training a generalist into it now"):
            train_generalist(cfg, progress=False)
        assert not (tmp_path / "g" / "model.json").exists()
    assert not (tmp_path / "g").exists()  # the refused run left nothing behind
    train_generalist(cfg, progress=False)  # released: trains, and removes its lock when done
    assert (tmp_path / "g" / "model.json").is_file() and not (tmp_path / "g" / LOCK).exists()
    (tmp_path / "g" / LOCK).touch()  # a killed run's: accepted as a leftover, and reused
    train_generalist(cfg, progress=False)


def test_a_config_file_s_top_level_keys_and_its_stage_table_merge(tmp_path):
    """Keys at the top of a TOML file apply to every stage, the stage's table wins, other stages'
    tables are theirs; they were silently dropped when the file also had a [generalist] table."""
    from specens.clustering.cluster import ClusterConfig
    from specens.generalist.config import TrainConfig

    path = tmp_path / "t.toml"
    path.write_text('data = "d"\nepochs = 3\nlr = 0.1\n[generalist]\nout = "g"\nlr = 0.01\n[cluster]\nout = "c"\n')
    cfg = load_config(TrainConfig, path)
    assert (cfg.data, cfg.out, cfg.epochs, cfg.lr) == ("d", "g", 3, 0.01)
    with pytest.raises(ConfigError, match="unknown key 'epochs'"):  # a shared key this stage lacks is still named
        load_config(ClusterConfig, path, {"generalist": "g"})

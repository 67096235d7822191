"""Shared fixtures: small datasets written by our own importers into temporary directories."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

# Before anything imports Ray: Ray reads this once, at import, and then keeps every address it
# resolves on loopback (otherwise ray.init(address="127.0.0.1:…") is rewritten to this machine's
# external IP, where a loopback test cluster does not listen).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# pytest -n N: N processes share the cores, so each, and every process it starts (the CLI run as a
# subprocess, a Ray head's workers), runs torch on one thread. Tests train with ``threads=0`` (keep
# the process's count) for the same reason: two workers at two threads each on 2 cores ran the
# training tests 3-4x slower than one worker alone.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


# pytest -n N hands out test files in collection order; these, each a minute or more of end-to-end
# work, go first so that none of them starts last and runs alone at the end (the README's main job
# alone takes 2-3 minutes, about half the suite).
LONGEST_FIRST = ("test_readme.py", "test_ray_multinode.py", "test_specialists_ray.py", "test_ray_job.py")


def pytest_collection_modifyitems(items: list) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: otherwise as collected


SHARED_DATA = Path(os.environ.get("SPECENS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """``build(directory)`` run once per test run, however many processes share it (pytest -n N):
    the first process to ask builds under a file lock and the others wait, then read what it
    built (pytest-xdist's documented way to share a session fixture). Tests only read these."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # this run's directory, above each process's own
    out, done = base / name, base / f"{name}.done"
    with FileLock(str(base / f"{name}.lock")):
        if not done.is_file():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            build(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def synthetic_ds(tmp_path_factory) -> str:
    """20 classes in 4 planted groups, 16-d inputs, 200/50/50 samples per class; 3 train shards."""
    from specens.data.synthetic import import_synthetic

    def build(root: Path) -> None:
        import_synthetic(
            str(root),
            n_classes=20,
            n_groups=4,
            dim=16,
            n_train=200,
            n_val=50,
            n_test=50,
            noise=1.0,
            seed=0,
            shard_size=1500,
        )

    return str(_built_once(tmp_path_factory, "synthetic", build))


@pytest.fixture(scope="session")
def glyph_ds(tmp_path_factory) -> str:
    """30 glyph classes, 40 training images per class."""
    from specens.data.glyphs import import_glyphs

    def build(root: Path) -> None:
        import_glyphs(
            str(root),
            n_classes=30,
            train_per_class=40,
            val_per_class=4,
            test_per_class=4,
            seed=0,
            shard_size=400,
            progress=False,
        )

    return str(_built_once(tmp_path_factory, "glyphs", build))


@pytest.fixture
def shared_data() -> Path:
    """The real datasets beside the project; tests that need them skip when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (set SPECENS_DATA)")
    return SHARED_DATA


def _train(tmp_path_factory, name: str, **config) -> str:
    """A generalist trained once per test run into ``name`` (:func:`_built_once`); its run directory."""
    from specens.generalist.config import TrainConfig
    from specens.generalist.train import train_generalist

    build = lambda out: train_generalist(TrainConfig(out=str(out), **config), progress=False)
    return str(_built_once(tmp_path_factory, name, build))


@pytest.fixture(scope="session")
def glyph_generalist(glyph_ds, tmp_path_factory) -> str:
    """The default image model (the small residual net) at width 8, trained for 8 epochs on
    ``glyph_ds``: narrow, since it serves the clustering and evaluation tests, which need a net
    that learns the glyphs, not the default's accuracy (width 16 cost 2.3x the training time)."""
    return _train(
        tmp_path_factory,
        "glyph_generalist",
        data=glyph_ds,
        epochs=8,
        batch_size=48,
        lr=5e-3,
        model_kwargs={"width": 8},
        threads=0,
    )


@pytest.fixture(scope="session")
def strong_synthetic_generalist(synthetic_ds, tmp_path_factory) -> str:
    """A generalist trained for 4 epochs on ``synthetic_ds`` (right about the planted groups and
    within them), the "strong" net that tests/test_gate.py and tests/test_distill.py cut
    specialists from; its run directory, which tests only read (each loads its own copy)."""
    return _train(
        tmp_path_factory,
        "strong_generalist",
        data=synthetic_ds,
        epochs=4,
        lr=3e-3,
        batch_size=64,
        model_kwargs={"hidden": [64]},
        threads=0,
        patience=0,
        checkpoint_every=0,
    )


def _run(root: Path, data: str) -> dict:
    return {
        "root": root,
        "generalist": str(root / "generalist"),
        "clusters": str(root / "clusters" / "clusters.json"),
        "data": data,
    }


@pytest.fixture(scope="session")
def synthetic_run(synthetic_ds, tmp_path_factory) -> dict:
    """A generalist on ``synthetic_ds`` and 4 groups clustered from its validation predictions."""
    from specens.clustering.cluster import ClusterConfig, cluster
    from specens.generalist.config import TrainConfig
    from specens.generalist.train import train_generalist

    def build(root: Path) -> None:
        gen = train_generalist(
            TrainConfig(
                data=synthetic_ds,
                out=str(root / "generalist"),
                epochs=3,
                batch_size=64,
                lr=3e-3,
                model_kwargs={"hidden": [64]},
                threads=0,
            ),
            progress=False,
        )
        config = ClusterConfig(generalist=gen.run_dir, data=synthetic_ds, out=str(root / "clusters"), n_groups=4)
        cluster(config, progress=False)

    return _run(_built_once(tmp_path_factory, "synthetic_run", build), synthetic_ds)


@pytest.fixture(scope="session")
def ensemble_run(synthetic_run, tmp_path_factory) -> dict:
    """``synthetic_run``'s generalist and groups, copied, plus their 4 specialists (trained
    in-process, 2 epochs) in the run layout (``synthetic_run`` itself stays without specialists)."""
    from specens.specialists.parallel import train_all
    from specens.specialists.train import SpecialistConfig

    def build(root: Path) -> None:
        for part in ("generalist", "clusters"):
            shutil.copytree(synthetic_run["root"] / part, root / part)
        run = _run(root, synthetic_run["data"])
        config = SpecialistConfig(
            generalist=run["generalist"],
            clusters=run["clusters"],
            data=run["data"],
            out=str(root),
            epochs=2,
            batch_size=64,
            lr=3e-3,
            threads=1,
        )
        train_all(config, local=True, echo=lambda *_: None)

    return _run(_built_once(tmp_path_factory, "ensemble_run", build), synthetic_run["data"])

"""Distilling the specialist ensemble into one student (issue 16): the student learns what the
specialists know, from q on the fly or from a checked cache, resumes exactly, and is a generalist
that later stages take. (The loss and the temperature of q: tests/test_losses.py.)"""

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from specens.cli.main import cli
from specens.core.errors import CheckpointError, ConfigError
from specens.data.format import load_info
from specens.data.shards import (
    SHUFFLE_BUFFER,
    Batches,
    Cycle,
    MixedLoader,
    Pipeline,
    Read,
    ShardLoader,
    Shuffle,
    Split,
    iter_split,
)
from specens.generalist.checkpoint import load_generalist
from specens.generalist.config import TrainConfig
from specens.generalist.evaluate import evaluate
from specens.generalist.train import train_generalist
from specens.inference import Ensemble
from specens.inference.distill import DistillConfig, distill, distill_config
from specens.inference.distill_report import DistillReport
from specens.inference.infer import infer
from specens.inference.teachers import EnsembleTeacher, QCacheTeacher

CPU = torch.device("cpu")


def _top1(run_dir, data, split="test"):
    return evaluate(load_generalist(run_dir).model, iter_split(data, split, 256), CPU)["top1"]


@pytest.fixture(scope="module")
def helpful_ensemble(synthetic_ds, strong_synthetic_generalist, tmp_path_factory):
    """Specialists known to help: a generalist trained for one epoch (right about the planted group,
    weak within it) with, for each of the 4 planted groups, a specialist cut from a generalist
    trained for four (its head collapsed onto the group and a dustbin)."""
    from specens.specialists.model import build_specialist

    root = tmp_path_factory.mktemp("helpful")
    base = dict(
        data=synthetic_ds, batch_size=64, model_kwargs={"hidden": [64]}, threads=0, patience=0, checkpoint_every=0
    )
    weak = train_generalist(TrainConfig(out=str(root / "weak"), epochs=1, lr=1e-3, **base), progress=False).run_dir
    strong = load_generalist(strong_synthetic_generalist)  # epochs=4, lr=3e-3, the rest as ``base``
    groups = [torch.tensor(g) for g in load_info(synthetic_ds).groups]
    feats = torch.cat([strong.model.body(b.inputs) for b in iter_split(synthetic_ds, "train", 256)]).detach()
    specialists = [build_specialist(strong.model, g, feats).eval() for g in groups]
    ens = Ensemble(load_generalist(weak), groups, specialists, [0.0] * len(groups), device="cpu")
    return {"root": root, "weak": weak, "ensemble": ens, "base": base}


def test_the_student_learns_what_the_specialists_know(helpful_ensemble, synthetic_ds):
    """On 10% of the labels, the student distilled from the ensemble beats the generalist trained
    the same way on the labels alone (alpha = 0), and beats it by far more with the rest of the
    training split as an unlabelled transfer set, which leaves it close to the ensemble."""
    from specens.inference.evaluate import evaluate_ensemble

    h = helpful_ensemble
    ens = h["ensemble"]
    r = evaluate_ensemble(ens, synthetic_ds, "test", progress=False)
    assert r.ensemble.top1 > r.generalist.top1 + 0.2, r  # the specialists help

    common = dict(h["base"], epochs=3, lr=3e-3, init=h["weak"], temperature=2.0, train_fraction=0.1, run="in memory")
    top1 = {}
    for name, kw in (
        ("plain", dict(alpha=0.0)),
        ("student", dict(alpha=0.9)),
        ("transfer", dict(alpha=0.9, transfer=(synthetic_ds,))),
    ):
        cfg = DistillConfig(out=str(h["root"] / name), **common, **kw)
        top1[name] = _top1(train_generalist(cfg, progress=False, teacher=EnsembleTeacher(ens)).run_dir, synthetic_ds)
    assert top1["student"] > top1["plain"] + 0.05, top1
    assert top1["transfer"] > top1["student"] + 0.05, top1
    assert top1["transfer"] > r.ensemble.top1 - 0.06, (top1, r.ensemble.top1)


def test_mixed_loader_consumes_every_source_once_per_epoch_in_a_seeded_order(synthetic_ds):
    def loader(root, split, seed):
        where = Split.of(root, split)
        return ShardLoader(Pipeline(where, Cycle(Read()), Shuffle(50, where.num_samples), Batches(64), seed=seed))

    def epoch(e, seed=0):
        mixed = MixedLoader([loader(synthetic_ds, "val", 0), loader(synthetic_ds, "test", 1)], seed)
        mixed.set_epoch(e)
        return [(s, tuple(b.keys)) for s, b in mixed]

    first = epoch(0)
    for source, root, split in ((0, synthetic_ds, "val"), (1, synthetic_ds, "test")):
        keys = sorted(k for s, ks in first if s == source for k in ks)
        assert keys == sorted(k for b in iter_split(root, split, 512) for k in b.keys)
    assert first == epoch(0)  # the same epoch again: the same batches in the same order
    assert [s for s, _ in first] != [s for s, _ in epoch(1)]  # another epoch: another interleaving
    assert len(first) == sum(
        MixedLoader([loader(synthetic_ds, "val", 0), loader(synthetic_ds, "test", 1)]).batches_per_epoch()
    )


def test_transfer_sets_are_checked(synthetic_ds, glyph_ds, tmp_path):
    with pytest.raises(ConfigError, match="transfer sets need a teacher"):
        TrainConfig(data=synthetic_ds, out=str(tmp_path), transfer=(synthetic_ds,))
    with pytest.raises(ConfigError, match="run: the run directory"):
        DistillConfig(data=synthetic_ds, out=str(tmp_path))
    cfg = DistillConfig(data=synthetic_ds, out=str(tmp_path / "s"), run="x", transfer=(glyph_ds,), epochs=1, threads=1)
    with pytest.raises(CheckpointError, match=f"transfer set {glyph_ds}"):
        train_generalist(cfg, progress=False, teacher=object())


def test_q_cache_gives_the_ensembles_q_and_refuses_another_ensemble_or_split(ensemble_run, tmp_path):
    run, data = ensemble_run["root"], ensemble_run["data"]
    ens = Ensemble.load(run, device="cpu")
    infer(str(run), data, str(tmp_path / "train"), split="train", save_q=True, progress=False, ensemble=ens)
    sources = [(data, "train")]
    cache = QCacheTeacher([str(tmp_path / "train")], ens, sources)
    where = Split.of(data, "train")
    stages = Cycle(Read()), Shuffle(SHUFFLE_BUFFER, where.num_samples), Batches(64)
    batch = next(iter(ShardLoader(Pipeline(where, *stages, seed=3))))
    want = EnsembleTeacher(ens).soft_targets(batch.inputs, 2.0)
    got = cache.soft_targets(batch.inputs, 2.0, batch.keys, 0)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(cache.soft_targets(batch.inputs, 1.0, batch.keys, 0), ens.forward(batch.inputs).q, atol=1e-5)

    with pytest.raises(ConfigError, match="no cache for .* split 'train'"):
        QCacheTeacher([], ens, sources)
    infer(str(run), data, str(tmp_path / "val"), split="val", save_q=True, progress=False, ensemble=ens)
    with pytest.raises(ConfigError, match="split 'val', which is none of the splits"):
        QCacheTeacher([str(tmp_path / "val")], ens, sources)
    other = Ensemble.load(run, device="cpu", top_n=2)
    with pytest.raises(ConfigError, match="top_n is 1, but the run's ensemble has 2"):
        QCacheTeacher([str(tmp_path / "train")], other, sources)
    manifest = json.loads((tmp_path / "train" / "infer.json").read_text())
    manifest["fingerprints"]["generalist"] = "0123456789abcdef"  # q of another generalist
    (tmp_path / "train" / "infer.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="infer.json: fingerprints is .* the q it holds is not this ensemble's"):
        QCacheTeacher([str(tmp_path / "train")], ens, sources)
    # and through the command, naming the field at fault
    r = CliRunner().invoke(
        cli,
        [
            "distill",
            "--run",
            str(run),
            "--data",
            data,
            "--out",
            str(tmp_path / "s"),
            "--q-cache",
            str(tmp_path / "train"),
            "--quiet",
        ],
    )
    assert r.exit_code == 1 and "infer.json: fingerprints is" in r.output, r.output


def test_distill_resumes_exactly_and_refuses_another_teacher_setting(ensemble_run, tmp_path):
    run, data = ensemble_run["root"], ensemble_run["data"]
    settings = {"epochs": 2, "patience": 0, "checkpoint_every": 0, "threads": 1}
    whole = distill(
        run, data, str(tmp_path / "whole"), overrides=settings, split="val", progress=False, echo=lambda *_: None
    )

    cfg = distill_config(run, data, str(tmp_path / "resumed"), settings)

    def crash(epoch, record):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_generalist(cfg, progress=False, on_epoch_end=crash, teacher=EnsembleTeacher(Ensemble.load(run)))
    resumed = distill(
        run, data, str(tmp_path / "resumed"), overrides=settings, split="val", progress=False, echo=lambda *_: None
    )
    assert resumed.fingerprints["student"] == whole.fingerprints["student"]
    assert resumed.rows == {
        k: dataclasses.replace(v, seconds_per_example=resumed.rows[k].seconds_per_example)
        for k, v in whole.rows.items()
    }
    with pytest.raises(CheckpointError, match="top_n: 1 -> 2"):
        distill(run, data, str(tmp_path / "resumed"), overrides={**settings, "top_n": 2}, progress=False)
    teacher = tmp_path / "resumed" / "teacher.json"  # as if the run's specialists had been retrained since
    record = json.loads(teacher.read_text())
    record["ensemble"]["specialists"] = ["0123456789abcdef"]
    teacher.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="teacher.json: this student was trained from another ensemble"):
        distill(run, data, str(tmp_path / "resumed"), overrides=settings, progress=False)


def test_the_student_is_a_generalist_for_every_later_stage(ensemble_run, tmp_path):
    """`specens distill` writes the student and its report; `specens generalist eval` takes it, and
    it is the generalist of a second round: clusters, specialists and Ensemble.load."""
    from specens.clustering.cluster import ClusterConfig, cluster
    from specens.specialists.parallel import train_all
    from specens.specialists.train import SpecialistConfig

    run, data = ensemble_run["root"], ensemble_run["data"]
    student = tmp_path / "round1" / "student"
    r = CliRunner().invoke(
        cli,
        [
            "distill",
            "--run",
            str(run),
            "--data",
            data,
            "--out",
            str(student),
            "--epochs",
            "1",
            "--set",
            "threads=1",
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "student" in r.output and "generalist" in r.output and "ensemble" in r.output
    report = DistillReport.read(student / "distill.json")
    assert report.rows["student"].flops_per_example == report.rows["generalist"].flops_per_example
    assert report.config["init"] == str(run / "generalist") and report.config["alpha"] == 0.9
    meta = json.loads((student / "model.json").read_text())
    assert meta["metrics"]["teacher_fingerprints"] == [Ensemble.load(run).fingerprints]

    r = CliRunner().invoke(cli, ["generalist", "eval", "--run", str(student), "--data", data])
    assert r.exit_code == 0, r.output
    printed = json.loads(r.output[r.output.index("{") : r.output.rindex("}") + 1])  # after the progress bar
    assert printed["top1"] == pytest.approx(report.rows["student"].top1)

    round2 = tmp_path / "round2"
    cluster(ClusterConfig(generalist=str(student), data=data, out=str(round2 / "clusters"), n_groups=4), progress=False)
    train_all(
        SpecialistConfig(
            generalist=str(student),
            clusters=str(round2 / "clusters" / "clusters.json"),
            data=data,
            out=str(round2),
            epochs=1,
            batch_size=64,
            threads=1,
        ),
        local=True,
        echo=lambda *_: None,
    )
    ens2 = Ensemble.load(round2, generalist=student, device="cpu", all_specialists=True)
    assert ens2.fingerprints["generalist"] == report.fingerprints["student"] and len(ens2.specialists) == 4
    with pytest.raises(CheckpointError, match="clusters"):  # the first round's groups belong to the first generalist
        Ensemble.load(run, generalist=student, device="cpu")

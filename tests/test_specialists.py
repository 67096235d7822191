"""Specialists (docs/method.md §4): initialisation, enriched sampling, bias correction, regularisation."""

import math

import numpy as np
import pytest
import torch

from specens.data.format import InputSpec, load_info
from specens.data.parts import partition_split
from specens.data.shards import Split, iter_split
from specens.data.writer import DatasetWriter
from specens.generalist.checkpoint import load_generalist
from specens.specialists.model import (
    apply_correction,
    build_specialist,
    collapse,
    collapse_logits,
    dustbin_correction,
    hard_targets,
)
from specens.specialists.record import load_specialist
from specens.specialists.sampling import enriched_batches
from specens.specialists.train import SpecialistConfig, train_specialist


def test_collapse_by_hand():
    p = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.0, 1.0, 0.0, 0.0]])
    g = torch.tensor([1, 3])
    assert torch.allclose(collapse(p, g), torch.tensor([[0.2, 0.4, 0.4], [1.0, 0.0, 0.0]]))
    z = torch.randn(5, 9, dtype=torch.float64)
    g = torch.tensor([0, 4, 7])
    assert torch.allclose(torch.softmax(collapse_logits(z, g), 1), collapse(torch.softmax(z, 1), g))
    assert hard_targets(torch.tensor([4, 2, 0, 7]), g, 9).tolist() == [1, 3, 0, 2]


def test_dustbin_correction_by_hand():
    assert dustbin_correction(0.1) == pytest.approx(math.log(9.0))  # rho = 0.5: log((1 - pi) / pi)
    assert dustbin_correction(0.2, 0.3) == pytest.approx(math.log((0.3 / 0.2) / (0.7 / 0.8)))
    assert dustbin_correction(0.5, 0.5) == 0.0
    with pytest.raises(ValueError):
        dustbin_correction(0.0)
    z = torch.zeros(2, 3)
    assert apply_correction(z, 1.5)[:, -1].tolist() == [1.5, 1.5] and z.abs().sum() == 0


def test_initialisation_copies_the_generalist(glyph_generalist, glyph_ds):
    g = load_generalist(glyph_generalist).model
    group = torch.tensor([2, 5, 11, 17])
    batch = next(iter(iter_split(glyph_ds, "test", batch_size=120)))
    with torch.no_grad():
        train_feats = g.body(next(iter(iter_split(glyph_ds, "train", batch_size=600))).inputs)
    spec = build_specialist(g, group, train_feats).eval()
    assert torch.equal(spec.head.weight[:4], g.head.weight[group]) and torch.equal(
        spec.head.bias[:4], g.head.bias[group]
    )
    gs, ss = g.body.state_dict(), spec.body.state_dict()
    assert all(torch.equal(gs[k], ss[k]) for k in gs)  # every body weight copied
    assert spec.body is not g.body
    with torch.no_grad():
        target = collapse(torch.softmax(g(batch.inputs), 1), group)
        got = torch.softmax(spec(batch.inputs), 1)
        fallback = torch.softmax(build_specialist(g, group).eval()(batch.inputs), 1)
    # Held-out test faces: the least-squares dustbin row keeps the untrained specialist within
    # 0.05 of the generalist's collapsed distribution on average (total variation).
    tv = 0.5 * (got - target).abs().sum(1).mean()
    assert tv < 0.05, float(tv)
    assert tv < 0.5 * (0.5 * (fallback - target).abs().sum(1).mean())  # and beats the no-data fallback


def _skewed_dataset(root) -> str:
    """6 classes with natural frequencies 1:2:3:4:5:6 (repeated), 16-d inputs, 1,260 samples."""
    rng = np.random.default_rng(0)
    ys = np.concatenate([np.full(30 * (c + 1), c) for c in range(6)])
    rng.shuffle(ys)
    with DatasetWriter(
        root, "skewed", [f"c{c}" for c in range(6)], InputSpec("array", (16,), "float32"), shard_size=200
    ) as w:
        with w.split("train") as s:
            for i, y in enumerate(ys):
                s.write(f"k{i:05d}", rng.normal(size=16).astype(np.float32), int(y))
    return str(root)


def test_enriched_batches_are_half_special_with_natural_proportions(tmp_path):
    root = _skewed_dataset(tmp_path / "data")
    group = [1, 4]  # natural fraction: (2 + 5) / 21 = 1/3
    info = load_info(root)
    part = partition_split(
        root, "train", tmp_path / "parts", 1, lambda x, y: torch.isin(y, torch.tensor(group))[:, None], info=info
    )
    special = Split.of(part.root, "train", part.info(info, 0, "train"))
    stream = enriched_batches(Split.of(root, "train", info), group, special, 40, 60, 0.5, seed=3)
    special, rest, total = np.zeros(6), np.zeros(6), 0
    for epoch in range(2):
        stream.set_epoch(epoch)
        for b in stream:
            y = b.labels.numpy()
            assert np.isin(y[:20], group).all() and not np.isin(y[20:], group).any()  # exactly half
            special += np.bincount(y[:20], minlength=6)
            rest += np.bincount(y[20:], minlength=6)
            total += len(y)
    assert total == 2 * 60 * 40
    assert special[group].sum() / total == 0.5
    # Within each half, the natural class proportions (tolerance 0.04 in each class's share).
    np.testing.assert_allclose(special[group] / special.sum(), [2 / 7, 5 / 7], atol=0.04)
    np.testing.assert_allclose(rest[[0, 2, 3, 5]] / rest.sum(), np.array([1, 3, 4, 6]) / 14, atol=0.04)


def _cfg(run, out, **kw):
    base = dict(
        generalist=run["generalist"],
        clusters=run["clusters"],
        data=run["data"],
        out=str(out),
        epochs=3,
        batch_size=64,
        lr=3e-3,
        threads=1,
        checkpoint_every=0,
    )
    return SpecialistConfig(**{**base, **kw})


def _mean_dustbin(model, record, data, corrected: bool) -> float:
    ps = []
    with torch.no_grad():
        for b in iter_split(data, "test", 500):
            z = model(b.inputs)
            ps.append(torch.softmax(apply_correction(z, record.dustbin_correction) if corrected else z, 1)[:, -1])
    return float(torch.cat(ps).mean())


def test_bias_correction_restores_the_natural_dustbin_rate(tmp_path):
    """On heavily overlapping classes the specialist's posteriors are soft, so the 50/50 training
    prior shows: uncorrected, it calls the dustbin far less often than the natural rate 1 − π."""
    from specens.clustering.cluster import save_clusters
    from specens.data.synthetic import import_synthetic
    from specens.generalist.config import TrainConfig
    from specens.generalist.train import train_generalist

    data = str(tmp_path / "noisy")
    import_synthetic(data, n_classes=8, n_groups=4, dim=4, n_train=300, n_val=50, n_test=200, noise=3.0, seed=1)
    gen = train_generalist(
        TrainConfig(data=data, out=str(tmp_path / "gen"), epochs=2, model_kwargs={"hidden": [32]}, threads=1),
        progress=False,
    )
    info = load_info(data)
    save_clusters(tmp_path / "clusters.json", [np.array([0, 1])], info.classes, gen.fingerprint, {})
    run = {"generalist": gen.run_dir, "clusters": str(tmp_path / "clusters.json"), "data": data}
    test_counts = np.array(info.split("test").class_counts)
    true_rest = 1 - test_counts[[0, 1]].sum() / test_counts.sum()  # 0.75
    seen = {}
    for name, kw in (
        ("hard", {"alpha": 0.0}),
        ("soft-enriched", {"alpha": 0.5, "temperature": 1.0}),
        ("soft-natural", {"alpha": 0.5, "temperature": 1.0, "soft_prior": "natural"}),
    ):
        train_specialist(_cfg(run, tmp_path / name, epochs=4, **kw), 0)
        model, record = load_specialist(tmp_path / name / "specialists" / "s000")
        counts = np.array(info.split("train").class_counts)
        assert record.pi == pytest.approx(counts[[0, 1]].sum() / counts.sum()) == pytest.approx(0.25)
        assert record.dustbin_correction == pytest.approx(math.log(3.0))
        seen[name] = (_mean_dustbin(model, record, data, True), _mean_dustbin(model, record, data, False))
    g = load_generalist(gen.run_dir).model
    with torch.no_grad():
        gen_rest = float(
            torch.cat(
                [
                    collapse(torch.softmax(g(b.inputs), 1), torch.tensor([0, 1]))[:, -1]
                    for b in iter_split(data, "test", 500)
                ]
            ).mean()
        )
    # Hard targets: the formula restores the natural rate; without it the dustbin is under-called.
    corrected, uncorrected = seen["hard"]
    assert abs(corrected - true_rest) < 0.05 and true_rest - uncorrected > 0.1, seen
    # With soft targets the specialist also learns the generalist's calibration, so the corrected
    # rate tracks the generalist's own dustbin rate; literal soft targets overshoot it. (At T > 1
    # collapsing does not commute with the temperature: 2·LSE(z/2) > LSE(z), so T = 2 soft targets
    # inflate the dustbin logit by up to log of the number of outside classes; T = 1 here.)
    assert abs(seen["soft-enriched"][0] - gen_rest) < 0.05, (gen_rest, seen)
    assert seen["soft-natural"][0] - gen_rest > abs(seen["soft-enriched"][0] - gen_rest), (gen_rest, seen)


def test_checkpoints_of_another_config_are_refused_or_discarded_on_restart(synthetic_run, tmp_path):
    """The generalist's rerun policy (core.loop): refuse, naming the fields, or restart afresh."""
    from faults import FailOnce, InjectedFailure
    from safetensors.torch import load_file

    from specens.core.errors import CheckpointError

    with pytest.raises(InjectedFailure):  # leaves an epoch-1 checkpoint trained with lr 3e-3
        train_specialist(
            _cfg(synthetic_run, tmp_path / "run", epochs=2), 0, on_epoch_end=FailOnce(0, 0, tmp_path / "marker")
        )
    with pytest.raises(CheckpointError, match=r"another config \(lr: 0.003 -> 0.001\); rerun with --restart"):
        train_specialist(_cfg(synthetic_run, tmp_path / "run", epochs=2, lr=1e-3), 0)
    record = train_specialist(_cfg(synthetic_run, tmp_path / "run", epochs=2, lr=1e-3), 0, restart=True)
    assert [h.epoch for h in record.metrics.history] == [1, 2]  # started over, not resumed
    train_specialist(_cfg(synthetic_run, tmp_path / "fresh", epochs=2, lr=1e-3), 0)
    a = load_file(tmp_path / "run" / "specialists" / "s000" / "model.safetensors")
    b = load_file(tmp_path / "fresh" / "specialists" / "s000" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_specialist_saved_before_a_config_field_existed_is_reused_at_its_default(synthetic_run, tmp_path):
    import json

    from specens.specialists.record import META, specialist_dir
    from specens.specialists.train import is_complete

    cfg = _cfg(synthetic_run, tmp_path, epochs=1)
    record = train_specialist(cfg, 0)
    fps = record.generalist_fingerprint, record.clusters_fingerprint
    path = specialist_dir(tmp_path, 0) / META
    saved = json.loads(path.read_text())
    del saved["config_key"]["soft_prior"]  # as if written before the field existed
    path.write_text(json.dumps(saved))
    assert is_complete(cfg, 0, *fps)
    assert not is_complete(_cfg(synthetic_run, tmp_path, epochs=1, soft_prior="natural"), 0, *fps)
    assert not is_complete(_cfg(synthetic_run, tmp_path, epochs=2), 0, *fps)


# ----------------------------------------------------------------------------- shared trunk


def test_a_shared_trunk_specialist_is_a_whole_network_specialist_with_its_trunk_frozen():
    """Trained on the same batches, a specialist that owns only the body's last block (on the
    generalist's trunk) and a whole-body copy whose trunk is frozen predict the same q, in training
    and through the ensemble, where the trunk runs once for the generalist and every specialist."""
    from specens.generalist.checkpoint import Generalist, GeneralistRecord
    from specens.generalist.models import ModelSpec, mlp
    from specens.inference import Ensemble
    from specens.specialists.model import TrunkedSpecialist, specialist_loss, split_body

    torch.manual_seed(0)
    gen_model = mlp((16,), 10, hidden=[32, 24]).eval()
    group = torch.tensor([1, 4, 7])
    x = torch.randn(256, 16)
    feats = gen_model.body(x)
    whole = build_specialist(gen_model, group, feats)
    shared = build_specialist(gen_model, group, feats, top_blocks=1)
    assert isinstance(shared, TrunkedSpecialist)
    trunk, _ = split_body(whole.body, 1)
    for p in trunk.parameters():
        p.requires_grad_(False)
    assert set(shared.state_dict()) == {"own.body.3.weight", "own.body.3.bias", "own.head.weight", "own.head.bias"}
    before = [p.clone() for p in gen_model.parameters()]
    opts = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1) for m in (whole, shared)]
    y = torch.randint(0, 10, (256,))
    for step in range(20):
        rows = slice(32 * (step % 8), 32 * (step % 8 + 1))
        for model, opt in zip((whole, shared), opts, strict=True):
            loss = specialist_loss(model(x[rows]), y[rows], gen_model(x[rows]), group, 10, 0.5, 2.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert torch.allclose(whole(x), shared(x), atol=1e-5)
    assert not torch.allclose(whole(x), build_specialist(gen_model, group, feats)(x), atol=1e-3)  # both did train
    assert all(
        torch.equal(a, b) for a, b in zip(before, gen_model.parameters(), strict=True)
    )  # the shared trunk stayed frozen
    spec = ModelSpec("mlp", (16,), 10, {"hidden": [32, 24]})
    record = GeneralistRecord(
        fingerprint="f" * 16, weights_fingerprint="w" * 16, model=spec.to_json(), classes=list("abcdefghij"),
        config={}, metrics=None,
    )  # fmt: skip
    g = Generalist(gen_model, spec, record)
    q_whole = Ensemble(g, [group], [whole.eval()], [0.7]).predict_proba(x)
    ens = Ensemble(g, [group], [shared.eval()], [0.7], top_blocks=1)
    assert ens.trunk is not None and torch.allclose(ens.predict_proba(x), q_whole, atol=1e-5)
    assert ens.specialist_flops(x[:4]) < Ensemble(g, [group], [whole], [0.7]).specialist_flops(x[:4])


def test_shared_trunk_specialists_train_save_and_load(synthetic_run, tmp_path):
    import json
    import shutil

    from specens.inference import Ensemble
    from specens.inference.evaluate import evaluate_ensemble
    from specens.specialists.parallel import train_all

    for part in ("generalist", "clusters"):
        shutil.copytree(synthetic_run["root"] / part, tmp_path / part)
    cfg = SpecialistConfig(
        generalist=str(tmp_path / "generalist"),
        clusters=str(tmp_path / "clusters" / "clusters.json"),
        data=synthetic_run["data"],
        out=str(tmp_path),
        epochs=1,
        batch_size=64,
        threads=1,
        shared_trunk=1,
        alpha=0.5,  # soft targets from the generalist's top on the trunk's features (counted below)
    )
    train_all(cfg, local=True, echo=lambda *_: None)
    meta = json.loads((tmp_path / "specialists" / "s000" / "specialist.json").read_text())
    assert meta["top_blocks"] == 1
    ens = Ensemble.load(tmp_path, device="cpu", all_specialists=True)
    assert ens.trunk is not None
    # training ran the trunk once per batch: the soft targets from its features are the generalist's logits
    from specens.core.cost import forward_flops
    from specens.specialists.train import _teacher_top

    x = next(iter(iter_split(synthetic_run["data"], "val", 16))).inputs
    gen = ens.generalist.model
    assert torch.allclose(_teacher_top(gen, 1)(ens.trunk(x)), gen(x), atol=1e-6)
    cost = meta["cost"]
    # counted: the trunk once and the generalist's top for the soft targets, one generalist pass in all
    assert cost["teacher_flops_per_example"] == pytest.approx(forward_flops(gen, x[:8]))
    r = evaluate_ensemble(ens, synthetic_run["data"], "val", progress=False)
    assert r.ensemble.top1 > 0.5 and r.cost.inference.flops_per_example["specialist"] > 0
    with pytest.raises(Exception, match="shared_trunk"):
        SpecialistConfig(generalist="g", clusters="c", data="d", out="o", shared_trunk=-1)


def test_a_widened_block_computes_the_same_function_and_its_copies_learn_apart():
    """Net2WiderNet (docs/method.md §4, initialisation): 3x the inner channels, the block's output
    unchanged in eval and in training mode (float64), and one step of SGD moves the copies of a
    channel differently, so that the extra capacity is not k copies of one unit forever."""
    from specens.generalist.models import _Residual
    from specens.specialists.model import widen_block

    torch.manual_seed(0)
    block = _Residual(8, 16, stride=2).double()
    with torch.no_grad():  # statistics and scales as a trained block has them
        for bn in (block.bn1, block.bn2, block.shortcut[1]):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
    wide = widen_block(block, 3)
    assert wide.conv1.out_channels == wide.bn1.num_features == wide.conv2.in_channels == 48
    x = torch.randn(20, 8, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(wide.eval()(x), block.eval()(x), atol=1e-10)
        assert torch.allclose(wide.train()(x), block.train()(x), atol=1e-10)
    opt = torch.optim.SGD(wide.parameters(), lr=0.1)
    wide.train()(x).square().sum().backward()
    opt.step()
    w = wide.conv1.weight.detach().reshape(3, 16, -1)  # (copy, channel, ...)
    assert (w[0] - w[1]).abs().max() > 1e-4 and (w[1] - w[2]).abs().max() > 1e-4
    assert torch.equal(widen_block(block, 1).conv1.weight, block.conv1.weight)
    with pytest.raises(ValueError, match="basic residual blocks"):
        widen_block(torch.nn.Linear(4, 4), 2)


def test_widened_shared_trunk_specialists_start_as_the_generalist_train_save_and_load(
    glyph_generalist, glyph_ds, tmp_path
):
    """``widen=2``: the untrained specialist predicts what the unwidened one does; trained, its
    record says so and it loads with its wider block; a widen without a shared trunk is refused by
    name."""
    import json
    import shutil

    from specens.clustering.cluster import ClusterConfig, cluster
    from specens.core.errors import ConfigError
    from specens.specialists.parallel import train_all

    g = load_generalist(glyph_generalist).model
    group = torch.tensor([2, 5, 11, 17])
    x = next(iter(iter_split(glyph_ds, "test", batch_size=64))).inputs
    with torch.no_grad():
        feats = g.body(x)
        narrow = build_specialist(g, group, feats, top_blocks=1).eval()
        wide = build_specialist(g, group, feats, top_blocks=1, widen=2).eval()
        assert torch.allclose(wide(x), narrow(x), atol=1e-4)
    assert sum(p.numel() for p in wide.parameters()) > 1.5 * sum(p.numel() for p in narrow.parameters())
    with pytest.raises(ValueError, match="top_blocks"):
        build_specialist(g, group, widen=2)

    shutil.copytree(glyph_generalist, tmp_path / "generalist")
    cluster(ClusterConfig(generalist=str(tmp_path / "generalist"), data=glyph_ds, out=str(tmp_path / "clusters"),
                          n_groups=4), progress=False)  # fmt: skip
    cfg = SpecialistConfig(
        generalist=str(tmp_path / "generalist"),
        clusters=str(tmp_path / "clusters" / "clusters.json"),
        data=glyph_ds,
        out=str(tmp_path),
        epochs=1,
        batch_size=32,
        threads=0,
        shared_trunk=1,
        widen=2,
    )
    train_all(cfg, local=True, echo=lambda *_: None, indices=[0])
    assert json.loads((tmp_path / "specialists" / "s000" / "specialist.json").read_text())["widen"] == 2
    s0, record = load_specialist(tmp_path / "specialists" / "s000", generalist_model=g)
    assert record.widen == 2 and s0.own.body[0].bn1.num_features == 2 * g.body[-4].bn1.num_features
    with pytest.raises(ConfigError, match="widen"):
        SpecialistConfig(generalist="g", clusters="c", data="d", out="o", widen=0)
    with pytest.raises(ConfigError, match="widen"):
        train_specialist(SpecialistConfig(**{**cfg.__dict__, "shared_trunk": 0, "out": str(tmp_path / "b")}), 1)


def test_default_length_matches_the_generalists_presentations(synthetic_run, tmp_path):
    """``epochs = 0`` (the default) gives each group example as many presentations as the
    generalist gave each of its training examples: 3 epochs for a generalist trained for 3."""
    from specens.specialists.train import matched_epochs

    gen = load_generalist(synthetic_run["generalist"])
    assert gen.record.metrics.epochs_run == 3
    assert matched_epochs(gen, load_info(synthetic_run["data"])) == 3
    record = train_specialist(_cfg(synthetic_run, tmp_path, epochs=0), 0)
    assert record.metrics.epochs_run == 3 and record.config["epochs"] == 0


def test_learning_rate_chosen_on_validation(synthetic_run, tmp_path):
    """``lr = 0`` (the default) trains each candidate for an epoch and keeps the one with the lowest
    routed-validation NLL; its trials, and their cost, are in the record. A given lr trains alone."""
    from specens.specialists.train import LR_CANDIDATES

    chosen = train_specialist(_cfg(synthetic_run, tmp_path / "auto", epochs=1, lr=0.0), 0)
    assert [t["lr"] for t in chosen.lr_trials] == list(LR_CANDIDATES)
    assert chosen.lr == min(chosen.lr_trials, key=lambda t: t["val_nll"])["lr"]
    fixed = train_specialist(_cfg(synthetic_run, tmp_path / "fixed", epochs=1, lr=3e-3), 0)
    assert fixed.lr == 3e-3 and fixed.lr_trials == []
    # the trials are paid for: three more epochs' examples than the one trained
    assert chosen.cost.examples == 4 * fixed.cost.examples and chosen.cost.epochs == fixed.cost.epochs == 1


def test_an_interrupted_specialist_resumes_without_rerunning_its_rate_trials(synthetic_run, tmp_path, monkeypatch):
    """The learning-rate trials (three one-epoch runs) are kept in the work directory: a resumed
    specialist reads them instead of running them again, and ends as an uninterrupted one does."""
    from faults import FailOnce, InjectedFailure
    from safetensors.torch import load_file

    import specens.specialists.train as train

    with pytest.raises(InjectedFailure):
        train_specialist(
            _cfg(synthetic_run, tmp_path / "run", epochs=2, lr=0.0), 0, on_epoch_end=FailOnce(0, 0, tmp_path / "m")
        )
    ran = train._lr_trials
    monkeypatch.setattr(train, "_lr_trials", lambda *a: pytest.fail("the trials ran again"))
    resumed = train_specialist(_cfg(synthetic_run, tmp_path / "run", epochs=2, lr=0.0), 0)
    monkeypatch.setattr(train, "_lr_trials", ran)
    whole = train_specialist(_cfg(synthetic_run, tmp_path / "whole", epochs=2, lr=0.0), 0)
    assert resumed.lr == whole.lr and resumed.lr_trials == whole.lr_trials
    assert resumed.cost.examples == whole.cost.examples  # the trials are still paid for
    a = load_file(tmp_path / "run" / "specialists" / "s000" / "model.safetensors")
    b = load_file(tmp_path / "whole" / "specialists" / "s000" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_learning_rate_trial_is_a_typed_record():
    """lr_trials.json's rows: a diverged trial's losses stored as null read back as infinity, a
    trial without routed validation has no val_nll and is judged on its training loss, and a
    malformed row is refused by key."""
    import math

    from specens.core.errors import CheckpointError
    from specens.specialists.train import LrTrial

    diverged = LrTrial(lr=1e-2, train_loss=math.inf, val_nll=math.inf, examples=64, steps=2, seconds=0.5)
    assert diverged.to_json()["train_loss"] is None and LrTrial.from_json(diverged.to_json(), "t") == diverged
    unrouted = LrTrial(lr=3e-3, train_loss=0.7, val_nll=None, examples=64, steps=2, seconds=0.5)
    assert "val_nll" not in unrouted.to_json() and LrTrial.from_json(unrouted.to_json(), "t") == unrouted
    assert unrouted.loss == 0.7 and min([diverged, unrouted], key=lambda t: t.loss) is unrouted
    with pytest.raises(CheckpointError, match="t: 'steps' must be an int >= 0"):
        LrTrial.from_json({**unrouted.to_json(), "steps": "2"}, "t")

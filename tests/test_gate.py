"""The specialists' validation gate and routed validation (issue 15), and the cost they record."""

import numpy as np
import pytest
import torch

from specens.core.cost import BACKWARD_FACTOR, OPTIMIZER_FLOPS_PER_PARAMETER
from specens.data.shards import iter_split
from specens.generalist.checkpoint import load_generalist
from specens.inference.combine import _newton, combine_distributions
from specens.specialists.gate import RoutedValidation, gate_on
from specens.specialists.model import build_specialist, combine_one, dustbin_correction
from specens.specialists.train import SpecialistConfig, train_specialist


@pytest.mark.parametrize("w", [1.0, 0.3, 4.0])
def test_combine_one_is_the_kl_solve_with_one_specialist(w):
    """The closed form for one active specialist against the iterative methods, float64: Newton
    (which combine_distributions no longer uses for one specialist) and EM."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = int(rng.integers(3, 30))
        group = torch.from_numpy(np.sort(rng.choice(c, size=int(rng.integers(1, c)), replace=False)))
        pg = torch.from_numpy(rng.dirichlet(np.full(c, 0.3), 16))
        pm = torch.from_numpy(rng.dirichlet(np.full(len(group) + 1, 0.3), 16))
        act = torch.ones(16, 1, dtype=torch.bool)
        newton = _newton(pg, [w * pm], [group], act, w, tol=1e-13, max_iter=100)
        em = combine_distributions(pg, [pm], [group], act, method="em", tol=1e-14, specialist_weight=w)
        got = combine_one(pg, pm, group, w)
        assert torch.allclose(got, newton, atol=1e-9), (got - newton).abs().max()
        assert torch.allclose(got, em, atol=1e-6), (got - em).abs().max()
        assert torch.allclose(got.sum(1), torch.ones(16, dtype=torch.float64))


def test_gate_by_hand():
    assert gate_on({"correct": 10, "nll": 0.5}, {"correct": 11, "nll": 0.4})
    assert not gate_on({"correct": 10, "nll": 0.5}, {"correct": 11, "nll": 0.9})  # one more right, NLL worse: off
    assert not gate_on({"correct": 10, "nll": 0.5}, {"correct": 9, "nll": 0.1})  # NLL better, one fewer right: off
    assert gate_on({"correct": 10, "nll": 0.5}, {"correct": 10, "nll": 0.4})  # as many right: lower NLL
    assert not gate_on({"correct": 10, "nll": 0.5}, {"correct": 10, "nll": 0.5})  # no improvement: off
    assert not gate_on({"correct": 0, "nll": 0.0}, {"correct": 0, "nll": 0.0})  # nothing routed: off


def _weak_and_strong(synthetic_ds, strong_dir, tmp_path):
    from specens.generalist.config import TrainConfig
    from specens.generalist.train import train_generalist

    res = train_generalist(
        TrainConfig(
            data=synthetic_ds,
            out=str(tmp_path / "weak"),
            epochs=1,
            lr=1e-4,
            batch_size=64,
            model_kwargs={"hidden": [64]},
            threads=0,
            patience=0,
            checkpoint_every=0,
        ),
        progress=False,
    )
    # strong: the session's generalist of the same config, 4 epochs at lr 3e-3
    return load_generalist(res.run_dir), load_generalist(strong_dir)


def test_routed_validation_keeps_what_inference_routes_and_gates_useless_and_good_specialists(
    synthetic_ds, strong_synthetic_generalist, tmp_path
):
    """Routed examples: exactly those whose top-n classes meet the group (brute force). A
    specialist copied from a stronger generalist improves the weak one there and is gated on; one
    from an untrained net is gated off."""
    weak, strong = _weak_and_strong(synthetic_ds, strong_synthetic_generalist, tmp_path)
    group = torch.tensor([0, 1, 2])
    corr = dustbin_correction(3 / weak.n_classes)
    x, y = zip(*[(b.inputs, b.labels) for b in iter_split(synthetic_ds, "val", 64)], strict=True)
    x, y = torch.cat(x), torch.cat(y)
    with torch.no_grad():
        p = torch.softmax(weak.model(x), 1).double()
    for top_n in (1, 2):
        routed = RoutedValidation.collect(weak.model, iter_split(synthetic_ds, "val", 64), group, 0.0, top_n, "cpu")
        want = [i for i in range(len(y)) if set(p[i].topk(top_n).indices.tolist()) & {0, 1, 2}]
        assert torch.equal(routed.labels, y[want]) and torch.allclose(routed.p_general, p[want])
    routed = RoutedValidation.collect(weak.model, iter_split(synthetic_ds, "val", 64), group, corr, 1, "cpu")
    assert len(routed) > 20
    gen = routed.generalist_score()
    assert gen["correct"] == int((p[routed_rows(p, group)].argmax(1) == y[routed_rows(p, group)]).sum())

    feats = torch.cat([strong.model.body(b.inputs) for b in iter_split(synthetic_ds, "train", 256)]).detach()
    good = build_specialist(strong.model, group, feats)  # the strong generalist, collapsed onto S ∪ {d}
    good.head.bias.data[-1] -= corr  # stored weights are uncorrected: undo what the score adds back
    assert gate_on(gen, routed.score(good, "cpu")), (gen, routed.score(good, "cpu"))

    from specens.generalist.models import mlp

    torch.manual_seed(0)
    useless = build_specialist(mlp(weak.spec.input_shape, weak.n_classes, hidden=[64]), group)
    useless.head.bias.data[0] += 8.0  # and sure of its first class
    assert not gate_on(gen, routed.score(useless, "cpu"))


def routed_rows(p, group):
    return torch.isin(p.argmax(1), group)


def _cfg(run, out, **kw):
    return SpecialistConfig(
        **{
            **dict(
                generalist=run["generalist"],
                clusters=run["clusters"],
                data=run["data"],
                out=str(out),
                epochs=2,
                batch_size=64,
                lr=3e-3,
                threads=1,
            ),
            **kw,
        }
    )


def _paths(run):
    return {"generalist": run["generalist"], "clusters": run["clusters"]}


def test_on_validation_the_gated_ensemble_is_never_below_its_generalist(synthetic_run, tmp_path):
    """Disjoint groups, top-1 routing: every validation example meets at most one specialist, so
    the ensemble's gain there is the sum of the kept specialists' gate gains, never negative; with
    every specialist forced on it is the sum over all of them."""
    from specens.inference import Ensemble
    from specens.inference.evaluate import evaluate_ensemble

    metas = [train_specialist(_cfg(synthetic_run, tmp_path), m) for m in range(3)]
    metas.append(train_specialist(_cfg(synthetic_run, tmp_path, lr=1.0, alpha=0.0, warmup=0.0), 3))  # wrecked by its lr
    gains = [m.gate.combined["correct"] - m.gate.generalist["correct"] for m in metas]
    on = [m.gate.on for m in metas]
    assert any(on) and not all(on), [m.gate.why for m in metas]  # both cases are exercised
    assert all(
        g >= 0 and m.gate.combined["nll"] < m.gate.generalist["nll"]
        for g, m, o in zip(gains, metas, on, strict=True)
        if o
    )
    for forced in (False, True):
        ens = Ensemble.load(tmp_path, device="cpu", all_specialists=forced, **_paths(synthetic_run))
        assert ens.indices == [m for m in range(4) if forced or on[m]]
        assert ens.gated_off == ([] if forced else [m for m in range(4) if not on[m]])
        r = evaluate_ensemble(ens, synthetic_run["data"], "val", progress=False)
        delta = round((r.ensemble.top1 - r.generalist.top1) * r.n)
        assert delta == sum(g for g, o in zip(gains, on, strict=True) if forced or o)
        nll_delta = (r.ensemble.nll - r.generalist.nll) * r.n  # summed log-loss is additive too
        assert nll_delta == pytest.approx(
            sum(
                m.gate.routed * (m.gate.combined["nll"] - m.gate.generalist["nll"])
                for m, o in zip(metas, on, strict=True)
                if forced or o
            ),
            abs=1e-3,
        )
        if not forced:
            assert delta >= 0 and nll_delta < 0


def test_gated_off_specialists_stay_out_of_inference_unless_forced(synthetic_run, ensemble_run, tmp_path):
    import json
    import shutil

    from specens.inference import Ensemble
    from specens.specialists.record import META, specialist_dir, specialist_fingerprint

    # the session's 4 specialists of synthetic_run's generalist and groups, copied: only their records are edited
    shutil.copytree(ensemble_run["root"] / "specialists", tmp_path / "specialists")
    for m in range(4):
        path = specialist_dir(tmp_path, m) / META
        meta = json.loads(path.read_text())
        meta["gate"]["on"] = m != 2  # the gate is in the record's fingerprint: re-decided, the record is re-sealed
        meta["fingerprint"] = specialist_fingerprint(meta)
        path.write_text(json.dumps(meta))
    ens = Ensemble.load(tmp_path, device="cpu", **_paths(synthetic_run))
    assert ens.indices == [0, 1, 3] and ens.gated_off == [2] and len(ens.specialists) == 3
    assert Ensemble.load(tmp_path, device="cpu", all_specialists=True, **_paths(synthetic_run)).indices == [0, 1, 2, 3]


def test_cost_is_recorded_and_consistent_with_steps_and_batch_size(synthetic_run, tmp_path):
    from specens.core.cost import forward_flops

    cfg = _cfg(synthetic_run, tmp_path, epochs=3, patience=0, alpha=0.5)  # soft targets: the generalist's pass counted
    record = train_specialist(cfg, 1)
    cost, hist = record.cost, record.metrics.history
    assert cost.steps == sum(h.steps for h in hist) and cost.epochs == len(hist) == 3
    assert cost.examples == cost.steps * cfg.batch_size  # enriched batches are always full
    gen = load_generalist(synthetic_run["generalist"])
    x = next(iter(iter_split(synthetic_run["data"], "val", 8))).inputs
    from specens.specialists.record import load_specialist

    model, _ = load_specialist(specialist_dir_of(tmp_path, 1))
    f, f_t, n = forward_flops(model, x), forward_flops(gen.model, x), sum(p.numel() for p in model.parameters())
    assert f > 0 and cost.flops_per_example == pytest.approx(f) and cost.teacher_flops_per_example == pytest.approx(f_t)
    assert cost.train_flops == pytest.approx(
        cost.examples * (BACKWARD_FACTOR * f + f_t) + cost.steps * OPTIMIZER_FLOPS_PER_PARAMETER * n
    )
    assert 0 < cost.train_seconds <= cost.wall_seconds
    assert cost.overhead_seconds == pytest.approx(
        cost.wall_seconds - cost.train_seconds - cost.validation_seconds, abs=1e-6
    )
    g = gen.record.metrics.cost  # the generalist's: every epoch is one pass over the training split
    n_train = sum(load_info_counts(synthetic_run["data"]))
    assert g.examples == g.epochs * n_train and g.steps == g.epochs * -(-n_train // 64)


def specialist_dir_of(out, m):
    from specens.specialists.record import specialist_dir

    return specialist_dir(out, m)


def load_info_counts(data):
    from specens.data.format import load_info

    return load_info(data).split("train").class_counts

"""Precise batch norm (core/batchnorm.py): the recomputed statistics against a brute-force pass,
and the training loop validating and exporting with them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from specens.core.batchnorm import batch_norms, recompute_batch_norm
from specens.generalist.models import resnet


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 8),
        nn.BatchNorm1d(8),
        nn.Linear(8, 3),
    )


@torch.no_grad()
def _brute_force(model: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each batch-norm layer's input over all of ``x`` in float64, the layers normalising with
    their own ``batches``' statistics; returns (mean, unbiased variance) per channel per layer."""
    inputs: dict[nn.Module, list[torch.Tensor]] = {m: [] for m in batch_norms(model)}
    hooks = [m.register_forward_pre_hook(lambda m, a: inputs[m].append(a[0].double())) for m in inputs]
    model.eval()
    for m in inputs:
        m.train()
    for chunk in x.split(7):  # the same batches the recomputation sees
        model(chunk)
    for h in hooks:
        h.remove()
    out = []
    for m in batch_norms(model):
        a = torch.cat(inputs[m]).transpose(0, 1).reshape(m.num_features, -1)  # (C, N · positions)
        out.append((a.mean(1), a.var(1, unbiased=True)))
    return out


def test_recomputed_statistics_equal_a_full_pass():
    model = _net()
    x = torch.randn(40, 1, 6, 6) * 3 + 1  # 40 examples in batches of 7 (the last one 5)
    reference = _brute_force(copy.deepcopy(model), x)
    model.train()
    for b in x.split(7):  # a few training-mode steps: stale exponential averages
        model(b)
    tracked = [int(m.num_batches_tracked) for m in batch_norms(model)]
    seen = recompute_batch_norm(model, iter(x.split(7)))
    assert seen == 40
    for m, (mean, var) in zip(batch_norms(model), reference, strict=True):
        torch.testing.assert_close(m.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m.running_var.double(), var, rtol=1e-5, atol=1e-6)
    # modes, momenta and counters are restored; weights untouched
    assert model.training and all(m.training for m in model.modules())
    assert [int(m.num_batches_tracked) for m in batch_norms(model)] == tracked
    assert all(m.momentum == 0.1 for m in batch_norms(model))


def test_pooled_statistics_are_not_an_average_of_batch_statistics():
    """Batches of different means: the pooled variance includes the spread between them, which an
    average of per-batch variances (momentum None) misses."""
    bn = nn.BatchNorm1d(1)
    batches = [torch.zeros(4, 1), torch.full((4, 1), 2.0)]
    recompute_batch_norm(bn, iter(batches))
    assert float(bn.running_mean) == pytest.approx(1.0)
    assert float(bn.running_var) == pytest.approx(8 / 7)  # eight values 0 or 2 about 1, unbiased


def test_without_batch_norm_nothing_is_read():
    model = nn.Sequential(nn.Linear(3, 2))

    def batches():
        raise AssertionError("read")
        yield

    assert recompute_batch_norm(model, batches()) == 0


def test_eval_mode_reads_the_recomputed_statistics():
    """After recomputation, eval mode on the same data normalises each layer's input to mean 0 and
    variance 1 up to the (n - 1) / n of the unbiased estimate: the net predicts as in training."""
    torch.manual_seed(1)
    model = resnet((1, 8, 8), 5, width=4, dropout=0.0)
    x = torch.randn(64, 1, 8, 8)
    model.train()
    with torch.no_grad():
        batch_mode = model(x)
    recompute_batch_norm(model, [x])
    model.eval()
    with torch.no_grad():
        eval_mode = model(x)
    torch.testing.assert_close(eval_mode, batch_mode, rtol=0.05, atol=0.05)


@pytest.mark.slow
def test_small_data_run_exports_what_it_validated(glyph_ds, tmp_path):
    """The run of issue 43 (a third of the 30-class glyph split, a few epochs): with the running
    averages as trained, every epoch validated at chance (one class for every example) and epoch 1
    was exported; now the exported net reads validation exactly as its best epoch was validated,
    and well above chance."""
    from specens.generalist.config import TrainConfig
    from specens.generalist.evaluate import evaluate_generalist
    from specens.generalist.train import train_generalist

    out = str(tmp_path / "g")
    cfg = TrainConfig(data=glyph_ds, out=out, epochs=4, patience=5, train_fraction=0.35, threads=0)
    result = train_generalist(cfg, progress=False)
    best = result.history[result.best_epoch - 1]
    assert all(r.bn_examples > 0 for r in result.history)
    val = evaluate_generalist(out, glyph_ds, "val", progress=False)
    assert val["top1"] == pytest.approx(best.val_top1, abs=1e-9)
    assert val["top1"] >= 4 / 30, f"exported net at {val['top1']:.3f}, chance is {1 / 30:.3f}"
    record = json.loads((Path(out) / "model.json").read_text())
    assert record["config"]["bn_batches"] == 32

"""The distillation loss (METHOD §1) against float64 references and its known limits."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from specens.generalist.losses import distillation_loss, ensemble_soft_targets, soft_targets


def _np_softmax(z, t=1.0):
    e = np.exp((z - z.max(-1, keepdims=True)) / t)
    return e / e.sum(-1, keepdims=True)


def _reference(z, y, p, alpha, t):
    """METHOD §1 written out in float64 NumPy, independently of the implementation."""
    q_t = _np_softmax(z, t)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(p > 0, p * (np.log(p) - np.log(q_t)), 0.0).sum(-1).mean()
    lab = y >= 0
    ce = -np.log(_np_softmax(z[lab])[np.arange(lab.sum()), y[lab]]).mean() if lab.any() else 0.0
    return alpha * t**2 * kl + (1 - alpha) * ce


@pytest.mark.parametrize("alpha,t", [(0.9, 1.0), (0.5, 2.0), (0.9, 20.0), (1.0, 5.0), (0.0, 3.0)])
def test_loss_matches_float64_reference(alpha, t):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (16, 10))
    p = _np_softmax(rng.normal(0, 3, (16, 10)), t)
    p[0, :3] = 0.0  # exact zeros in the soft targets
    p[0] /= p[0].sum()
    y = rng.integers(0, 10, 16)
    y[:4] = -1  # unlabelled examples: hard term dropped
    got = distillation_loss(torch.tensor(z), torch.tensor(y), torch.tensor(p), alpha=alpha, temperature=t)
    assert float(got) == pytest.approx(_reference(z, y, p, alpha, t), rel=1e-5)


def test_alpha_zero_is_plain_cross_entropy():
    z, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    p = torch.softmax(torch.randn(8, 5), -1)
    assert torch.allclose(distillation_loss(z, y, p, alpha=0.0, temperature=4.0), F.cross_entropy(z, y))
    assert torch.allclose(distillation_loss(z, y, None), F.cross_entropy(z, y))


def test_soft_gradient_is_T_times_q_minus_p():
    """d(T² KL)/dz = T (softmax_T(z) − p): the analytic gradient, checked through autograd."""
    z = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    v = torch.randn(4, 7, dtype=torch.float64)
    for t in (1.0, 3.0, 10.0):
        p = soft_targets(v, t).double()
        (g,) = torch.autograd.grad(distillation_loss(z, None, p, alpha=1.0, temperature=t), z)
        expected = t * (torch.softmax(z / t, -1) - p) / 4  # mean over the batch of 4
        assert torch.allclose(g, expected.to(g.dtype), atol=1e-6)


def test_T_squared_keeps_soft_gradient_size_independent_of_T():
    """Without T² the soft gradient shrinks like 1/T²; with it, its size settles as T grows."""
    torch.manual_seed(0)
    z = torch.randn(32, 10, dtype=torch.float64)
    v = torch.randn(32, 10, dtype=torch.float64)
    norms = []
    for t in (5.0, 10.0, 20.0, 40.0):
        zz = z.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(distillation_loss(zz, None, soft_targets(v, t).double(), alpha=1.0, temperature=t), zz)
        norms.append(float(g.norm()))
    assert max(norms) / min(norms) < 1.25  # the unscaled gradient would change by 64x over this range


def test_high_temperature_limit_is_logit_matching():
    """METHOD §1: at high T with zero-mean logits, the unscaled soft gradient ≈ (z − v)/(N T²)."""
    torch.manual_seed(1)
    n = 10
    z = torch.randn(1, n, dtype=torch.float64)
    v = torch.randn(1, n, dtype=torch.float64)
    z, v = z - z.mean(), v - v.mean()
    t = 200.0
    zz = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(distillation_loss(zz, None, soft_targets(v, t).double(), alpha=1.0, temperature=t), zz)
    unscaled = g / t**2
    assert torch.allclose(unscaled, (z - v) / (n * t**2), rtol=2e-2, atol=0)


def test_no_labels_drops_hard_term():
    z = torch.randn(6, 4)
    p = torch.softmax(torch.randn(6, 4), -1)
    unlabelled = torch.full((6,), -1)
    a = distillation_loss(z, unlabelled, p, alpha=0.7, temperature=2.0)
    b = distillation_loss(z, None, p, alpha=0.7, temperature=2.0)
    assert torch.allclose(a, b)
    assert torch.allclose(a, 0.7 * 4.0 * (p * (p.log() - torch.log_softmax(z / 2, -1))).sum(-1).mean())


def test_ensemble_means_by_hand():
    z1 = torch.tensor([[0.0, 1.0, 2.0]])
    z2 = torch.tensor([[2.0, 0.0, -1.0]])
    p1, p2 = torch.softmax(z1 / 2, -1), torch.softmax(z2 / 2, -1)
    assert torch.allclose(ensemble_soft_targets([z1, z2], 2.0, "arithmetic"), (p1 + p2) / 2)
    geo = torch.sqrt(p1 * p2)
    assert torch.allclose(ensemble_soft_targets([z1, z2], 2.0, "geometric"), geo / geo.sum())
    with pytest.raises(ValueError, match="arithmetic"):
        ensemble_soft_targets([z1], 1.0, "median")


def test_golden_values():
    """Pinned values on fixed inputs (from the float64 reference above): a change must be deliberate."""
    z = torch.tensor([[1.0, -0.5, 0.25], [0.0, 2.0, -1.0]])
    y = torch.tensor([0, 2])
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    assert float(distillation_loss(z, y, p, alpha=0.9, temperature=2.0)) == pytest.approx(0.600632, abs=1e-5)
    assert float(distillation_loss(z, y, None)) == pytest.approx(1.848911, abs=1e-5)

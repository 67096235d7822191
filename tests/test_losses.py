"""The distillation loss (docs/method.md §1) against float64 references and its known limits."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from specens.generalist.losses import distillation_loss, ensemble_soft_targets, soft_targets, temper


def _np_softmax(z, t=1.0):
    e = np.exp((z - z.max(-1, keepdims=True)) / t)
    return e / e.sum(-1, keepdims=True)


def _reference(z, y, p, alpha, t):
    """docs/method.md §1 written out in float64 NumPy, independently of the implementation."""
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
        (g,) = torch.autograd.grad(
            distillation_loss(zz, None, soft_targets(v, t).double(), alpha=1.0, temperature=t), zz
        )
        norms.append(float(g.norm()))
    assert max(norms) / min(norms) < 1.25  # the unscaled gradient would change by 64x over this range


def test_high_temperature_limit_is_logit_matching():
    """docs/method.md §1: at high T with zero-mean logits, the unscaled soft gradient ≈ (z − v)/(N T²)."""
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


# -- temper: the temperature of a distribution that is not a softmax (issue 16) -------------------


def test_temper_by_hand():
    """q = (1/2, 1/4, 1/4) at T = 2: the square roots (√½, ½, ½) renormalised = (√2 − 1, 1 − √2/2, 1 − √2/2)."""
    got = temper(torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64), 2.0)
    r2 = np.sqrt(2.0)
    assert np.allclose(got.numpy(), [[r2 - 1, 1 - r2 / 2, 1 - r2 / 2]], atol=1e-12)


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0, 4.0, 20.0])
def test_temper_of_a_softmax_is_the_softmax_at_that_temperature(t):
    z = torch.randn(32, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    assert torch.allclose(temper(torch.softmax(z, -1), t), soft_targets(z, t).double(), atol=1e-6)
    assert torch.allclose(temper(torch.softmax(z, -1), t), torch.from_numpy(_np_softmax(z.numpy(), t)), atol=1e-12)


def test_temper_of_an_ensemble_q_against_numpy_power():
    """On q from the exact KL solve (docs/method.md §5), temper is q^(1/T) / Σ q^(1/T) in float64 NumPy;
    T = 1 returns q; an exact zero stays zero at every T."""
    from specens.inference.combine import combine_distributions

    g = torch.Generator().manual_seed(2)
    p_g = torch.softmax(torch.randn(6, 12, generator=g, dtype=torch.float64) * 2, -1)
    groups = [torch.tensor([0, 1, 2, 3]), torch.tensor([3, 4, 5])]
    p_specs = [torch.softmax(torch.randn(6, len(s) + 1, generator=g, dtype=torch.float64) * 2, -1) for s in groups]
    active = torch.ones(6, 2, dtype=torch.bool)
    q = combine_distributions(p_g, p_specs, groups, active, method="newton")
    for t in (0.5, 2.0, 5.0):
        ref = q.numpy() ** (1 / t)
        assert np.allclose(temper(q, t).numpy(), ref / ref.sum(-1, keepdims=True), atol=1e-10)
    assert torch.allclose(temper(q, 1.0), q, atol=1e-12)
    z = torch.tensor([[0.0, 0.6, 0.4]])
    assert temper(z, 3.0)[0, 0] == 0 and temper(z, 3.0).sum() == pytest.approx(1.0)


def test_distillation_from_an_ensemble_q_by_hand():
    """The student's loss on one example, written out: q = (1/2, 1/4, 1/4), T = 2, α = 0.5, label
    0, student logits 0 (uniform at every T): 0.5 · 4 · KL(q_T ‖ uniform) + 0.5 · ln 3, with
    q_T = (√2 − 1, 1 − √2/2, 1 − √2/2) and KL(q_T ‖ uniform) = ln 3 + Σ q_T ln q_T."""
    r2 = np.sqrt(2.0)
    q_t = np.array([r2 - 1, 1 - r2 / 2, 1 - r2 / 2])
    expected = 0.5 * 4 * (np.log(3) + (q_t * np.log(q_t)).sum()) + 0.5 * np.log(3)
    soft = temper(torch.tensor([[0.5, 0.25, 0.25]]), 2.0)
    got = distillation_loss(torch.zeros(1, 3), torch.tensor([0]), soft, alpha=0.5, temperature=2.0)
    assert float(got) == pytest.approx(expected, rel=1e-6)

"""The KL combination (docs/method.md §5) against an independent float64 reference and its special cases."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from specens.inference.combine import _em, _newton, combine_distributions, objective


def _reference(pg, ps, groups, act, w=1.0):
    """Independent solver: SLSQP on the simplex in float64 (scipy), best of two starts; the
    specialists' terms weighted by w."""
    c = len(pg)

    def f(q):
        q = np.clip(q, 1e-300, None)
        v = -(pg * np.log(q)).sum()
        for p, g, a in zip(ps, groups, act, strict=True):
            if a:
                v -= w * ((p[:-1] * np.log(q[g])).sum() + p[-1] * np.log(max(1 - q[g].sum(), 1e-300)))
        return v

    runs = [
        minimize(
            f,
            x0,
            method="SLSQP",
            bounds=[(1e-15, 1)] * c,
            options={"ftol": 1e-15, "maxiter": 3000},
            constraints=[{"type": "eq", "fun": lambda q: q.sum() - 1}],
        )
        for x0 in (pg, np.full(c, 1 / c))
    ]
    return min(r.fun for r in runs)


def _instance(rng, b=4, zeros=False):
    c = int(rng.integers(3, 16))
    m = int(rng.integers(1, 5))
    groups = [np.sort(rng.choice(c, size=int(rng.integers(1, c)), replace=False)) for _ in range(m)]  # may overlap
    pg = rng.dirichlet(np.full(c, 0.5), b)
    ps = [rng.dirichlet(np.full(len(g) + 1, 0.5), b) for g in groups]
    if zeros:  # exact zeros and ones in the specialists
        ps[0][0] = 0.0
        ps[0][0, -1] = 1.0
        if len(groups[0]) > 1:
            ps[0][1, 0] = 0.0
            ps[0][1] /= ps[0][1].sum()
    act = rng.random((b, m)) < 0.7
    t = lambda xs: [torch.tensor(x) for x in xs]
    return torch.tensor(pg), t(ps), t(groups), torch.tensor(act), (pg, ps, groups, act)


@pytest.mark.parametrize("seed", range(6))
def test_objective_within_1e6_of_an_independent_reference(seed):
    rng = np.random.default_rng(seed)
    for _ in range(8):
        pg, ps, gs, act, raw = _instance(rng, zeros=seed % 2 == 1)
        q = combine_distributions(pg, ps, gs, act)
        assert torch.isfinite(q).all() and torch.allclose(q.sum(1), torch.ones(len(q), dtype=q.dtype))
        f = objective(q, pg, ps, gs, act)
        for b in range(len(q)):
            ref = _reference(raw[0][b], [p[b] for p in raw[1]], raw[2], raw[3][b])
            assert float(f[b]) <= ref + 1e-6, (float(f[b]), ref)


@pytest.mark.parametrize("w", [0.3, 2.0, 7.5])
def test_weighted_objective_within_1e6_of_an_independent_reference(w):
    rng = np.random.default_rng(int(w * 10))
    for _ in range(6):
        pg, ps, gs, act, raw = _instance(rng, zeros=w > 5)
        q = combine_distributions(pg, ps, gs, act, specialist_weight=w)
        assert torch.allclose(q.sum(1), torch.ones(len(q), dtype=q.dtype))
        f = objective(q, pg, ps, gs, act, specialist_weight=w)
        for b in range(len(q)):
            ref = _reference(raw[0][b], [p[b] for p in raw[1]], raw[2], raw[3][b], w)
            assert float(f[b]) <= ref + 1e-6, (float(f[b]), ref)


@pytest.mark.parametrize("method", ["em", "gradient"])
def test_weighted_em_and_gradient_agree_with_newton(method):
    rng = np.random.default_rng(11)
    pg, ps, gs, act, _ = _instance(rng, b=6)
    exact = combine_distributions(pg, ps, gs, act, specialist_weight=3.0)
    other = combine_distributions(pg, ps, gs, act, method=method, tol=1e-12, specialist_weight=3.0)
    fe, fo = (objective(x, pg, ps, gs, act, specialist_weight=3.0) for x in (exact, other))
    assert (fo - fe).max() < 1e-6 and (fe - fo).max() < 1e-9
    assert (exact - other).abs().max() < 1e-3


def test_one_specialist_weighted_gives_p_g_plus_w_p_m_inside_its_group():
    """With one active specialist, q on S_m is proportional to p_g + w·p_m and q(S_m) solves the
    two-outcome problem: (p_g(S) + w(1 − p_m(d))) / (1 + w) (docs/method.md §5 with w)."""
    rng = np.random.default_rng(12)
    c, g = 9, torch.tensor([1, 4, 6])
    pg = torch.tensor(rng.dirichlet(np.ones(c), 5))
    pm = torch.tensor(rng.dirichlet(np.ones(4), 5))
    for w in (1.0, 4.0):
        q = combine_distributions(pg, [pm], [g], torch.ones(5, 1, dtype=torch.bool), specialist_weight=w)
        inside = pg[:, g] + w * pm[:, :-1]
        mass = (pg[:, g].sum(1) + w * (1 - pm[:, -1])) / (1 + w)
        assert torch.allclose(q[:, g], inside / inside.sum(1, keepdim=True) * mass[:, None], atol=1e-10)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan"), "2"])
def test_a_bad_specialist_weight_is_refused(bad):
    pg, ps, gs, act, _ = _instance(np.random.default_rng(0))
    with pytest.raises(ValueError, match="specialist_weight"):
        combine_distributions(pg, ps, gs, act, specialist_weight=bad)


@pytest.mark.parametrize("method", ["em", "gradient"])
def test_em_and_the_papers_gradient_method_agree(method):
    rng = np.random.default_rng(10)
    pg, ps, gs, act, _ = _instance(rng, b=6)
    exact = combine_distributions(pg, ps, gs, act)
    other = combine_distributions(pg, ps, gs, act, method=method, tol=1e-12)
    fe, fo = objective(exact, pg, ps, gs, act), objective(other, pg, ps, gs, act)
    assert (fo - fe).max() < 1e-6 and (fe - fo).max() < 1e-9  # Newton is never worse
    assert (exact - other).abs().max() < 1e-3


def test_em_never_increases_the_objective():
    rng = np.random.default_rng(3)
    pg, ps, gs, act, _ = _instance(rng, b=5)
    act[:, 0] = True
    q = None
    values = []
    for _ in range(30):
        q = _em(pg, ps, gs, act, 1.0, q0=q, tol=0.0, max_iter=1)
        values.append(objective(q, pg, ps, gs, act))
    diffs = torch.stack(values).diff(dim=0)
    assert (diffs <= 1e-12).all()


def test_no_active_specialist_gives_the_generalist_exactly():
    rng = np.random.default_rng(4)
    pg, ps, gs, act, _ = _instance(rng)
    act[:] = False
    act[0, 0] = True
    q = combine_distributions(pg.float(), [p.float() for p in ps], gs, act)
    assert torch.equal(q[1:], pg[1:].float())


def test_specialists_covering_every_class_give_the_arithmetic_mean():
    rng = np.random.default_rng(5)
    c = 7
    pg = torch.tensor(rng.dirichlet(np.ones(c), 3))
    full = torch.arange(c)
    ps = [
        torch.cat([torch.tensor(rng.dirichlet(np.ones(c), 3)), torch.zeros(3, 1, dtype=torch.float64)], 1)
        for _ in range(3)
    ]
    q = combine_distributions(pg, ps, [full] * 3, torch.ones(3, 3, dtype=torch.bool))
    mean = (pg + sum(p[:, :-1] for p in ps)) / 4
    assert torch.allclose(q, mean, atol=1e-12)


def test_batched_equals_per_example():
    rng = np.random.default_rng(6)
    pg, ps, gs, act, _ = _instance(rng, b=8)
    batched = combine_distributions(pg, ps, gs, act)
    for b in range(8):
        one = combine_distributions(pg[b : b + 1], [p[b : b + 1] for p in ps], gs, act[b : b + 1])
        assert torch.allclose(batched[b], one[0], atol=1e-12)


def test_shape_errors():
    pg = torch.full((2, 4), 0.25)
    with pytest.raises(ValueError, match=r"p_specialists\[0\] must be \(B, \|S_m\| \+ 1\) = \(2, 3\)"):
        combine_distributions(pg, [torch.full((2, 2), 0.5)], [torch.tensor([0, 1])], torch.ones(2, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"active must be \(B, M\)"):
        combine_distributions(
            pg, [torch.full((2, 3), 1 / 3)], [torch.tensor([0, 1])], torch.ones(2, 2, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="outside"):
        combine_distributions(
            pg, [torch.full((2, 3), 1 / 3)], [torch.tensor([0, 9])], torch.ones(2, 1, dtype=torch.bool)
        )


@pytest.mark.parametrize("w", [1.0, 2.5])
def test_mixed_batch_equals_the_iterative_solver_row_by_row(w):
    """Rows with one active specialist take the closed form, the others Newton: the batch equals
    Newton alone on every row with none, one or several active. A degenerate row (p_g(S̄) = 0
    with dustbin mass to place, which made the batched Newton step raise on a singular system)
    leaves the batch finite."""
    rng = np.random.default_rng(21)
    c, groups = 12, [torch.tensor([0, 1, 2, 3]), torch.tensor([3, 4, 5, 6, 7]), torch.tensor([8, 9, 10, 11])]
    b = 40
    pg = torch.tensor(rng.dirichlet(np.full(c, 0.5), b))
    pg[0] = 0.0
    pg[0, :4] = 0.25  # all of p_g inside group 0
    ps = [torch.tensor(rng.dirichlet(np.full(len(g) + 1, 0.5), b)) for g in groups]
    act = torch.tensor(rng.random((b, 3)) < 0.45)
    act[0] = torch.tensor([True, False, False])
    assert (act.sum(1) == 1).sum() >= 10 and (act.sum(1) > 1).any() and (act.sum(1) == 0).any()
    q = combine_distributions(pg, ps, groups, act, specialist_weight=w)
    assert torch.isfinite(q).all() and torch.allclose(q.sum(1), torch.ones(b, dtype=q.dtype))
    for r in range(1, b):  # row 0 has no minimiser (the infimum puts the dustbin's mass where p_g is 0)
        if not act[r].any():
            assert torch.equal(q[r], pg[r])
            continue
        want = _newton(
            pg[r : r + 1], [w * p[r : r + 1] for p in ps], groups, act[r : r + 1], w, tol=1e-10, max_iter=100
        )
        f = lambda x: objective(
            x, pg[r : r + 1], [p[r : r + 1] for p in ps], groups, act[r : r + 1], specialist_weight=w
        )
        assert float(f(q[r : r + 1])) <= float(f(want)) + 1e-9, r
        assert torch.allclose(q[r], want[0], atol=1e-8), (r, (q[r] - want[0]).abs().max())

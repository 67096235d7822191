"""Combining the generalist with the active specialists (docs/method.md §5; the paper's section 5.4).

For each example, q over all C classes minimises

    F(q) = KL(p_g ‖ q) + w Σ_{m∈A} KL(p_m ‖ q_m),     q_m = q collapsed onto S_m ∪ {d},

with w = 1, the paper's objective, unless a ``specialist_weight`` is given (an extension for
diagnosis: w > 1 trusts the specialists more than the generalist; see :func:`combine_distributions`).
Up to constants F(q) = −Σ_i a_i log q_i − w Σ_{m∈A} p_m(d) log(1 − q(S_m)) with
a_i = p_g(i) + w Σ_{m∈A, i∈S_m} p_m(i). At the optimum (docs/method.md §5, where w = 1), with
λ_m = w p_m(d)/(1 − q(S_m)),

    q_i = a_i / (1 + w|A| − Σ_{m∈A, i∉S_m} λ_m),

so the whole problem is |A| equations g_m(λ) = λ_m · Σ_{i∉S_m} q_i(λ) − w p_m(d) = 0 (normalisation
follows from them). ``method="newton"`` solves them by Newton's method, batched over examples,
with a step-halving safeguard that keeps every denominator positive, then finishes with EM steps
(which never increase F) only where Newton has not converged; an example with exactly one active
specialist (|A| = 1: every routed example, with disjoint groups and top-1 routing) needs no
iterations: its q has a closed form (:func:`~specens.specialists.model.combine_one`), O(C). ``method="em"`` is plain EM;
``method="gradient"`` is the paper's procedure, gradient descent on logits (q = softmax(z)), kept
as the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from specens.specialists.model import combine_one


def objective(
    q: torch.Tensor,
    p_general: torch.Tensor,
    p_specialists: Sequence[torch.Tensor],
    groups: Sequence[torch.Tensor],
    active: torch.Tensor,
    specialist_weight: float = 1.0,
) -> torch.Tensor:
    """F(q) of docs/method.md §5 per example, up to constants (terms with zero weight count as 0), with
    the specialists' terms weighted by ``specialist_weight``.

    q, p_general: (B, C); p_specialists[m]: (B, |S_m| + 1); active: (B, M) bool. Returns (B,).
    """
    f = -torch.xlogy(p_general, q).sum(1)
    for m, (p, g) in enumerate(zip(p_specialists, groups, strict=True)):
        a = active[:, m].to(q.dtype)
        inside = q[:, g].sum(1)
        term = -torch.xlogy(p[:, :-1], q[:, g]).sum(1) - torch.xlogy(p[:, -1], (1 - inside).clamp_min(0))
        f = f + specialist_weight * a * term
    return f


def check_specialist_weight(w) -> float:
    """w as a float, or ValueError unless it is a positive finite number."""
    if not (isinstance(w, (int, float)) and 0 < w < float("inf")):
        raise ValueError(f"specialist_weight must be a positive finite number, got {w!r}")
    return float(w)


def _validate(p_general, p_specialists, groups, active, specialist_weight):
    check_specialist_weight(specialist_weight)
    if p_general.ndim != 2:
        raise ValueError(f"p_general must be (B, C), got shape {tuple(p_general.shape)}")
    b, c = p_general.shape
    if len(p_specialists) != len(groups):
        raise ValueError(f"{len(p_specialists)} specialist distributions for {len(groups)} groups")
    if active.shape != (b, len(groups)):
        raise ValueError(f"active must be (B, M) = {(b, len(groups))}, got {tuple(active.shape)}")
    for m, (p, g) in enumerate(zip(p_specialists, groups, strict=True)):
        if p.shape != (b, len(g) + 1):
            raise ValueError(f"p_specialists[{m}] must be (B, |S_m| + 1) = {(b, len(g) + 1)}, got {tuple(p.shape)}")
        if len(g) and (g.min() < 0 or g.max() >= c):
            raise ValueError(f"groups[{m}] has class indices outside [0, {c})")


def combine_distributions(
    p_general: torch.Tensor,
    p_specialists: Sequence[torch.Tensor],
    groups: Sequence[torch.Tensor],
    active: torch.Tensor,
    *,
    method: str = "newton",
    specialist_weight: float = 1.0,
    tol: float = 1e-10,
    max_iter: int = 100,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """q minimising KL(p_g ‖ q) + w Σ_{m active} KL(p_m ‖ q_m) for each example (docs/method.md §5).

    Args:
        p_general: (B, C), rows on the simplex.
        p_specialists: M tensors, the m-th (B, |S_m| + 1): columns in the order of ``groups[m]``,
            the dustbin last.
        groups: M one-dimensional int64 tensors of class indices.
        active: (B, M) bool, which specialists take part for each example.
        method: ``"newton"`` (exact, default), ``"em"``, or ``"gradient"`` (the paper's reference).
        specialist_weight: w. 1 (default) is the paper's objective; not in the paper otherwise.
            With one active specialist, q inside its group is proportional to p_g + w·p_m and
            q(S_m) = (p_g(S_m) + w(1 − p_m(d))) / (1 + w): a larger w follows the specialist more,
            its dustbin included. For diagnosis (benchmarks/RESULTS.md: a w fitted on validation
            was worse than w = 1 on CLINC150 and the glyphs, about level on Banking77).
        tol: stopping tolerance on the KKT residual max_m |g_m| (Newton) or on max |Δq| (EM,
            gradient). With the default, the objective is within 1e-9 of optimal (tested against
            an independent float64 solver).
        dtype: computation dtype (default float64); q is returned in ``p_general``'s dtype.
    Returns:
        q: (B, C). Rows with no active specialist are ``p_general`` exactly.
    """
    _validate(p_general, p_specialists, groups, active, specialist_weight)
    out_dtype = p_general.dtype
    work = dtype or torch.float64
    pg = p_general.to(work)
    raw = [p.to(work) for p in p_specialists]
    ps = [p * specialist_weight for p in raw]  # w p_m: the solvers' weighted terms
    gs = [torch.as_tensor(g, dtype=torch.int64, device=pg.device) for g in groups]
    q = pg.clone()
    rows = active.any(1)  # examples with at least one specialist
    if method == "newton":  # exactly one: the closed form (most examples, with disjoint groups and top-1 routing)
        rows &= ~_one_active(q, pg, raw, gs, active, float(specialist_weight))
    rows = rows.nonzero().flatten()
    if len(rows):
        sub = (pg[rows], [p[rows] for p in ps], gs, active[rows], float(specialist_weight))
        if method == "newton":
            q[rows] = _newton(*sub, tol=tol, max_iter=max_iter)
        elif method == "em":
            q[rows] = _em(*sub, q0=None, tol=tol, max_iter=max(max_iter, 10_000))
        elif method == "gradient":
            q[rows] = _gradient(*sub[:-1], tol=tol, max_iter=max(max_iter, 20_000))  # F is linear in w·p_m
        else:
            raise ValueError(f"method must be 'newton', 'em' or 'gradient', got {method!r}")
    return q.to(out_dtype)


# ----------------------------------------------------------------------------- the solvers


def _one_active(q, pg, ps, groups, active, weight):
    """Fill the rows of ``q`` that have exactly one active specialist with the closed form of
    :func:`~specens.specialists.model.combine_one` (O(C) per example instead of Newton's
    iterations), except rows where p_g(S̄) = 0 with dustbin mass to place, whose minimiser is not
    unique: those stay with the iterative solver. ``ps`` unweighted. Returns the rows filled, (B,) bool."""
    filled = torch.zeros(len(pg), dtype=torch.bool, device=pg.device)
    single = active & (active.sum(1) == 1)[:, None]  # (B, M)
    for m in single.any(0).nonzero().flatten().tolist():
        rows = single[:, m].nonzero().flatten()
        pr, pm, g = pg[rows], ps[m][rows], groups[m]
        outside = pr.clone()
        outside[:, g] = 0
        ok = (outside.sum(1) > 0) | (pm[:, -1] == 0)
        rows = rows[ok]
        q[rows] = combine_one(pr[ok], pm[ok], g, weight)
        filled[rows] = True
    return filled


def _slots(groups, active):
    """Active specialists per example, padded: index (B, K) into groups (−1 = empty slot)."""
    k = int(active.sum(1).max())
    order = torch.argsort(active.to(torch.int8), dim=1, descending=True, stable=True)[:, :k]  # (B, K)
    valid = torch.gather(active, 1, order)
    return torch.where(valid, order, torch.full_like(order, -1)), valid


def _membership(groups, slot, c):
    """inside[b, k, i] = class i ∈ S of the specialist in slot k of example b. (B, K, C) bool."""
    m = len(groups)
    table = torch.zeros(m + 1, c, dtype=torch.bool, device=slot.device)  # row m: the empty slot
    for j, g in enumerate(groups):
        table[j, g] = True
    return table[torch.where(slot < 0, m, slot)]


def _gather_specialists(p_specialists, groups, slot, c):
    """Per slot: the specialist's probabilities scattered onto C classes (B, K, C) and its
    dustbin probability (B, K); zeros for empty slots. One scatter per specialist."""
    b, k = slot.shape
    dtype = p_specialists[0].dtype if p_specialists else torch.float64
    spread = torch.zeros(b, k, c, dtype=dtype, device=slot.device)
    dust = torch.zeros(b, k, dtype=dtype, device=slot.device)
    for j, (p, g) in enumerate(zip(p_specialists, groups, strict=True)):
        rows, s = (slot == j).nonzero(as_tuple=True)  # each example holds specialist j in at most one slot
        if len(rows):
            spread[rows[:, None], s[:, None], g[None, :]] = p[rows, :-1]
            dust[rows, s] = p[rows, -1]
    return spread, dust


def _newton(pg, ps, groups, active, weight, tol, max_iter):
    """Newton on the λ equations; ``ps`` already carry the weight w, which enters again as w|A|."""
    b, c = pg.shape
    slot, valid = _slots(groups, active)  # (B, K)
    inside = _membership(groups, slot, c)  # (B, K, C)
    spread, dust = _gather_specialists(ps, groups, slot, c)
    a = pg + spread.sum(1)  # (B, C): a_i
    outside = (~inside) & valid[:, :, None]  # (B, K, C): i ∉ S_m, for real slots only
    n_active = weight * valid.sum(1, keepdim=True).to(pg.dtype)  # (B, 1): w|A|
    out_f = outside.to(pg.dtype)

    def q_of(lam):  # (B, K) -> q (B, C), denominators (B, C)
        den = 1 + n_active - torch.einsum("bk,bkc->bc", lam, out_f)
        return a / den, den

    def residual(lam, q):
        r = torch.einsum("bkc,bc->bk", out_f, q)  # Σ_{i∉S_m} q_i
        return torch.where(valid, lam * r - dust, torch.zeros_like(lam)), r

    lam = dust.clone()  # the solution when the special classes hold no mass
    q, _ = q_of(lam)
    g, r = residual(lam, q)
    stuck = torch.zeros(b, dtype=torch.bool, device=pg.device)  # a singular Newton system: left to EM below
    for _ in range(max_iter):
        err = g.abs().amax(1)
        todo = (err > tol) & ~stuck
        if not todo.any():
            break
        w = torch.where(a > 0, q * q / a.clamp_min(1e-300), torch.zeros_like(q))  # ∂q_i/∂λ_k = w_i [i ∉ S_k]
        jac = torch.einsum("bmc,bkc,bc->bmk", out_f, out_f, w) * lam[:, :, None]  # (B, K, K)
        jac = jac + torch.diag_embed(torch.where(valid, r, torch.ones_like(r)))
        step, info = torch.linalg.solve_ex(jac, -g)  # (B, K)
        singular = info != 0  # e.g. p_g(S̄_m) = 0 with dustbin mass to place: no unique minimiser
        if singular.any():
            stuck |= singular
            todo &= ~singular
            step = torch.where(singular[:, None], torch.zeros_like(step), step)
        cand, ok = _line_search(lam, step, err, todo, a, q_of, residual)
        accept = (ok & todo)[:, None]
        lam = torch.where(accept, cand, lam)
        q, _ = q_of(lam)
        g, r = residual(lam, q)
    q = q.clamp_min(0)
    q = q / q.sum(1, keepdim=True)
    unconverged = g.abs().amax(1) > tol
    if unconverged.any():  # degenerate examples (zeros in p_g where mass must go): EM from here
        idx = unconverged.nonzero().flatten()
        q[idx] = _em(
            pg[idx], [p[idx] for p in ps], groups, active[idx], weight, q0=q[idx], tol=tol * 1e-2, max_iter=20_000
        )
    return q


def _line_search(lam, step, err, todo, a, q_of, residual):
    """Backtracking along the Newton ``step``: per example, halve it (at most 60 times) until the
    denominators stay positive, λ ≥ 0 and the residual falls. Returns (λ + t·step, accepted)."""
    t = torch.ones(lam.shape[0], 1, dtype=lam.dtype, device=lam.device)
    for _ in range(60):
        cand = lam + t * step
        qc, dc = q_of(cand)
        gc, _ = residual(cand, qc)
        ok = (
            ((dc > 0) | (a == 0)).all(1) & (cand >= 0).all(1) & (gc.abs().amax(1) < err * (1 - 1e-4 * t[:, 0]) + 1e-300)
        )
        ok = ok | ~todo
        if ok.all():
            break
        t = torch.where(ok[:, None], t, t / 2)
    return cand, ok


def _em(pg, ps, groups, active, weight, q0, tol, max_iter):
    """EM (docs/method.md §5): q_i ← [a_i + Σ_{m∈A, i∉S_m} w p_m(d) q_i / (1 − q(S_m))] / (1 + w|A|), with
    ``ps`` already carrying w."""
    b, c = pg.shape
    slot, valid = _slots(groups, active)
    inside = _membership(groups, slot, c)
    spread, dust = _gather_specialists(ps, groups, slot, c)
    a = pg + spread.sum(1)
    out_f = ((~inside) & valid[:, :, None]).to(pg.dtype)
    n_active = weight * valid.sum(1, keepdim=True).to(pg.dtype)
    if q0 is None:  # start with full support, so that mass can move to any class
        q = 0.5 * a / (1 + n_active) + 0.5 / c
    else:
        q = q0.clone()
    for _ in range(max_iter):
        rest = torch.einsum("bkc,bc->bk", out_f, q).clamp_min(1e-300)  # 1 − q(S_m)
        coef = torch.einsum("bk,bkc->bc", dust / rest, out_f)  # Σ_{m: i∉S_m} p_m(d) / (1 − q(S_m))
        new = (a + coef * q) / (1 + n_active)
        new = new / new.sum(1, keepdim=True)
        delta = (new - q).abs().max()
        q = new
        if delta < tol:
            break
    return q


def _gradient(pg, ps, groups, active, tol, max_iter, lr=0.5, target: float | None = None):
    """The paper's reference: gradient descent (Adam) on logits z with q = softmax(z). Stops when
    q moves less than ``tol``, or (benchmarks) once the mean objective reaches ``target``."""
    z = torch.log(pg.clamp_min(1e-12)).clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=20)
    prev = None
    for _ in range(max_iter):
        q = torch.softmax(z, 1)
        f = objective(q, pg, ps, groups, active).sum()
        if target is not None and float(f.detach()) / len(pg) <= target:
            break
        opt.zero_grad()
        f.backward()
        opt.step()
        sched.step(float(f.detach()))
        with torch.no_grad():
            cur = torch.softmax(z, 1)
            if prev is not None and (cur - prev).abs().max() < tol:
                break
            prev = cur
    return torch.softmax(z.detach(), 1)

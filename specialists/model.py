"""A specialist's mathematics (docs/method.md §4; the paper's sections 5.2 and 6.1). Pure functions.

A specialist for the group S (sorted class indices) predicts |S| + 1 classes: the classes of S,
in the order of S, and last a *dustbin* d that stands for every class outside S.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from specens.generalist.models import Classifier


def collapse(probs: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Collapse distributions over C classes onto S ∪ {d}: classes of S keep their probabilities,
    d gets the sum over the rest (docs/method.md §4, soft-target regularisation).

    probs: (B, C) rows on the simplex; group: (|S|,) int64. Returns (B, |S| + 1).
    """
    special = probs[:, group]  # (B, |S|)
    dustbin = (1.0 - special.sum(1, keepdim=True)).clamp_min(0.0)  # (B, 1); exact, not a sum of C−|S| terms
    return torch.cat([special, dustbin], dim=1)


def collapse_logits(logits: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Logits over S ∪ {d} whose softmax is :func:`collapse` of ``softmax(logits)``: the dustbin
    logit is the log-sum-exp of the logits outside S. (B, C) -> (B, |S| + 1)."""
    outside = torch.ones(logits.shape[1], dtype=torch.bool, device=logits.device)
    outside[group] = False
    return torch.cat([logits[:, group], logits[:, outside].logsumexp(1, keepdim=True)], dim=1)


def hard_targets(labels: torch.Tensor, group: torch.Tensor, n_classes: int) -> torch.Tensor:
    """y ↦ its position in S if y ∈ S, else |S| (the dustbin). labels: (B,) -> (B,) int64."""
    position = torch.full((n_classes,), len(group), dtype=torch.int64, device=labels.device)
    position[group] = torch.arange(len(group), device=labels.device)
    return position[labels]


def dustbin_correction(pi: float, rho: float = 0.5) -> float:
    """The amount added to the dustbin logit after training on enriched batches (docs/method.md §4):

        log[ (ρ/π) / ((1 − ρ)/(1 − π)) ]     (= log((1 − π)/π) when ρ = 0.5)

    π: the natural fraction of examples whose class is in S; ρ: their fraction in training batches.
    Computed as a sum of logarithms, finite for every π and ρ in (0, 1): the ratios themselves
    overflow or vanish when either is within a few ulps of 0 or 1.
    """
    if not (0 < pi < 1 and 0 < rho < 1):
        raise ValueError(f"need 0 < pi < 1 and 0 < rho < 1, got pi={pi}, rho={rho}")
    return math.log(rho) - math.log(pi) - math.log1p(-rho) + math.log1p(-pi)


def apply_correction(logits: torch.Tensor, correction: float) -> torch.Tensor:
    """Add ``correction`` to the dustbin (last) logit: (B, |S| + 1) -> (B, |S| + 1)."""
    out = logits.clone()
    out[:, -1] += correction
    return out


def split_body(body: nn.Module, top_blocks: int) -> tuple[nn.Sequential, nn.Sequential]:
    """``body`` (an ``nn.Sequential``) as (trunk, top) with ``body(x) == top(trunk(x))``: ``top``
    starts at the ``top_blocks``-th module holding parameters counted from the end (a residual
    block, a linear layer) and keeps everything after it (pooling, dropout). The modules are the
    body's own, not copies."""
    if not isinstance(body, nn.Sequential):
        raise ValueError(f"a shared trunk needs a body that is an nn.Sequential, got {type(body).__name__}")
    owners = [i for i, m in enumerate(body) if any(True for _ in m.parameters())]
    if not 1 <= top_blocks <= len(owners):
        raise ValueError(f"top_blocks must be in [1, {len(owners)}] for this body, got {top_blocks}")
    cut = owners[-top_blocks]
    return body[:cut], body[cut:]


MAX_WIDEN = 64  # a record from a shared run names the factor: bounded before anything is allocated


@torch.no_grad()
def widen_block(block: nn.Module, factor: int, generator: torch.Generator | None = None) -> nn.Module:
    """A copy of a basic residual block (``conv1 -> bn1 -> relu -> conv2``, plus its shortcut) with
    ``factor`` times the channels between ``conv1`` and ``conv2``, computing the same function
    (Net2WiderNet, Chen, Goodfellow & Shlens 2016): each inner channel is repeated ``factor`` times
    in ``conv1`` and ``bn1``, and ``conv2`` splits each of its input weights over the copies in
    random shares that sum to one, so the copies' gradients differ from the first step and they
    learn apart. With batch norm in training mode too the copies see identical statistics, so the
    output is unchanged up to rounding. A specialist that owns a widened top has more capacity
    than the generalist where its group's confusions are (docs/method.md §4, initialisation)."""
    conv1, bn1, conv2 = (getattr(block, name, None) for name in ("conv1", "bn1", "conv2"))
    if not (
        isinstance(conv1, nn.Conv2d)
        and isinstance(bn1, nn.BatchNorm2d)
        and isinstance(conv2, nn.Conv2d)
        and conv1.groups == conv2.groups == 1
        and conv1.out_channels == bn1.num_features == conv2.in_channels
    ):
        raise ValueError(f"only basic residual blocks (conv1, bn1, conv2) can be widened, not {type(block).__name__}")
    if not 1 <= factor <= MAX_WIDEN:
        raise ValueError(f"widen must be in [1, {MAX_WIDEN}], got {factor}")
    wide = copy.deepcopy(block)
    if factor == 1:
        return wide
    c = conv1.out_channels
    wide.conv1 = _like(conv1, out_channels=c * factor)
    wide.conv1.weight.copy_(conv1.weight.repeat(factor, 1, 1, 1))  # (k·C, Cin, kh, kw)
    wide.bn1 = _like(bn1, num_features=c * factor)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(wide.bn1, name).copy_(getattr(bn1, name).repeat(factor))
    wide.bn1.num_batches_tracked.copy_(bn1.num_batches_tracked)
    u = torch.randn((factor, *conv2.weight.shape), generator=generator, dtype=torch.float64)
    shares = (1 + 0.5 * (u - u.mean(0))) / factor  # (k, Cout, C, kh, kw), summing to 1 over the copies
    w = conv2.weight.double()[None] * shares  # copy i's share of every weight
    wide.conv2 = _like(conv2, in_channels=c * factor)
    wide.conv2.weight.copy_(torch.cat(list(w), dim=1).to(conv2.weight.dtype))  # (Cout, k·C, kh, kw)
    return wide


def _like(module: nn.Module, **changes) -> nn.Module:
    """A new conv or batch-norm layer like ``module`` but for ``changes`` (channel counts)."""
    if isinstance(module, nn.Conv2d):
        m = module
        if m.bias is not None:
            raise ValueError("widening a convolution with a bias is not supported")
        kwargs = dict(
            in_channels=m.in_channels,
            out_channels=m.out_channels,
            kernel_size=m.kernel_size,
            stride=m.stride,
            padding=m.padding,
            dilation=m.dilation,
            bias=False,
        )
        return nn.Conv2d(**{**kwargs, **changes}).to(m.weight.device, m.weight.dtype)
    bn = module
    kwargs = dict(num_features=bn.num_features, eps=bn.eps, momentum=bn.momentum)
    return nn.BatchNorm2d(**{**kwargs, **changes}).to(bn.weight.device, bn.weight.dtype)


def widen_top(top: nn.Sequential, factor: int) -> nn.Sequential:
    """``top`` with every basic residual block widened by ``factor`` (:func:`widen_block`); the
    other modules (pooling, dropout) kept. ``top`` must hold at least one such block."""
    if factor == 1:
        return top
    blocks = [i for i, m in enumerate(top) if hasattr(m, "conv1") and hasattr(m, "conv2")]
    if not blocks:
        raise ValueError("widen needs the owned top blocks to be residual blocks; this model's are not")
    return nn.Sequential(*(widen_block(m, factor) if i in blocks else m for i, m in enumerate(top)))


class TrunkedSpecialist(nn.Module):
    """A specialist that owns only the top of the generalist's body and a head (docs/method.md §4 with a
    shared trunk): ``logits = own.head(own.body(trunk(x)))``, the trunk the generalist's own frozen
    modules (not registered here: not in ``state_dict``, not trained, left in eval mode), so that an
    ensemble runs the trunk once per example (:meth:`on_features`) and a specialist's artifact holds
    only its own weights."""

    def __init__(self, trunk: nn.Module, own: Classifier):
        super().__init__()
        self._trunk = (trunk,)  # a tuple hides it from nn.Module's registry
        self.own = own

    @property
    def trunk(self) -> nn.Module:
        return self._trunk[0]

    @property
    def head(self) -> nn.Linear:
        return self.own.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.trunk(x)
        return self.own(features)

    def on_features(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from the trunk's output, (B, ...) -> (B, |S| + 1)."""
        return self.own(features)


@torch.no_grad()
def build_specialist(
    generalist: nn.Module,
    group: torch.Tensor,
    features: torch.Tensor | None = None,
    ridge: float = 1e-3,
    top_blocks: int = 0,
    widen: int = 1,
) -> Classifier | TrunkedSpecialist:
    """A specialist initialised from the generalist (docs/method.md §4, initialisation).

    Every body weight is copied; the head has |S| + 1 outputs; the rows for S are the generalist's
    rows for those classes. The dustbin row is **(choice)** the linear function of the features
    closest, in least squares, to the exact collapsed dustbin logit log Σ_{j∉S} exp(z_j(x)) over
    ``features`` (the body's outputs on a sample of natural-distribution inputs, (N, feature_dim));
    with that row the untrained specialist's prediction is the generalist's collapsed distribution
    up to the fit's residual. Without ``features`` the row is the mean of the non-special rows and
    the bias their log-sum-exp, exact when the features are zero.

    ``top_blocks`` > 0 copies only the body's last ``top_blocks`` parameterised modules
    (:func:`split_body`) and returns a :class:`TrunkedSpecialist` on the generalist's own trunk;
    ``widen`` > 1 widens those blocks (:func:`widen_top`, same function, the shares drawn from
    torch's global generator), and needs ``top_blocks`` > 0.
    """
    if widen != 1 and not top_blocks:
        raise ValueError("widen > 1 widens the blocks a shared-trunk specialist owns: it needs top_blocks >= 1")
    head: nn.Linear = generalist.head
    w, b = head.weight.detach().cpu().double(), head.bias.detach().cpu().double()  # (C, D), (C,): solved on the CPU
    outside = torch.ones(len(b), dtype=torch.bool)
    outside[group] = False
    if features is not None and len(features) > 1:
        h = features.cpu().double()  # (N, D)
        target = (h @ w[outside].T + b[outside]).logsumexp(1)  # (N,) the exact dustbin logit
        x = torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], 1)  # (N, D + 1)
        reg = ridge * torch.eye(x.shape[1], dtype=h.dtype) * len(h)
        reg[-1, -1] = 0  # no penalty on the bias
        sol = torch.linalg.solve(x.T @ x + reg, x.T @ target)  # (D + 1,)
        w_d, b_d = sol[:-1], sol[-1]
    else:
        w_d, b_d = w[outside].mean(0), b[outside].logsumexp(0)
    new_head = nn.Linear(head.in_features, len(group) + 1)
    new_head.weight.copy_(torch.cat([w[group], w_d[None]]).to(head.weight.dtype))
    new_head.bias.copy_(torch.cat([b[group], b_d[None]]).to(head.bias.dtype))
    if top_blocks:
        trunk, top = split_body(generalist.body, top_blocks)
        return TrunkedSpecialist(trunk, Classifier(widen_top(copy.deepcopy(top), widen), new_head))
    return Classifier(copy.deepcopy(generalist.body), new_head)


def route(p_general: torch.Tensor, membership: torch.Tensor, top_n: int = 1) -> torch.Tensor:
    """Active specialists (docs/method.md §5, steps 1-2): ``active[b, m]`` is True when group m holds one
    of example b's ``top_n`` most probable classes under the generalist.

    p_general: (B, C); membership: (M, C) bool, ``membership[m, c]`` = class c ∈ S_m. Returns (B, M).
    """
    top = p_general.topk(min(top_n, p_general.shape[1]), dim=1).indices  # (B, n)
    return membership[:, top].any(2).T  # (M, B, n) -> (B, M)


def combine_one(
    p_general: torch.Tensor, p_specialist: torch.Tensor, group: torch.Tensor, weight: float = 1.0
) -> torch.Tensor:
    """q of docs/method.md §5 when exactly one specialist is active: the closed form of the KL solve.

    With A = {m} and the specialist's term weighted by w (1: the paper's objective), the
    stationarity conditions give q_i = (p_g(i) + w p_m(i)) / (1 + w) for i ∈ S and
    q_i = p_g(i) · (p_g(S̄) + w p_m(d)) / ((1 + w) p_g(S̄)) outside S (S̄ the classes outside S), so
    that q(S) = (p_g(S) + w(1 − p_m(d))) / (1 + w). It is what the ensemble computes for an example
    routed to this specialist alone (tested against the iterative solver). Where p_g(S̄) = 0 and
    p_m(d) > 0 the minimiser is not unique (the dustbin's mass may go to any class outside S);
    this returns the rows renormalised inside S, the iterative solver one of the minimisers.

    p_general: (B, C); p_specialist: (B, |S| + 1), the dustbin last, already corrected to the
    natural prior; group: (|S|,) int64. Returns q: (B, C).
    """
    outside = p_general.clone()
    outside[:, group] = 0
    mass_out = outside.sum(1, keepdim=True)  # p_g(S̄), (B, 1)
    scale = (mass_out + weight * p_specialist[:, -1:]) / (
        (1 + weight) * mass_out.clamp_min(torch.finfo(p_general.dtype).tiny)
    )
    q = outside * scale
    q[:, group] = (p_general[:, group] + weight * p_specialist[:, :-1]) / (1 + weight)
    return q / q.sum(1, keepdim=True)  # sums to 1 already, unless p_g(S̄) underflowed to 0


def enriched_soft_targets(soft: torch.Tensor, correction: float, temperature: float) -> torch.Tensor:
    """Shift collapsed soft targets (B, |S| + 1) at temperature T to the enriched training prior:
    the dustbin's probability is multiplied by exp(−correction / T) and the rows renormalised.

    **(choice)** The generalist's posteriors carry the natural prior π whatever the batch mix, so
    literal soft targets would teach the specialist the natural prior through the soft term and the
    enriched one through the hard term, and no single dustbin correction would then be right. With
    this shift both terms agree on the enriched prior, and the §4 correction applied after training
    restores the natural prior exactly.
    """
    out = soft.clone()
    out[:, -1] *= math.exp(-correction / temperature)
    return out / out.sum(1, keepdim=True)


def specialist_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    generalist_logits: torch.Tensor | None,
    group: torch.Tensor,
    n_classes: int,
    alpha: float,
    temperature: float,
    soft_shift: float = 0.0,
) -> torch.Tensor:
    """The §1 loss on S ∪ {d}: hard targets :func:`hard_targets`, soft targets the generalist's
    ``softmax_T`` collapsed onto S ∪ {d} (None: hard targets only), shifted to the enriched prior by
    :func:`enriched_soft_targets` when ``soft_shift`` (the dustbin correction) is non-zero.

    logits: (B, |S| + 1) the specialist's; labels: (B,) over all C classes; generalist_logits: (B, C).
    """
    from specens.generalist.losses import distillation_loss

    soft = None
    if generalist_logits is not None:
        soft = collapse(F.softmax(generalist_logits.float() / temperature, dim=1), group)
        if soft_shift:
            soft = enriched_soft_targets(soft, soft_shift, temperature)
    return distillation_loss(logits, hard_targets(labels, group, n_classes), soft, alpha=alpha, temperature=temperature)

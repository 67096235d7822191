"""Distillation mathematics (docs/method.md §1; the paper's section 2). Pure functions on tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / T)`` along the last axis: (..., C) -> (..., C)."""
    return F.softmax(logits.float() / temperature, dim=-1)


def temper(q: torch.Tensor, temperature: float) -> torch.Tensor:
    """A distribution q raised to the power 1/T and renormalised, along the last axis (docs/method.md §1, §5).

    The specialist ensemble's q is the minimiser of a sum of KL divergences (docs/method.md §5), not the
    softmax of any logits, so "q at temperature T" needs a definition: ``q_T ∝ q^(1/T)``, computed
    as ``softmax(log q / T)``. Where q = softmax(z) this is exactly ``softmax(z / T)``, the paper's
    soft targets, since log q = z − logsumexp(z) differs from z by a constant per row; T = 1 returns
    q itself. A class with q_i = 0 keeps probability 0 at every T. Computed in float32 at least.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    q = q.float() if q.dtype in (torch.float16, torch.bfloat16) else q
    return F.softmax(torch.log(q) / temperature, dim=-1)


def ensemble_soft_targets(logits: Sequence[torch.Tensor], temperature: float, mean: str = "arithmetic") -> torch.Tensor:
    """Soft targets of an ensemble teacher (docs/method.md §1).

    Args:
        logits: M tensors of shape (B, C), one per member.
        mean: ``"arithmetic"``: the mean of the members' ``softmax_T``; ``"geometric"``: the
            normalised geometric mean, ``softmax`` of the mean of their ``log_softmax_T``.
    Returns:
        Tensor of shape (B, C), rows on the simplex.
    """
    z = torch.stack([z_m.float() for z_m in logits]) / temperature  # (M, B, C)
    if mean == "arithmetic":
        return F.softmax(z, dim=-1).mean(0)
    if mean == "geometric":
        return F.softmax(F.log_softmax(z, dim=-1).mean(0), dim=-1)
    raise ValueError(f"mean must be 'arithmetic' or 'geometric', got {mean!r}")


def distillation_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    teacher_probs: torch.Tensor | None = None,
    *,
    alpha: float = 0.9,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``α · T² · KL(p_T ‖ softmax_T(z)) + (1 − α) · CE(y, softmax(z))``, averaged (docs/method.md §1).

    Args:
        student_logits: z, Tensor of shape (B, C).
        labels: int64 Tensor of shape (B,); ``-1`` marks an example without a label, whose hard
            term is dropped. None: no example has a label.
        teacher_probs: p_T, the teacher's soft targets at temperature T, shape (B, C), rows on the
            simplex. None: no soft term (plain cross-entropy; ``alpha`` is ignored).
        alpha: weight of the soft term, in [0, 1].
        temperature: T, used for the student's soft term; the hard term is at T = 1.

    The soft term is the mean of KL over all B examples; the hard term is the mean cross-entropy
    over the labelled examples (0 if none), so ``alpha = 0`` is exactly plain cross-entropy. The
    ``T²`` keeps the soft gradient's size independent of T. Computed in float32 at least.
    """
    z = student_logits.float()
    if teacher_probs is None:
        if labels is None:
            raise ValueError("distillation_loss needs labels, teacher_probs, or both")
        alpha = 0.0
    loss = z.new_zeros(())
    if alpha > 0:
        p = teacher_probs.float()
        log_q = F.log_softmax(z / temperature, dim=-1)
        kl = (torch.xlogy(p, p) - p * log_q).sum(-1)  # (B,); xlogy makes 0·log 0 = 0
        loss = loss + alpha * temperature**2 * kl.mean()
    if alpha < 1 and labels is not None:
        labelled = labels >= 0
        if labelled.any():
            loss = loss + (1 - alpha) * F.cross_entropy(z[labelled], labels[labelled])
    return loss

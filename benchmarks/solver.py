"""Exact KL combination vs the paper's gradient descent on logits, at equal objective.

10,000 examples × 1,000 classes, 50 groups of 20 classes, each example routed (n = 1, as the paper)
to the specialists covering the generalist's top class: 1 of them, or 2 where groups overlap
(here every class lies in one or two groups). The gradient reference runs until its mean objective
is within 1e-6 of the exact solver's (or its iteration budget ends). Prints a table; ``--record``
appends it to RESULTS.md. Target (issue 5): exact at least 20× faster at equal or better objective.

    python benchmarks/solver.py --record
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _results import markdown_table, record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=10_000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--group-size", type=int, default=20)
    ap.add_argument("--max-iter", type=int, default=2000, help="the gradient reference's iteration budget")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    from specens.inference.combine import _gradient, combine_distributions, objective

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    b, c, s = args.examples, args.classes, args.group_size
    perm = rng.permutation(c)
    groups = [torch.tensor(np.sort(perm[i : i + s])) for i in range(0, c, s)]
    shifted = np.roll(perm, s // 2)  # a second, overlapping partition: every class in two groups
    groups += [torch.tensor(np.sort(shifted[i : i + s])) for i in range(0, c, s)][: len(groups) // 2]
    pg = torch.softmax(torch.randn(b, c, dtype=torch.float64) * 3, 1)
    top = pg.argmax(1)
    active = torch.stack([(g[None, :] == top[:, None]).any(1) for g in groups], 1)  # (B, M)
    ps = [torch.softmax(torch.randn(b, len(g) + 1, dtype=torch.float64) * 2, 1) for g in groups]
    t0 = time.perf_counter()
    q = combine_distributions(pg, ps, groups, active)
    t_exact = time.perf_counter() - t0
    rows = active.any(1).nonzero().flatten()
    sub = (pg[rows], [p[rows] for p in ps], groups, active[rows])
    f_exact = float(objective(q[rows], *sub).mean())  # over the routed examples, which both solve
    # The reference runs until its mean objective is within 1e-6 of the exact one (equal objective).
    t0 = time.perf_counter()
    qg = _gradient(*sub, tol=0.0, max_iter=args.max_iter, target=f_exact + 1e-6)
    t_grad = time.perf_counter() - t0
    f_grad = float(objective(qg, *sub).mean())
    table = markdown_table(
        [
            "examples",
            "classes",
            "groups",
            "mean active",
            "exact s",
            "gradient s",
            "ratio",
            "objective gap (gradient − exact)",
        ],
        [
            [
                b,
                c,
                len(groups),
                f"{float(active.sum(1).float().mean()):.2f}",
                f"{t_exact:.2f}",
                f"{t_grad:.1f}",
                f"{t_grad / t_exact:.0f}×",
                f"{f_grad - f_exact:.1e}",
            ]
        ],
    )
    print(table)
    if args.record:
        record("solver", "python benchmarks/solver.py --record", table)


if __name__ == "__main__":
    main()

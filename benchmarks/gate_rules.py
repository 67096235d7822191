"""Which gate rule to keep a specialist by, chosen on validation (issue 43)?

The gate (:func:`specens.specialists.gate.gate_on`) switches a specialist on when, on the
validation examples routed to it, the generalist combined with it gets no fewer right at top-1 and
a lower NLL than the generalist alone. On the width-4 printed-Chinese run it switched off two
specialists that had learned their groups, and every specialist on read better on test. This
script compares rules on trained runs without retraining anything:

- ``both`` (the default): no fewer right and a lower NLL;
- ``nll``: a lower NLL;
- ``top-1``: more right, or as many and a lower NLL;
- ``all on``: no gate.

A rule is judged on validation only, by split halves: each specialist's routed validation examples
are cut at random into two halves, the rule decides on one half and is scored on the other (both
ways round, ``--repeats`` random cuts averaged), so that every validation example is scored by a
decision that did not see it. The test columns apply each rule decided on the whole validation
split, as a product would, and are a report, not the choice. With disjoint groups and top-1
routing an example meets at most one specialist, so the ensemble's gain on a split is the sum of
its kept specialists' gains (:mod:`specens.specialists.gate`).

    python benchmarks/gate_rules.py --case issue43 runs/s1d runs/s1/data --case demo runs/demo3 runs/demo3/glyphs
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from _results import markdown_table, record

from specens.clustering.cluster import load_clusters
from specens.data.format import load_info
from specens.data.shards import iter_split
from specens.generalist.checkpoint import load_generalist
from specens.specialists.gate import RoutedValidation
from specens.specialists.model import route
from specens.specialists.record import load_specialist, specialist_dir

RULES = {
    "both (default)": lambda dc, dn: dc >= 0 and dn < 0,
    "nll": lambda dc, dn: dn < 0,
    "top-1": lambda dc, dn: dc > 0 or (dc == 0 and dn < 0),
    "all on": lambda dc, dn: True,
}


@dataclass
class Gains:
    """Per routed example of one specialist on one split: the combination's change against the
    generalist alone in examples right (-1, 0, 1) and in log-loss."""

    right: np.ndarray
    nll: np.ndarray


@torch.no_grad()
def _split_pass(model, data: str, split: str, info):
    """The generalist over a split: inputs, labels and its distributions (float64)."""
    xs, ys, ps = [], [], []
    for batch in iter_split(data, split, 512, info=info):
        ps.append(F.softmax(model(batch.inputs).float(), dim=1).double())
        xs.append(batch.inputs)
        ys.append(batch.labels)
    return torch.cat(xs), torch.cat(ys), torch.cat(ps)


def _gains(rv: RoutedValidation, specialist) -> Gains:
    q, p, y = rv.combined(specialist, torch.device("cpu")), rv.p_general, rv.labels
    right = (q.argmax(1) == y).long() - (p.argmax(1) == y).long()
    nll = -torch.log(q.gather(1, y[:, None]).clamp_min(1e-300)) + torch.log(p.gather(1, y[:, None]).clamp_min(1e-300))
    return Gains(right.numpy(), nll[:, 0].numpy())


def _case(run: str, data: str) -> dict:
    """Every specialist's per-example gains on the validation and test splits, the generalist's
    errors and example counts there, and the gate each specialist was trained with."""
    gen = load_generalist(f"{run}/generalist")
    gen.model.eval()
    clusters = load_clusters(f"{run}/clusters/clusters.json", gen.fingerprint, gen.n_classes)
    info = load_info(data)
    passes = {s: _split_pass(gen.model, data, s, info) for s in ("val", "test")}
    out = {s: [] for s in passes} | {"stored": [], "errors": {}, "n": {}}
    for s, (_, y, p) in passes.items():
        out["errors"][s], out["n"][s] = int((p.argmax(1) != y).sum()), len(y)
    for m, g in enumerate(clusters.groups):
        model, rec = load_specialist(specialist_dir(run, m), gen.model)
        if rec.gate.split not in (None, "val"):
            raise SystemExit(f"{run}: specialist {m} was gated on {rec.gate.split!r}; this script reads 'val'")
        membership = torch.zeros(1, gen.n_classes, dtype=torch.bool)
        membership[0, list(g)] = True
        for s, (x, y, p) in passes.items():
            keep = route(p, membership, rec.gate.top_n or 1)[:, 0]
            rv = RoutedValidation(x[keep], y[keep], p[keep], torch.tensor(g), rec.dustbin_correction)
            out[s].append(_gains(rv, model))
        out["stored"].append(rec.gate.on)
    return out


def _held_out(val: list[Gains], rule, repeats: int, seed: int) -> tuple[float, float]:
    """Split halves: the rule decides on one half of each specialist's routed validation examples,
    and is scored on the other; mean over ``repeats`` random cuts of (examples right, summed NLL)."""
    rng = np.random.default_rng(seed)
    right = nll = 0.0
    for _ in range(repeats):
        for gains in val:
            half = rng.permutation(len(gains.right)) < len(gains.right) // 2
            for decide, score in ((half, ~half), (~half, half)):
                if rule(gains.right[decide].sum(), gains.nll[decide].sum()):
                    right += gains.right[score].sum()
                    nll += gains.nll[score].sum()
    return right / repeats, nll / repeats


def _rows(name: str, case: dict, repeats: int) -> list[list]:
    both = RULES["both (default)"]
    decided = [both(g.right.sum(), g.nll.sum()) for g in case["val"]]
    if decided != case["stored"]:
        print(f"{name}: the default rule decides {decided} here, the runs' gates {case['stored']}")
    rows = []
    for rule_name, rule in RULES.items():
        right, nll = _held_out(case["val"], rule, repeats, seed=0)
        on = [rule(v.right.sum(), v.nll.sum()) for v in case["val"]]
        t_right = sum(t.right.sum() for t, k in zip(case["test"], on, strict=True) if k)
        t_nll = sum(t.nll.sum() for t, k in zip(case["test"], on, strict=True) if k)
        rows.append([
            name, rule_name,
            f"{right:+.1f} ({right / case['errors']['val']:+.1%})", f"{nll / case['n']['val']:+.4f}",
            f"{sum(on)} of {len(on)}",
            f"{t_right:+d} ({t_right / case['errors']['test']:+.1%})", f"{t_nll / case['n']['test']:+.4f}",
        ])  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", nargs=3, action="append", required=True, metavar=("NAME", "RUN", "DATA"),
                    help="a trained run (generalist/, clusters/, specialists/) and its dataset")  # fmt: skip
    ap.add_argument("--repeats", type=int, default=50, help="random half-cuts of validation averaged")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    columns = [
        "run", "rule", "val, held-out half: Δ right (error cut)", "val, held-out: Δ NLL",
        "kept, on all of val", "test: Δ right (error cut)", "test: Δ NLL",
    ]  # fmt: skip
    rows = []
    for name, run, data in args.case:
        rows += _rows(name, _case(run, data), args.repeats)
        print(markdown_table(columns, rows[-len(RULES) :]), flush=True)
    table = markdown_table(columns, rows)
    print(table)
    if args.record:
        cases = " ".join(f"--case {n} {r} {d}" for n, r, d in args.case)
        record("gate_rules", f"python benchmarks/gate_rules.py {cases} --repeats {args.repeats}", table)


if __name__ == "__main__":
    main()

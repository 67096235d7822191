"""Which batch-norm statistics serve a specialist at inference (issue 43)?

A specialist whose body holds batch norm trains on enriched batches (half its group, half the
rest), but at inference it sees the examples the generalist routes to it: mostly its group's, in
natural proportions. For every specialist of a trained run this recomputes its statistics
(:func:`specens.core.batchnorm.recompute_batch_norm`, ``--k`` batches) from

- ``enriched``: its enriched training batches (what ``specens specialists train`` does),
- ``group``: its group's training examples alone,
- ``routed``: natural-distribution training examples that the generalist routes to it,

and scores each where the gate does, on the validation examples routed to it (the generalist
combined with the specialist: examples right and NLL, summed over the specialists), next to the
statistics as exported. Nothing is retrained: the weights are the trained ones.

    python benchmarks/specialist_bn.py --run runs/demo --data runs/demo/glyphs
"""

from __future__ import annotations

import argparse
import itertools

import torch
import torch.nn.functional as F
from _results import markdown_table, record

from specens.clustering.cluster import load_clusters
from specens.core.batchnorm import batch_norms, recompute_batch_norm
from specens.data.format import load_info
from specens.data.shards import SHUFFLE_BUFFER, Batches, Cycle, Labels, Pipeline, Read, Shuffle, Split, iter_split
from specens.generalist.checkpoint import load_generalist
from specens.specialists.gate import RoutedValidation
from specens.specialists.model import route
from specens.specialists.partition import ensure_partition
from specens.specialists.record import load_specialist, specialist_dir


def _shuffled_inputs(split, batch_size: int, seed: int, samples: int | None = None, read=None):
    """Inputs of training-order batches of ``split`` (an epoch of ``samples``, default the split's)."""
    n = samples if samples is not None else split.num_samples
    stages = Cycle(read or Read()), Shuffle(SHUFFLE_BUFFER, n), Batches(batch_size)
    return (b.inputs for b in Pipeline(split, *stages, seed=seed))


def _enriched_inputs(data, info, group, special_source, batches: int):
    """Inputs of specialist-style batches of 128: 64 from the group's part, 64 from the other classes."""
    special = _shuffled_inputs(Split.of(*special_source[:1], "train", special_source[1]), 64, 11, 64 * batches)
    rest = _shuffled_inputs(Split.of(data, "train", info), 64, 10, 64 * batches, Read(Labels(group, exclude=True)))
    return (torch.cat([a, b]) for a, b in zip(special, rest, strict=False))


def _routed_inputs(gen, data, info, group, batch_size):
    """Natural training batches, each cut to the examples the generalist routes to ``group``."""
    membership = torch.zeros(1, gen.n_classes, dtype=torch.bool)
    membership[0, group] = True
    split = Split.of(data, "train", info)
    natural = Pipeline(
        split, Cycle(Read()), Shuffle(SHUFFLE_BUFFER, split.num_samples), Batches(batch_size * 4), seed=11
    )
    for b in natural:
        with torch.no_grad():
            keep = route(F.softmax(gen.model(b.inputs), 1), membership)[:, 0]
        if keep.sum() > 1:
            yield b.inputs[keep]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="holds specialists/ (and, by default, generalist/ and clusters/)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--generalist", default=None, help="default: RUN/generalist")
    ap.add_argument("--clusters", default=None, help="default: RUN/clusters/clusters.json")
    ap.add_argument("--k", type=int, default=32, help="batches the statistics are recomputed over")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    gen = load_generalist(args.generalist or f"{args.run}/generalist")
    clusters_path = args.clusters or f"{args.run}/clusters/clusters.json"
    clusters = load_clusters(clusters_path, gen.fingerprint, gen.n_classes)
    info = load_info(args.data)
    parts = ensure_partition(args.run, gen, clusters, args.data, info, "val", 1, torch.device("cpu"))
    totals = {s: [0, 0.0, 0] for s in ("as exported", "enriched", "group", "routed", "generalist alone")}
    for m, g in enumerate(clusters.groups):
        model, rec = load_specialist(specialist_dir(args.run, m), gen.model)
        if not batch_norms(model):
            raise SystemExit("these specialists hold no batch norm: nothing to compare")
        group = torch.tensor(g)
        root, part_info = parts.source(m, "val")
        routed = RoutedValidation.collect(
            gen.model, iter_split(root, "val", 512, info=part_info), group, rec.dustbin_correction, 1, "cpu", True
        )
        n = len(routed)
        base = routed.generalist_score()
        totals["generalist alone"] = [
            a + b for a, b in zip(totals["generalist alone"], [base["correct"], base["nll"] * n, n], strict=True)
        ]
        train_root, train_info = parts.source(m, "train")
        sources = {
            "as exported": None,
            "enriched": lambda: _enriched_inputs(args.data, info, g, (train_root, train_info), args.k),
            "group": lambda: _shuffled_inputs(Split.of(train_root, "train", train_info), 128, seed=5),
            "routed": lambda: _routed_inputs(gen, args.data, info, g, 128),
        }
        for name, source in sources.items():
            if source is not None:
                model, _ = load_specialist(specialist_dir(args.run, m), gen.model)
                recompute_batch_norm(model, itertools.islice(source(), args.k))
            s = routed.score(model.eval(), "cpu")
            totals[name] = [a + b for a, b in zip(totals[name], [s["correct"], s["nll"] * n, n], strict=True)]
        print(m, {k: (v[0], round(v[1] / max(v[2], 1), 4)) for k, v in totals.items()}, flush=True)
    rows = [[name, f"{c} of {n}", f"{nll / max(n, 1):.4f}"] for name, (c, nll, n) in totals.items()]
    table = markdown_table(["statistics", "routed val examples right (combined)", "NLL (combined)"], rows)
    print(table)
    if args.record:
        record(
            "specialist_bn",
            f"python benchmarks/specialist_bn.py --run {args.run} --data {args.data} --k {args.k}",
            table,
        )


if __name__ == "__main__":
    main()

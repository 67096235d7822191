"""How much of an ensemble's gain a distilled student keeps where the specialists are known to help
(issue 16): the synthetic mixture of ``specens data synthetic`` (20 classes in 4 planted groups of
confusable classes, 16-d inputs, 200 training examples per class).

The generalist is trained for one epoch: it knows the planted group of an example but little within
it. Each group's specialist is cut from a generalist trained for four epochs (its head collapsed
onto the group plus the dustbin, docs/method.md §4), so the ensemble (top-1 routing, the exact KL solve)
is far better than its generalist. Students start from the generalist and train for 3 epochs on
``--fraction`` of the labels (a stable key-hash subset; docs/method.md §4's small-data regime):

- ``labels only``: alpha = 0, what the same epochs buy without the ensemble;
- ``student``: ``specens distill``'s defaults (alpha 0.9, T = 2) on the same labelled subset;
- ``student + transfer``: the same, plus the whole training split as an unlabelled transfer set.

Test top-1 and NLL, the share of the ensemble's top-1 gain kept, and inference FLOPs relative to the
generalist, over ``--seeds`` seeds. (Measured times mean little for a 4.6 kFLOP MLP, where Python
overhead dominates; the real datasets' runs, ``distill_real.py``, time them.)

    python benchmarks/distill_synthetic.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from _results import markdown_table, record


def one_seed(root: Path, seed: int, fraction: float) -> dict:
    from specens.data.format import load_info
    from specens.data.shards import iter_split
    from specens.data.synthetic import import_synthetic
    from specens.generalist.checkpoint import load_generalist
    from specens.generalist.config import TrainConfig
    from specens.generalist.train import train_generalist
    from specens.inference import Ensemble
    from specens.inference.distill import DistillConfig, compare
    from specens.inference.teachers import EnsembleTeacher
    from specens.specialists.model import build_specialist

    data = str(root / "data")
    import_synthetic(data, n_classes=20, n_groups=4, dim=16, n_train=200, n_val=50, n_test=50, noise=1.0, seed=seed)
    base = dict(data=data, batch_size=64, model_kwargs={"hidden": [64]}, threads=2, patience=0, seed=seed)
    weak = train_generalist(TrainConfig(out=str(root / "weak"), epochs=1, lr=1e-3, **base), progress=False).run_dir
    strong = load_generalist(
        train_generalist(TrainConfig(out=str(root / "strong"), epochs=4, lr=3e-3, **base), progress=False).run_dir
    )
    groups = [torch.tensor(g) for g in load_info(data).groups]
    feats = torch.cat([strong.model.body(b.inputs) for b in iter_split(data, "train", 256)]).detach()
    with torch.no_grad():
        specialists = [build_specialist(strong.model, g, feats).eval() for g in groups]
    ens = Ensemble(load_generalist(weak), groups, specialists, [0.0] * len(groups), device="cpu")
    out = {}
    for name, kw in (("labels only", dict(alpha=0.0)), ("student", {}), ("student + transfer", dict(transfer=(data,)))):
        cfg = DistillConfig(
            **{**base, "patience": 3},
            out=str(root / name),
            run="(in memory)",
            epochs=3,
            lr=3e-3,
            init=weak,
            train_fraction=fraction,
            **kw,
        )
        train_generalist(cfg, progress=False, teacher=EnsembleTeacher(ens))
        out[name] = compare(ens, cfg.out, data, "test", progress=False).to_json()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args()
    runs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_seed(Path(tmp), seed, args.fraction))

    def mean(get):
        return float(np.mean([get(r) for r in runs]))

    first = runs[0]["student"]["rows"]
    rows = [
        [
            "generalist (1 epoch)",
            f"{mean(lambda r: r['student']['rows']['generalist']['top1']):.4f}",
            f"{mean(lambda r: r['student']['rows']['generalist']['nll']):.3f}",
            "-",
            "1.00x",
        ],
        [
            "ensemble (4 specialists)",
            f"{mean(lambda r: r['student']['rows']['ensemble']['top1']):.4f}",
            f"{mean(lambda r: r['student']['rows']['ensemble']['nll']):.3f}",
            "100%",
            f"{mean(lambda r: r['student']['rows']['ensemble']['flops_per_example'] / r['student']['rows']['generalist']['flops_per_example']):.2f}x",
        ],
    ]
    for name in ("labels only", "student", "student + transfer"):
        kept = [(r[name]["student_gain"]) / r[name]["ensemble_gain"] for r in runs]
        rows.append(
            [
                name,
                f"{mean(lambda r: r[name]['rows']['student']['top1']):.4f}",
                f"{mean(lambda r: r[name]['rows']['student']['nll']):.3f}",
                f"{np.mean(kept):.0%} ({min(kept):.0%}-{max(kept):.0%})",
                f"{mean(lambda r: r[name]['rows']['student']['flops_per_example'] / r[name]['rows']['generalist']['flops_per_example']):.2f}x",
            ]
        )
    table = markdown_table(
        ["model", "test top-1", "NLL", "ensemble's gain kept (range over seeds)", "inference FLOPs (x generalist)"],
        rows,
    )
    print(f"{len(runs)} seeds, {first['student']['flops_per_example']:.0f} FLOP per example for generalist and student")
    print(table)
    if args.record:
        cmd = f"python benchmarks/distill_synthetic.py --seeds {' '.join(map(str, args.seeds))} --fraction {args.fraction}"
        record("distill_synthetic", cmd, table)


if __name__ == "__main__":
    main()

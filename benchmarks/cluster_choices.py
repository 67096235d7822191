"""Which column representation and temperature recover known groups? (docs/method.md §3's choices)

Trains (or reuses) a generalist on CLINC150 (known groups: its 10 domains) and on the glyph
dataset (known groups: base letters), computes its soft predictions on the validation split at
several temperatures, and clusters them with each representation. Prints adjusted Rand index
against the known grouping and the share of the generalist's errors captured inside a group.
By default the generalists are the former defaults the first table was made with (pinned, so it
reproduces); ``--current`` uses today's defaults (the ``ngram`` text model on the default
featuriser with early stopping; the ``resnet`` on the glyphs, 6 epochs as in the demo).

    python benchmarks/cluster_choices.py --data-root ../shared/data --work runs/bench_choices --record
    python benchmarks/cluster_choices.py --data-root ../shared/data --work runs/bench_choices --current --record
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from _results import former_featurizer, markdown_table, record


def prepare(work: Path, data_root: Path, current: bool = False):
    from specens.data.format import INFO_FILE
    from specens.data.glyphs import import_glyphs
    from specens.data.importers import import_clinc150
    from specens.generalist.config import TrainConfig
    from specens.generalist.train import train_generalist

    root = work / "current" if current else work
    if not (root / "clinc" / INFO_FILE).is_file():
        import_clinc150(str(data_root / "clinc150"), str(root / "clinc"), *(() if current else (former_featurizer(),)))
    if not (root / "glyphs" / INFO_FILE).is_file():
        import_glyphs(str(root / "glyphs"), n_classes=200, progress=False)
    clinc, glyphs = str(root / "clinc"), str(root / "glyphs")
    if current:  # today's defaults
        cfgs = (
            TrainConfig(data=clinc, out=str(root / "clinc_gen")),
            TrainConfig(data=glyphs, out=str(root / "glyphs_gen"), epochs=6),
        )
    else:  # the former defaults (bag and cnn) of the first recorded table, pinned so it reproduces
        cfgs = (
            TrainConfig(data=clinc, out=str(root / "clinc_gen"), epochs=8, lr=5e-3, model="bag", patience=0),
            TrainConfig(
                data=glyphs,
                out=str(root / "glyphs_gen"),
                epochs=6,
                model="cnn",
                model_kwargs={"width": 32, "hidden": 256},
                patience=0,
            ),
        )
    sets = {"clinc150": (root / "clinc", cfgs[0]), "glyphs-200": (root / "glyphs", cfgs[1])}
    for _, cfg in sets.values():
        if not (Path(cfg.out) / "model.json").is_file():
            train_generalist(cfg, progress=False)
    return sets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=os.environ.get("SPECENS_DATA", "../shared/data"))
    ap.add_argument("--work", default="runs/bench_choices")
    ap.add_argument("--current", action="store_true", help="today's default generalists instead of the former ones")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    from specens.clustering import ConfusionClusterer, prediction_covariance
    from specens.clustering.groups import REPRESENTATIONS
    from specens.clustering.report import agreement, error_capture
    from specens.data.format import load_info
    from specens.data.shards import iter_split
    from specens.generalist.checkpoint import load_generalist

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (ds, cfg) in prepare(work, Path(args.data_root), args.current).items():
        info = load_info(ds)
        g = load_generalist(cfg.out)
        with torch.no_grad():
            out = [(g.model(b.inputs), b.labels) for b in iter_split(str(ds), "val", 512)]
        z = torch.cat([o[0] for o in out]).double()
        y = torch.cat([o[1] for o in out]).numpy()
        k = sum(len(grp) > 1 for grp in info.groups)
        for t in (1.0, 2.0, 4.0, 8.0):
            cov = prediction_covariance([torch.softmax(z / t, 1)], info.n_classes).covariance()
            for rep in REPRESENTATIONS:
                cl = ConfusionClusterer(k, representation=rep, min_size=1, random_state=0).fit_covariance(cov)
                a = agreement(cl.labels_, info.group_labels())["ari"]
                cap = error_capture(cl.groups_, y, z.argmax(1).numpy(), info.n_classes)["captured"]
                rows.append((name, k, t, rep, a, cap))
                print(rows[-1], flush=True)
    text = markdown_table(
        ["dataset", "K", "T", "representation", "ARI vs known groups", "errors captured"],
        [[n, k, f"{t:g}", r, f"{a:.3f}", f"{c:.1%}"] for n, k, t, r, a, c in rows],
    )
    print(text)
    if args.record:
        current = " --current" if args.current else ""
        record(
            "cluster_choices" + (", today's default generalists" if args.current else ""),
            f"python benchmarks/cluster_choices.py --data-root ../shared/data{current} --record",
            text,
        )


if __name__ == "__main__":
    main()

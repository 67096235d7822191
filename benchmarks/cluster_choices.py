"""Which column representation and temperature recover known groups? (METHOD §3's choices)

Trains (or reuses) a generalist on CLINC150 (known groups: its 10 domains) and on the glyph
dataset (known groups: base letters), computes its soft predictions on the validation split at
several temperatures, and clusters them with each representation. Prints adjusted Rand index
against the known grouping and the share of the generalist's errors captured inside a group.

    python benchmarks/cluster_choices.py --data-root ../shared/data --work runs/bench_choices --record
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from _results import markdown_table, record


def prepare(work: Path, data_root: Path):
    from specens.data.format import INFO_FILE
    from specens.data.glyphs import import_glyphs
    from specens.data.importers import import_clinc150
    from specens.data.text import FORMER_DEFAULT
    from specens.generalist.config import TrainConfig
    from specens.generalist.train import train_generalist

    sets = {}
    if not (work / "clinc" / INFO_FILE).is_file():
        import_clinc150(str(data_root / "clinc150"), str(work / "clinc"), FORMER_DEFAULT)
    # The generalists of the recorded table: the former defaults (bag and cnn), pinned so it reproduces.
    sets["clinc150"] = (work / "clinc", TrainConfig(data=str(work / "clinc"), out=str(work / "clinc_gen"), epochs=8, lr=5e-3,
                                                    model="bag", patience=0))
    if not (work / "glyphs" / INFO_FILE).is_file():
        import_glyphs(str(work / "glyphs"), n_classes=200, progress=False)
    sets["glyphs-200"] = (work / "glyphs", TrainConfig(data=str(work / "glyphs"), out=str(work / "glyphs_gen"), epochs=6,
                                                       model="cnn", model_kwargs={"width": 32, "hidden": 256}, patience=0))
    for _, cfg in sets.values():
        if not (Path(cfg.out) / "model.json").is_file():
            train_generalist(cfg, progress=False)
    return sets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=os.environ.get("SPECENS_DATA", "../shared/data"))
    ap.add_argument("--work", default="runs/bench_choices")
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
    for name, (ds, cfg) in prepare(work, Path(args.data_root)).items():
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
    text = markdown_table(["dataset", "K", "T", "representation", "ARI vs known groups", "errors captured"],
                          [[n, k, f"{t:g}", r, f"{a:.3f}", f"{c:.1%}"] for n, k, t, r, a, c in rows])
    print(text)
    if args.record:
        record("cluster_choices", "python benchmarks/cluster_choices.py --data-root ../shared/data --record", text)

if __name__ == "__main__":
    main()

"""Specialists against the same compute spent otherwise, with every default (issue 15).

Per dataset, the whole pipeline as a user runs it without flags (``specens generalist train``,
``specens cluster``, ``specens specialists train``; ``demo`` is the run ``specens demo`` leaves in
``--demo-run``, made first if missing),
then ``specens baseline``'s alternatives side by side on the test split: (a) the generalist
continued with the specialists' training FLOPs, (b) an ensemble of generalists from other seeds
costing generalist + specialists, and TF-IDF + logistic regression for text. One table per
dataset (top-1, NLL, training FLOPs and seconds, inference FLOPs per example), the specialists'
time split (training / validation / overhead) and gate, and one plot of top-1 against training
FLOPs for every dataset (``benchmarks/figures/compute_matched.png``).

Runs live under ``--work`` (datasets are shared with ``benchmarks/generalists.py``) and are reused
when rerun:

    python benchmarks/compute_matched.py banking77 clinc150 demo --data-root ../shared/data --record

``--pipeline-only`` stops after the specialists (no baselines, no table): the run that
``distill_real.py`` needs, without the hour or more the baselines take at 1,000 glyph classes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from _results import add_settings_option, markdown_table, record
from generalists import HANZI_PER_CLASS, _dataset, work_dir

FIGURE = Path(__file__).with_name("figures") / "compute_matched.png"
ALTERNATIVES = ("continued", "seeds", "wider", "tfidf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+", choices=("clinc150", "banking77", "glyphs", "hanzi", "demo"))
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--work", default="runs/generalists")
    ap.add_argument("--classes", type=int, default=1000, help="glyph classes (the glyphs dataset)")
    ap.add_argument(
        "--train-per-class",
        type=int,
        default=HANZI_PER_CLASS["train_per_class"],
        help="hanzi training renderings per class (spread over the 15 training faces)",
    )
    ap.add_argument("--demo-run", default="runs/demo", help="run directory of `specens demo` (made if missing)")
    add_settings_option(
        ap, "--set", "sets", "a generalist setting changed from its default (every dataset but demo), e.g. epochs=10"
    )
    add_settings_option(
        ap, "--cluster-set", "cluster_sets", "a `specens cluster` setting changed from its default, e.g. n_groups=64"
    )
    add_settings_option(
        ap,
        "--specialist-set",
        "specialist_sets",
        "a `specens specialists train` setting changed from its default, e.g. shared_trunk=1",
    )
    ap.add_argument("--run-name", default="compute_matched", help="the run's folder under the dataset's")
    ap.add_argument("--figure", default=str(FIGURE), help="where the plot goes")
    ap.add_argument("--pipeline-only", action="store_true", help="stop after the specialists (no baselines)")
    ap.add_argument(
        "--only",
        nargs="+",
        choices=ALTERNATIVES,
        default=list(ALTERNATIVES),
        help="the alternatives to train (or reuse) and table; the others are left as they are",
    )
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()

    results = {}
    cmd = (
        f"python benchmarks/compute_matched.py {' '.join(args.datasets)} --data-root {args.data_root}"
        + (f" --classes {args.classes}" if {"glyphs", "hanzi"} & set(args.datasets) else "")
        + (
            f" --train-per-class {args.train_per_class}"
            if args.train_per_class != HANZI_PER_CLASS["train_per_class"]
            else ""
        )
        + "".join(f" --set {s}" for s in args.sets)
        + "".join(f" --cluster-set {s}" for s in args.cluster_sets)
        + "".join(f" --specialist-set {s}" for s in args.specialist_sets)
        + (f" --run-name {args.run_name}" if args.run_name != "compute_matched" else "")
        + (f" --only {' '.join(args.only)}" if list(args.only) != list(ALTERNATIVES) else "")
    )
    for name in args.datasets:
        results[name] = r = _run(name, args)
        if r is None:
            continue
        print(_table(r))
        if args.record:  # each dataset as it is done
            record(f"compute_matched {name}", cmd, _table(r) + "\n\n" + _split(r))
    if not args.pipeline_only:
        _plot(results, Path(args.figure))


def _run(name: str, args) -> dict | None:
    from specens.clustering.cluster import ClusterConfig, cluster
    from specens.core.config import load_config, parse_overrides
    from specens.generalist.config import TrainConfig
    from specens.generalist.train import train_generalist
    from specens.inference.baselines import compute_matched
    from specens.specialists.parallel import train_all
    from specens.specialists.train import SpecialistConfig

    if name == "demo":
        run, data = Path(args.demo_run), str(Path(args.demo_run) / "glyphs")
        if not (run / "evaluation" / "evaluation.json").is_file():
            subprocess.run(["specens", "demo", "--run", str(run), "--no-baseline"], check=True)
    else:
        work = work_dir(name, args)
        data = _dataset(name, work / "data", args)
        run = work / args.run_name
        t = time.perf_counter()
        gen_cfg = load_config(
            TrainConfig, None, {"data": data, "out": str(run / "generalist"), **parse_overrides(args.sets)}
        )
        gen = train_generalist(gen_cfg, progress=False)
        clusters = run / "clusters" / "clusters.json"
        if not clusters.is_file():
            cluster(
                load_config(
                    ClusterConfig,
                    None,
                    {
                        "generalist": gen.run_dir,
                        "data": data,
                        "out": str(clusters.parent),
                        **parse_overrides(args.cluster_sets),
                    },
                ),
                progress=False,
            )
        summary = train_all(
            load_config(
                SpecialistConfig,
                None,
                {
                    "generalist": gen.run_dir,
                    "clusters": str(clusters),
                    "data": data,
                    "out": str(run),
                    **parse_overrides(args.specialist_sets),
                },
            )
        )
        print(f"{name}: pipeline in {time.perf_counter() - t:.0f} s ({len(summary.trained)} specialists trained)")
    if args.pipeline_only:
        return None
    from specens.inference.ensemble import Ensemble
    from specens.inference.evaluate import evaluate_ensemble, format_report

    evaluation = evaluate_ensemble(Ensemble.load(run), data, "test", progress=False)
    print(format_report(evaluation))  # with Table 4, by the number of specialists covering the true class
    report = compute_matched(run, data, "test", progress=False, alternatives=tuple(args.only), evaluation=evaluation)
    r = report.to_json()  # the table as baselines.json holds it
    r["name"], r["specialists"] = (
        name,
        [json.loads(p.read_text()) for p in sorted(run.glob("specialists/s*/specialist.json"))],
    )
    return r


def _table(r: dict) -> str:
    from specens.core.cost import format_flops

    labels = {
        "generalist": "generalist",
        "specialists": "specialist ensemble",
        "continued": "(a) generalist continued, same FLOPs",
        "seeds": "(b) ensemble of generalists",
        "wider": "(c) wider generalist at the ensemble's inference FLOPs",
        "tfidf": "TF-IDF + logistic regression",
    }
    g = r["rows"]["generalist"]
    rows = []
    for key, row in r["rows"].items():
        label = labels[key] + (f", k = {row['members']}" if "members" in row else "")
        err_cut = (row["top1"] - g["top1"]) / (1 - g["top1"])
        flops = (
            f"{format_flops(row['train_flops'])} ({row['train_flops'] / g['train_flops']:.2f}x)"
            if row.get("train_flops")
            else "n/a"
        )
        inf = (
            f"{row['inference_flops_per_example'] / g['inference_flops_per_example']:.2f}x"
            if row.get("inference_flops_per_example")
            else "n/a"
        )
        ms = (
            f"{1e3 * row['seconds_per_example']:.3f} ({row['seconds_per_example'] / g['seconds_per_example']:.2f}x)"
            if row.get("seconds_per_example") and g.get("seconds_per_example")
            else "n/a"
        )
        rows.append(
            [
                label,
                f"{row['top1']:.4f}",
                f"{err_cut:+.1%}",
                f"{row['nll']:.4f}",
                flops,
                f"{row['train_seconds']:.0f}",
                inf,
                ms,
            ]
        )
    return markdown_table(
        [
            "",
            "test top-1",
            "error cut vs generalist",
            "test NLL",
            "training FLOPs (x generalist)",
            "training wall s",
            "inference FLOPs / example (x generalist)",
            "inference ms / example, measured (x generalist)",
        ],
        rows,
    )


def _split(r: dict) -> str:
    specs = r["specialists"]
    on = sum(s["gate"]["on"] for s in specs)
    c = {
        k: sum(s["cost"][k] for s in specs)
        for k in ("wall_seconds", "train_seconds", "validation_seconds", "overhead_seconds")
    }
    epochs = [len(s["metrics"]["history"]) for s in specs]
    best = [s["metrics"]["best_epoch"] for s in specs]
    return (
        f"{len(specs)} specialists, {on} on after the gate; epochs run {min(epochs)}-{max(epochs)} (best "
        f"{min(best)}-{max(best)}); summed over specialists: {c['wall_seconds']:.0f} s wall = training "
        f"{c['train_seconds']:.0f} s ({c['train_seconds'] / c['wall_seconds']:.0%}) + validation "
        f"{c['validation_seconds']:.0f} s + overhead {c['overhead_seconds']:.0f} s (loading, initialisation, "
        "checkpoints; Ray process start-up not included)"
    )


def _plot(results: dict, figure: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"generalist": "o", "specialists": "*", "continued": "s", "seeds": "^", "wider": "D"}
    fig, axes = plt.subplots(2, len(results), figsize=(4.2 * len(results), 7.0), squeeze=False)
    for col, (name, r) in enumerate(results.items()):
        g = r["rows"]["generalist"]
        for ax, key, label in (
            (axes[0][col], "train_flops", "training FLOPs"),
            (axes[1][col], "inference_flops_per_example", "inference FLOPs / example"),
        ):
            for row_key, row in r["rows"].items():
                if row.get(key):
                    ax.scatter(row[key] / g[key], row["top1"], marker=markers.get(row_key, "x"), s=80, label=row_key)
                else:
                    ax.axhline(row["top1"], color="grey", ls="--", lw=0.8, label=row_key)
            ax.set_xlabel(f"{label} (x the generalist's)")
            ax.set_ylabel("test top-1")
            ax.set_title(name)
            ax.legend(fontsize=7)
    fig.tight_layout()
    figure.parent.mkdir(exist_ok=True)
    fig.savefig(figure, dpi=110)
    print(f"saved {figure}")


if __name__ == "__main__":
    main()

"""The specialist ensemble distilled into one student (issue 16), on runs that ``compute_matched.py``
made (generalist, clusters, specialists and the compute-matched baselines, every default).

For each dataset and variant, ``specens distill`` trains a student into ``--work/<dataset>/<variant>``
(reused when rerun) and compares it with the generalist and the ensemble on ``--split``: top-1, NLL,
the share of the ensemble's top-1 gain the student keeps, inference time relative to the generalist
(measured side by side in one pass), and the student's training FLOPs relative to the generalist's.
Variants are ``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE`` (DistillConfig fields); ``default`` is every
default, ``hard`` (alpha = 0: the same fine-tuning on labels alone, the teacher unused) is what the
same extra epochs buy without the ensemble. Choose settings with ``--split val``; report with test.

``--second-round VARIANT`` then takes that variant's student as the generalist of a new round with
every default (``specens cluster``, ``specens specialists train`` through Ray, the gate) in
``--work/<dataset>/round2`` and reports whether its ensemble gains over it again.

    python benchmarks/distill_real.py banking77 clinc150 --split val --variant default \\
        --variant T1:temperature=1 --variant hard:alpha=0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _results import markdown_table, record

RUNS = {  # dataset -> (run directory, dataset directory), as compute_matched.py leaves them
    "banking77": ("runs/generalists/banking77/compute_matched", "runs/generalists/banking77/data"),
    "clinc150": ("runs/generalists/clinc150/compute_matched", "runs/generalists/clinc150/data"),
    "glyphs1000": ("runs/generalists/glyphs1000/compute_matched", "runs/generalists/glyphs1000/data"),
    "demo": ("runs/demo", "runs/demo/glyphs"),  # what `specens demo --out runs/demo` leaves (+ specens baseline)
}


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    return name, dict(kv.split("=", 1) for kv in rest.split(",") if kv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+", choices=sorted(RUNS))
    ap.add_argument("--variant", action="append", default=None, help="NAME[:KEY=VALUE,...]; repeatable")
    ap.add_argument("--split", default="val")
    ap.add_argument("--work", default="runs/distill")
    ap.add_argument("--second-round", metavar="VARIANT", help="a second round on this variant's student")
    ap.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args()
    if args.second_round:
        return second_round(args)
    from specens.inference.distill import distill

    rows = []
    for ds in args.datasets:
        run, data = RUNS[ds]
        for name, overrides in map(parse_variant, args.variant or ["default"]):
            out = Path(args.work) / ds / name
            r = distill(run, data, str(out), overrides=overrides, split=args.split, progress=False).to_json()
            g, e, s = (r["rows"][k] for k in ("generalist", "ensemble", "student"))
            t = r["student_training"]
            kept = "n/a (no gain)" if r["kept"] is None else f"{r['kept']:.0%}"
            rows.append(
                [
                    ds,
                    name,
                    f"{g['top1']:.4f}",
                    f"{e['top1']:.4f}",
                    f"{s['top1']:.4f}",
                    kept,
                    f"{g['nll']:.4f} / {e['nll']:.4f} / {s['nll']:.4f}",
                    f"{r['student_over_generalist_seconds']:.2f}x / {r['ensemble_over_generalist_seconds']:.2f}x",
                    f"{t['train_flops'] / r['generalist_training_flops']:.2f}x, {t['epochs']} ep, "
                    f"{t['wall_seconds']:.0f} s",
                    *(
                        f"{r['baselines'][b]['top1']:.4f}" if b in r.get("baselines", {}) else "-"
                        for b in ("continued", "seeds")
                    ),
                ]
            )
            body = {k: v for k, v in r.items() if k not in ("format", "format_version")}  # not a distill.json
            (out / "summary.json").write_text(json.dumps({"variant": name, "overrides": overrides, **body}, indent=1))
    table = markdown_table(
        [
            "dataset",
            "variant",
            "generalist",
            "ensemble",
            "student",
            "gain kept",
            "NLL g / e / s",
            "time s / e (x generalist)",
            "student training (x generalist FLOPs)",
            "(a) continued",
            "(b) seeds",
        ],
        rows,
    )
    print(table)
    if args.record:
        cmd = (
            "python benchmarks/distill_real.py "
            + " ".join(args.datasets)
            + f" --split {args.split} "
            + " ".join(f"--variant {v}" for v in args.variant or ["default"])
        )
        record(f"Distilled student, {args.split} split", cmd, table)


def second_round(args) -> None:
    from specens.clustering.cluster import ClusterConfig, cluster
    from specens.inference import Ensemble
    from specens.inference.evaluate import evaluate_ensemble
    from specens.specialists.parallel import train_all
    from specens.specialists.train import SpecialistConfig

    rows = []
    for ds in args.datasets:
        run, data = RUNS[ds]
        student = Path(args.work) / ds / args.second_round
        round2 = Path(args.work) / ds / f"round2-{args.second_round}"
        clusters = round2 / "clusters" / "clusters.json"
        if not clusters.is_file():
            cluster(ClusterConfig(generalist=str(student), data=data, out=str(clusters.parent)), progress=False)
        train_all(SpecialistConfig(generalist=str(student), clusters=str(clusters), data=data, out=str(round2)))
        first = evaluate_ensemble(Ensemble.load(run), data, args.split, progress=False)
        second = evaluate_ensemble(Ensemble.load(round2, generalist=student), data, args.split, progress=False)
        for name, r in (("round 1: generalist + specialists", first), ("round 2: student + its specialists", second)):
            rows.append(
                [
                    ds,
                    name,
                    f"{r.generalist.top1:.4f}",
                    f"{r.ensemble.top1:.4f}",
                    f"{r.top1_error_relative_cut:+.1%}",
                    f"{r.generalist.nll:.4f} / {r.ensemble.nll:.4f}",
                    f"{len(r.specialists_on)} of {len(r.specialists_on) + len(r.specialists_gated_off)}",
                ]
            )
        (round2 / "summary.json").write_text(
            json.dumps({"round1": first.to_json(), "round2": second.to_json()}, indent=1)
        )
    table = markdown_table(
        ["dataset", "round", "its generalist", "its ensemble", "error cut", "NLL g / e", "specialists on"], rows
    )
    print(table)
    if args.record:
        cmd = (
            f"python benchmarks/distill_real.py {' '.join(args.datasets)} --split {args.split} "
            f"--second-round {args.second_round}"
        )
        record(f"Distilled student, second round, {args.split} split", cmd, table)


if __name__ == "__main__":
    main()

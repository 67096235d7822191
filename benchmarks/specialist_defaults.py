"""Choosing the specialists' defaults on validation, one change at a time (issue 43).

On a run that already has a generalist, its dataset and its groups (``specens cluster``), trains
one set of specialists per variant into ``--work/<variant>`` (through Ray, every default but the
variant's settings) and scores each **on the validation split only**: the fit reports summed over
the specialists (within-group top-1 of the generalist and of the specialists on their groups'
training examples and validation examples, :mod:`specens.specialists.fit`), how many the gate
keeps, the ensemble's validation top-1 and error cut, and the specialists' training time and FLOPs
against the generalist's. Variants are ``NAME:KEY=VALUE,KEY=VALUE`` (``base`` alone: the defaults).
Every finished set is reused when rerun.

    python benchmarks/specialist_defaults.py --run runs/s1 \
        --variant base --variant 'e30:epochs=30,patience=30' --variant 'a0:alpha=0'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _results import markdown_table, record

from specens.core.config import load_config, parse_overrides
from specens.inference.ensemble import Ensemble
from specens.inference.evaluate import evaluate_ensemble
from specens.specialists.fit import cases, pooled_top1, summarise
from specens.specialists.parallel import train_all
from specens.specialists.train import SpecialistConfig


def run_variant(run: Path, work: Path, name: str, settings: dict, split: str, local: bool) -> list:
    paths = {
        "generalist": str(run / "generalist"),
        "clusters": str(run / "clusters" / "clusters.json"),
        "data": str(run / "data"),
        "out": str(work / name),
    }
    cfg = load_config(SpecialistConfig, None, {**paths, **settings})
    summary = train_all(cfg, local=local, epoch_lines=False, echo=lambda line: None)
    if summary.failed:
        raise SystemExit(f"{name}: specialists {sorted(summary.failed)} failed")
    ens = Ensemble.load(cfg.out, generalist=cfg.generalist, clusters=cfg.clusters)
    report = evaluate_ensemble(ens, cfg.data, split, progress=False)
    fits = report.fit
    train_g, train_s = pooled_top1([f.train for f in fits])
    val_g, val_s = pooled_top1([f.val for f in fits if f.val is not None])
    verdicts = cases(dict(enumerate(fits)))
    cost = report.cost
    flops = cost.specialists.train_flops / cost.generalist.train_flops if cost and cost.generalist else float("nan")
    secs = cost.specialists.train_seconds if cost else float("nan")
    print(f"{name}: {summarise(dict(enumerate(fits)))}", flush=True)
    return [
        name,
        json.dumps(settings) if settings else "defaults",
        f"{train_g:.3f} -> {train_s:.3f}",
        f"{val_g:.3f} -> {val_s:.3f}",
        verdicts,
        f"{report.n_specialists} of {len(fits)}",
        f"{report.generalist.top1:.4f}",
        f"{report.ensemble.top1:.4f}",
        f"{report.top1_error_relative_cut:+.1%}",
        f"{flops:.2f}x",
        f"{secs:.0f}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a directory with data/, generalist/ and clusters/")
    ap.add_argument("--work", default=None, help="where the variants' specialists go (default: RUN/variants)")
    ap.add_argument("--variant", action="append", required=True, help="NAME or NAME:KEY=VALUE,KEY=VALUE")
    ap.add_argument("--split", default="val", help="the split scored (choose defaults on val only)")
    ap.add_argument("--local", action="store_true", help="train in this process, without Ray")
    ap.add_argument("--title", default="", help="names the setup in the recorded table")
    ap.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args()
    run = Path(args.run)
    work = Path(args.work) if args.work else run / "variants"
    rows = []
    for spec in args.variant:
        name, _, sets = spec.partition(":")
        settings = parse_overrides(tuple(s for s in sets.split(",") if s)) if sets else {}
        rows.append(run_variant(run, work, name, settings, args.split, args.local))
    head = [
        "variant",
        "settings",
        "within-group top-1, training (gen -> spec)",
        f"within-group top-1, {args.split}",
        "fit verdicts",
        "kept",
        f"generalist {args.split} top-1",
        f"ensemble {args.split} top-1",
        "error cut",
        "specialists' training FLOPs / generalist's",
        "specialists' training s",
    ]
    table = markdown_table(head, rows)
    print(table)
    if args.record:
        variants = " ".join(f"--variant '{v}'" for v in args.variant)
        command = f"python benchmarks/specialist_defaults.py --run {args.run} --split {args.split} {variants}"
        record(f"specialist_defaults {args.title}".strip(), command, table)


if __name__ == "__main__":
    main()

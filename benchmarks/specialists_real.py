"""Specialist ensembles on real label spaces (issue 6, part 2): the whole pipeline and its ablations.

For one dataset (CLINC150, Banking77, or the glyphs at many classes): import, train the generalist,
cluster its confusions (agreement with the known grouping where there is one, error capture),
train the specialists through Ray, and evaluate generalist vs ensemble on the test split (top-1,
relative improvement, conditional accuracy, Table 4, routing misses). Variants, each a set of
specialists in its own run directory that shares the generalist:

- ``base``: the defaults (disjoint groups, soft targets alpha = 0.5 at T = 1, dustbin correction);
- ``hard``: hard targets only (alpha = 0), no soft-target regularisation;
- ``overlap``: overlapping groups (distance-ratio overlap ``--overlap``, 1.5);
- ``double``: twice as many groups;
- ``long``: the base specialists trained for three times as many epochs;
- ``longhard``: ``long`` with hard targets only (the two changes that helped, together);
- ``longhard-overlap``: ``longhard`` on the overlapping groups;
- ``trunk2``, ``whole``: shared-trunk specialists owning two top blocks of the generalist's net
  instead of one, and whole-network copies (``shared_trunk`` 2 and 0): more capacity where the
  confusions are;

``--current`` runs the variants on today's defaults instead of the former pinned settings: the
generalist given by ``--generalist`` (e.g. the one ``compute_matched.py`` trained with every
default), 8 groups (the former default; ``auto``: the number ``specens cluster`` chooses, ``half``
and ``double``), ``specens specialists train``'s default length (``long``: three times it). With
``--split val`` this is issue 15's protocol for choosing the specialists' defaults on validation
splits only. ``--groups`` replaces the base K and ``--specialist-set KEY=VALUE`` changes a
specialist setting for every set (``hanzi``, issue 27: the shared-trunk specialists of
``compute_matched.py``'s 1,000-class run, on its generalist and data, linked into ``--work``):

    python benchmarks/specialists_real.py hanzi --current --split val --groups 6 \
        --generalist runs/generalists/hanzi1000/r16/generalist --work runs/variants/hanzi1000 \
        --specialist-set shared_trunk=1 --overlap 1.1 --variants double,trunk2,overlap,overlap:top2,whole

``smalldata`` is docs/method.md §4's soft-targets-as-regulariser experiment: two generalists trained on the
same 10% of the training split (``--small-fraction``, a stable subset by key hash) for as many
steps as the full one, one with hard targets only and one with the full generalist's soft targets
(alpha 0.9, T = 1), each exported at its best validation epoch (early stopping), next to the
generalist trained on all the data.

And, at inference time only, ``top2`` (n = 2 routing), ``nocorrect`` (no dustbin bias
correction), ``calibrated`` (a diagnostic, not the method: each dustbin bias fitted by NLL on
the validation examples routed to that specialist) and ``weighted`` (a diagnostic: the
specialists' KL terms weighted by a w fitted by NLL on validation), on the base specialists or, written
``SET:CHANGE`` (``longhard:nocorrect``), on another set. A second table shows, on the
examples of the evaluated split (``--split``) routed to the specialist of their own class, how
often the generalist, the specialist alone (arg-max within its group) and the ensemble are right:
the ensemble can only gain what the specialists know better. Every stage is reused when rerun. Prints a table and
saves each variant's evaluation (JSON + Table 4 PNG) under ``--work``; ``--record`` appends the
table to RESULTS.md.

    python benchmarks/specialists_real.py clinc150 --source ../shared/data/clinc150 --work runs/real/clinc150
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _results import add_settings_option, former_featurizer, markdown_table, record

SETTINGS = {  # generalist and clustering per dataset, sized for 2 CPU cores: the former default models
    # (issue 6's tables; text imported with the former featuriser), pinned so those tables reproduce
    "clinc150": dict(gen=dict(model="bag", epochs=8, batch_size=64, lr=2e-3, patience=0), groups=10, spec_epochs=4),
    "banking77": dict(gen=dict(model="bag", epochs=10, batch_size=64, lr=2e-3, patience=0), groups=8, spec_epochs=4),
    "glyphs": dict(
        gen=dict(model="cnn", epochs=8, batch_size=128, lr=2e-3, model_kwargs={"width": 32, "hidden": 256}, patience=0),
        groups=100,
        spec_epochs=4,
    ),
    # printed Chinese (issue 27): only with --current, on compute_matched.py's generalist and data
    "hanzi": dict(gen=None, groups=6, spec_epochs=2),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(SETTINGS))
    ap.add_argument("--source", help="the raw dataset folder (not needed for glyphs)")
    ap.add_argument("--work", required=True)
    ap.add_argument("--classes", type=int, default=1000, help="glyph classes")
    ap.add_argument("--variants", default="base,top2,nocorrect,calibrated,hard,overlap,double,long")
    ap.add_argument("--small-fraction", type=float, default=0.1, help="training fraction of the smalldata variant")
    ap.add_argument("--spec-epochs", type=int, default=0, help="0: the dataset's default")
    ap.add_argument(
        "--gen-epochs",
        type=int,
        default=0,
        help="0: the dataset's default; fewer gives a compute-limited generalist, the paper's regime",
    )
    ap.add_argument(
        "--split",
        default="test",
        help="split the ensembles are evaluated on: 'val' to choose among variants, 'test' to report",
    )
    ap.add_argument("--local", action="store_true", help="specialists in this process, not through Ray")
    ap.add_argument(
        "--current",
        action="store_true",
        help="today's defaults (clustering, specialists) on the generalist of --generalist",
    )
    ap.add_argument("--generalist", help="with --current: an exported generalist of this dataset, used as is")
    ap.add_argument("--groups", type=int, default=0, help="the base K (0: the dataset's, 8 with --current)")
    ap.add_argument("--overlap", type=float, default=1.5, help="the distance ratio of the overlapping sets")
    add_settings_option(
        ap, "--specialist-set", "specialist_sets", "a specialist setting changed for every set, e.g. shared_trunk=1"
    )
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    from specens.clustering.cluster import ClusterConfig, cluster
    from specens.core.config import load_config, parse_overrides
    from specens.data.format import INFO_FILE, load_info
    from specens.generalist.config import TrainConfig
    from specens.generalist.train import train_generalist
    from specens.inference import Ensemble
    from specens.inference.evaluate import evaluate_ensemble, save_report
    from specens.specialists.parallel import train_all
    from specens.specialists.train import SpecialistConfig

    s = SETTINGS[args.dataset]
    if args.current:
        if not args.generalist:
            raise SystemExit("--current needs --generalist (an exported generalist of this dataset)")
        if args.dataset != "hanzi":
            s = dict(s, groups=8, spec_epochs=SpecialistConfig.epochs)  # 8: the former default K
    elif args.dataset == "hanzi":
        raise SystemExit("hanzi: only with --current (the generalist of compute_matched.py's hanzi run)")
    if args.groups:
        s = dict(s, groups=args.groups)
    changed = parse_overrides(args.specialist_sets)
    if "epochs" in changed:
        raise SystemExit("--specialist-set epochs: use --spec-epochs (the long variants multiply it)")
    spec_epochs = args.spec_epochs or s["spec_epochs"]
    wanted = args.variants.split(",")
    if args.current and "smalldata" in wanted:
        raise SystemExit("--variants smalldata: trains generalists of the pinned settings, not with --current")
    n_groups, long, r = s["groups"], 3 * spec_epochs, args.overlap
    sets = {  # specialist sets: (label, variant_run arguments)
        "base": ("base", dict(groups=n_groups)),
        "hard": ("hard targets only", dict(groups=n_groups, alpha=0.0)),
        "overlap": (f"overlapping groups (r = {r:g})", dict(groups=n_groups, overlap=r)),
        "long": (f"specialists trained {long} epochs", dict(groups=n_groups, epochs=long)),
        "longhard": (f"hard targets, {long} epochs", dict(groups=n_groups, epochs=long, alpha=0.0)),
        "longhard-overlap": (
            f"hard targets, {long} epochs, overlapping groups",
            dict(groups=n_groups, epochs=long, alpha=0.0, overlap=r),
        ),
        "double": (f"{2 * n_groups} groups", dict(groups=2 * n_groups)),
        "trunk2": ("owning the top 2 blocks", dict(groups=n_groups, shared_trunk=2)),
        "whole": ("whole-network copies", dict(groups=n_groups, shared_trunk=0)),
        "wide2": ("the owned blocks widened 2x", dict(groups=n_groups, widen=2)),
        "wide4": ("the owned blocks widened 4x", dict(groups=n_groups, widen=4)),
        "trunk2-wide4": ("owning the top 2 blocks, widened 4x", dict(groups=n_groups, shared_trunk=2, widen=4)),
        "whole-long": (f"whole-network copies, {long} epochs", dict(groups=n_groups, shared_trunk=0, epochs=long)),
        "half": (f"{max(2, n_groups // 2)} groups", dict(groups=max(2, n_groups // 2))),
        "auto": ("K chosen by specens cluster (n_groups = auto)", dict(groups="auto")),
    }
    at_inference = {  # changes at inference only: (label, evaluate arguments)
        "top2": ("n = 2 routing", dict(top_n=2)),
        "nocorrect": ("no dustbin correction", dict(nocorrect=True)),
        "calibrated": ("dustbin bias fitted on routed val (diagnostic)", dict(calibrated=True)),
        "weighted": ("specialists' KL weight w fitted on val (diagnostic)", dict(weighted=True)),
    }
    plan = []
    for name in (w for w in wanted if w != "smalldata"):  # "SET", "CHANGE" (of the base set) or "SET:CHANGE"
        set_name, _, change = name.rpartition(":") if ":" in name else ("base", "", name)
        if change in sets:
            set_name, change = change, ""
        if set_name not in sets or change and change not in at_inference:
            raise SystemExit(
                f"--variants: unknown variant {name!r}; sets {sorted(sets)}, "
                f"changes at inference {sorted(at_inference)}"
            )
        plan.append((set_name, change))
    work = Path(args.work).resolve()
    data = (work / "data").resolve()  # a link to another work directory shares its data and generalist
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    if not (data / INFO_FILE).is_file():
        _import(args.dataset, args.source, str(data), args.classes)
    timings["import"] = time.perf_counter() - t0

    t = time.perf_counter()
    gen_dir = (work / "generalist").resolve()
    if args.current:
        gen_dir = Path(args.generalist).resolve()
    else:
        gen = {**s["gen"], "epochs": args.gen_epochs or s["gen"]["epochs"]}
        train_generalist(TrainConfig(data=str(data), out=str(gen_dir), threads=2, **gen), progress=False)
    timings["generalist"] = time.perf_counter() - t

    trained: dict[str, Path] = {}

    def variant_run(name: str, groups: int, overlap: float | None = None, epochs: int = 0, **spec) -> Path:
        if name in trained:
            return trained[name]
        run = work / name
        (run / "clusters").mkdir(parents=True, exist_ok=True)
        if not (run / "generalist").exists():
            os.symlink(gen_dir, run / "generalist")
        t = time.perf_counter()
        if not (run / "clusters" / "clusters.json").is_file():
            rep = cluster(
                ClusterConfig(
                    generalist=str(gen_dir), data=str(data), out=str(run / "clusters"), n_groups=groups, overlap=overlap
                ),
                progress=False,
            )
            print(f"{name}: {rep.summary()}", flush=True)
        given = {
            "generalist": str(gen_dir),
            "clusters": str(run / "clusters" / "clusters.json"),
            "data": str(data),
            "out": str(run),
            "epochs": str(epochs or spec_epochs),
        }
        cfg = load_config(SpecialistConfig, None, {**given, **changed, **{k: str(v) for k, v in spec.items()}})
        summary = train_all(cfg, local=args.local, restart=True, echo=lambda *a: None)
        if summary.failed:
            raise SystemExit(f"{name}: specialists failed: {summary.failed}; rerun to resume them")
        timings[name] = time.perf_counter() - t
        trained[name] = run
        return run

    rows, results = [], {}

    runs: dict[str, Path] = {}  # variants with specialists of their own, for the within-group table

    def evaluate(name: str, run: Path, **change) -> None:
        if not change:
            runs[name] = run
        ens = Ensemble.load(run, top_n=change.pop("top_n", 1))
        if change.pop("nocorrect", False):
            ens.corrections = [0.0] * len(ens.corrections)
        if change.pop("calibrated", False):
            ens.corrections = _routed_fit(ens, str(data), "val")
        if change.pop("weighted", False):
            ens.specialist_weight = _weight_fit(ens, str(data), "val")
            name = f"{name}: w = {ens.specialist_weight:g}"
        r = evaluate_ensemble(ens, str(data), args.split, progress=False)
        save_report(r, work / "evaluations" / (name if args.split == "test" else f"{name} ({args.split})"))
        report = json.loads((run / "clusters" / "report.json").read_text())
        results[name] = r.to_json()
        g, e = r.generalist, r.ensemble
        agr = report.get("agreement") or {}
        rows.append(
            [
                name,
                r.n_specialists,
                f"{r.mean_active_specialists:.2f}",
                f"{agr['ari']:.2f}" if agr else "–",
                f"{report['error_capture']['captured']:.0%}",
                f"{g.top1:.4f}",
                f"{e.top1:.4f}",
                f"{r.top1_relative_improvement:+.1%}",
                f"{r.top1_error_relative_cut:+.1%}",
                f"{g.conditional:.4f} → {e.conditional:.4f}",
                f"{r.routing.missed_fraction:.1%}",
            ]
        )
        print(rows[-1], flush=True)

    small_rows = []
    if "smalldata" in wanted:
        from specens.generalist.evaluate import evaluate_generalist

        full = evaluate_generalist(str(gen_dir), str(data), "test", progress=False)
        small_rows.append(["all the data, hard targets", "100%", f"{full['top1']:.4f}", f"{full['nll']:.3f}"])
        n_train = load_info(str(data)).split("train").num_samples
        for label, teacher in (("hard targets only", ()), ("soft targets of the full generalist", (str(gen_dir),))):
            t = time.perf_counter()
            out = work / ("small-soft" if teacher else "small-hard")
            cfg = TrainConfig(
                data=str(data),
                out=str(out),
                threads=2,
                train_fraction=args.small_fraction,
                epoch_size=n_train,
                teacher=teacher,
                alpha=0.9,
                temperature=1.0,
                **gen,
            )
            train_generalist(cfg, progress=False)
            m = evaluate_generalist(str(out), str(data), "test", progress=False)
            small_rows.append(
                [
                    f"{args.small_fraction:.0%} of the data, {label}",
                    f"{args.small_fraction:.0%}",
                    f"{m['top1']:.4f}",
                    f"{m['nll']:.3f}",
                ]
            )
            timings[out.name] = time.perf_counter() - t
            print(small_rows[-1], flush=True)
    for set_name, change in plan:
        label, kw = sets[set_name]
        run = variant_run(set_name, **kw)
        if change:
            what, how = at_inference[change]
            evaluate(f"{what}" if set_name == "base" else f"{label}, {what}", run, **how)
        else:
            evaluate(label, run)
    tables = [
        markdown_table(
            [
                "variant",
                "specialists",
                "mean active",
                "ARI",
                "error capture",
                "generalist top-1",
                "ensemble top-1",
                "relative",
                "error cut",
                "conditional",
                "routing missed",
            ],
            rows,
        )
    ]
    if runs:
        tables.append(
            markdown_table(
                [
                    f"routed {args.split} examples of the specialist's own group",
                    "examples",
                    "generalist right",
                    "specialist alone right",
                    "ensemble right",
                    "specialist right, q sent out by its dustbin",
                    "routed, class in no active group",
                    "ensemble right",
                ],
                [[name, *_within_group(Ensemble.load(run), str(data), args.split)] for name, run in runs.items()],
            )
        )
    if small_rows:
        tables.append(
            markdown_table(
                ["docs/method.md §4: generalist trained on", "training data", "test top-1", "test NLL"], small_rows
            )
        )
    seconds = {k: round(v) for k, v in timings.items()}
    print("\n\n".join(tables), "\n\nseconds:", seconds)
    (work / "results.json").write_text(
        json.dumps({"rows": rows, "timings": timings, "results": results}, indent=1, default=str)
    )
    if args.record:
        src = f" --source {args.source}" if args.source else ""
        cls = f" --classes {args.classes}" if args.dataset == "glyphs" else ""
        cls += f" --gen-epochs {args.gen_epochs}" * bool(args.gen_epochs)
        cls += f" --spec-epochs {args.spec_epochs}" * bool(args.spec_epochs)
        cls += f" --split {args.split}" * (args.split != "test")
        cls += f" --current --generalist {args.generalist}" * args.current
        cls += f" --groups {args.groups}" * bool(args.groups)
        cls += f" --overlap {args.overlap:g}" * (args.overlap != 1.5)
        cls += "".join(f" --specialist-set {kv}" for kv in args.specialist_sets)
        record(
            f"specialists_real {args.dataset}",
            f"python benchmarks/specialists_real.py {args.dataset}{src}{cls} --work {args.work} "
            f"--variants {args.variants} --record",
            "\n\n".join(tables) + f"\n\nWall seconds: {json.dumps(seconds)}",
        )


@torch.no_grad()
def _routed(ens, data: str, split: str):
    """Inputs, labels and routing of a whole split (small datasets only)."""
    from specens.data.shards import iter_split

    xs, ys = zip(*((b.inputs, b.labels) for b in iter_split(data, split, 512)), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    return x, y, ens.forward(x)


@torch.no_grad()
def _routed_fit(ens, data: str, split: str) -> list[float]:
    """Per specialist, the dustbin bias minimising NLL on the examples of ``split`` routed to it
    (grid search over [-4, 6] in steps of 0.05)."""
    from specens.specialists.model import hard_targets

    x, y, out = _routed(ens, data, split)
    grid = torch.arange(-4, 6.0001, 0.05)
    fitted = []
    for m, (spec, g) in enumerate(zip(ens.specialists, ens.groups, strict=True)):
        rows = out.active[:, m]
        if not rows.any():
            fitted.append(ens.corrections[m])
            continue
        z, t = spec(x[rows]).float(), hard_targets(y[rows], g, ens.n_classes)
        nll = [float(F.cross_entropy(torch.cat([z[:, :-1], z[:, -1:] + b], 1), t)) for b in grid]
        fitted.append(float(grid[int(torch.tensor(nll).argmin())]))
    return fitted


@torch.no_grad()
def _weight_fit(ens, data: str, split: str, grid=(0.5, 1, 1.5, 2, 3, 4, 6, 8, 16)) -> float:
    """The specialists' KL weight w (combine_distributions' ``specialist_weight``) of ``grid`` with
    the lowest NLL of q on ``split``; the networks run once, the solve once per w."""
    from specens.data.shards import iter_split

    parts = [(*ens.experts(b.inputs), b.labels) for b in iter_split(data, split, 512)]
    nll = {}
    for w in grid:
        nll[w] = -sum(
            float(torch.log(ens.combine(p_g, a, ps, w).double().gather(1, y[:, None]).clamp_min(1e-30)).sum())
            for p_g, a, ps, y in parts
        )
        print(f"w = {w:g}: {split} NLL {nll[w] / sum(len(p[3]) for p in parts):.4f}", flush=True)
    return float(min(grid, key=nll.get))


@torch.no_grad()
def _within_group(ens, data: str, split: str) -> list:
    """Routed examples of the specialist's own group: [count, generalist right, specialist alone
    right (arg-max within its group), ensemble right, the specialist alone right but the ensemble's
    arg-max outside the group (its dustbin sent q away)]; then routed examples whose class no
    active specialist holds (the generalist is wrong on them by construction): [count, ensemble right]."""
    x, y, out = _routed(ens, data, split)
    n = gen = alone = both = sent_out = 0
    for m, (spec, g) in enumerate(zip(ens.specialists, ens.groups, strict=True)):
        rows = (out.active[:, m] & torch.isin(y, g)).nonzero().flatten()
        if len(rows):
            pred = g[spec(x[rows]).float()[:, :-1].argmax(1)]
            n += len(rows)
            gen += int((out.p_general[rows].argmax(1) == y[rows]).sum())
            alone += int((pred == y[rows]).sum())
            pred_q = out.q[rows].argmax(1)
            both += int((pred_q == y[rows]).sum())
            sent_out += int(((pred == y[rows]) & ~torch.isin(pred_q, g)).sum())
    elsewhere = out.active.any(1) & ~(out.active & ens.membership[:, y].T).any(1)
    return [
        n,
        gen,
        alone,
        both,
        sent_out,
        int(elsewhere.sum()),
        int((out.q[elsewhere].argmax(1) == y[elsewhere]).sum()),
    ]


def _import(dataset: str, source: str | None, out: str, n_classes: int) -> None:
    from specens.data import importers
    from specens.data.glyphs import import_glyphs

    if dataset == "glyphs":
        import_glyphs(out, n_classes=n_classes)
    elif source is None:
        raise SystemExit(f"{dataset}: --source is required")
    elif dataset == "clinc150":
        importers.import_clinc150(source, out, former_featurizer())
    else:
        importers.import_banking77(source, out, former_featurizer())


if __name__ == "__main__":
    main()

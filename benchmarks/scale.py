"""The whole pipeline at C = 1,000 to 10,000 classes and M = 100 to 500 specialists (issue 17, part 4).

The data are the synthetic hierarchical importer's (``specens data synthetic``: C classes in
planted groups of 10, 32-d inputs, 20 training, 5 validation and 5 test examples per class), so
the label space can grow without a larger real dataset; the models are the default array model
(an MLP, one hidden layer of 256). Each stage runs in a fresh process, so its peak resident memory
(``ru_maxrss``) is its own:

1. import — write the shards;
2. generalist — 2 epochs;
3. cluster — the C x C covariance of the soft predictions on the validation split and k-means
   into M groups (``n_groups = M``);
4. specialists — the one-pass partition of the data (``specialists/partition.py``), then every
   specialist, 1 epoch each with routed validation and the gate, trained one after another in one
   process (``train_all(local=True)``: on 2 cores Ray would add a worker process per specialist
   and nothing else, and one process makes its peak memory measurable);
5. infer — ``specens infer`` over the test split with the default specialist memory budget and
   the specialists the gate kept (``--budget``: again with every specialist on, all loaded and
   with memory for only 10 of them).

Per stage: wall seconds and peak MiB, and, across the sizes run, the growth exponent of each
(the slope of log time against log C, and against log M at a fixed C). Runs are kept under
``--work`` and stages already done are reused (delete the folder to remeasure):

    python benchmarks/scale.py --classes 1000 3000 10000 --specialists 100 --record
    python benchmarks/scale.py --classes 10000 --specialists 100 300 500 --budget --record
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import resource
import time
from pathlib import Path

from _results import markdown_table, record

STAGES = ("import", "generalist", "cluster", "specialists", "infer")
HANZI = False  # --hanzi: every GB2312 character from the benchmark fonts instead of the synthetic classes
HANZI_PER_CLASS = dict(train_per_class=30, val_per_class=4, test_per_class=6)  # 2 renders per training face
HANZI_GENERALIST = dict(model="resnet", model_kwargs={"width": 16, "depth": 1})  # the 3,755-class comparison's


def _stage(name: str, c: int, m: int, root: str, threads: int, hanzi: bool = False) -> dict:
    """One stage, in its own process: returns its wall seconds and peak RSS (MiB)."""
    import torch

    torch.set_num_threads(threads)
    root = Path(root)
    data, run = str(root / "data"), root / (m if isinstance(m, str) else f"M{m}")
    t = time.perf_counter()
    extra = {}
    if name == "import" and hanzi:
        from generalists import hanzi_fonts

        from specens.data.glyphs import import_glyphs

        import_glyphs(data, n_classes=None, fonts=hanzi_fonts(), charset="gb2312", **HANZI_PER_CLASS, workers=threads)
        extra["classes"] = json.loads((Path(data) / "dataset.json").read_text())["source"]["n_classes"]
    elif name == "import":
        from specens.data.synthetic import import_synthetic

        import_synthetic(data, n_classes=c, n_groups=c // 10, dim=32, n_train=20, n_val=5, n_test=5, seed=0)
    elif name == "generalist":
        from specens.generalist.config import TrainConfig
        from specens.generalist.train import train_generalist

        model = HANZI_GENERALIST if hanzi else dict(batch_size=256, lr=3e-3, model_kwargs={"hidden": [256]})
        train_generalist(
            TrainConfig(data=data, out=str(root / "generalist"), epochs=2, threads=threads, **model), progress=False
        )
        meta = json.loads((root / "generalist" / "model.json").read_text())
        extra["val_top1"] = meta["metrics"]["history"][-1].get("val_top1")
        extra["train_top1"] = meta["metrics"]["history"][-1].get("train_top1")
    elif name == "cluster":
        from specens.clustering.cluster import ClusterConfig, cluster

        run.mkdir(parents=True, exist_ok=True)
        if not (run / "generalist").exists():  # the run layout Ensemble.load reads; one generalist for every M
            (run / "generalist").symlink_to("../generalist")
        cluster(
            ClusterConfig(
                generalist=str(root / "generalist"),
                data=data,
                out=str(run / "clusters"),
                n_groups=int(str(m).lstrip("MT")),
            ),
            progress=False,
        )
        extra["groups"] = len(json.loads((run / "clusters" / "clusters.json").read_text())["groups"])
    elif name == "specialists":
        from specens.specialists.parallel import train_all
        from specens.specialists.train import SpecialistConfig

        s = train_all(
            SpecialistConfig(
                generalist=str(root / "generalist"),
                clusters=str(run / "clusters" / "clusters.json"),
                data=data,
                out=str(run),
                epochs=2 if hanzi else 1,
                shared_trunk=1 if hanzi else 0,
                threads=threads,
                checkpoint_every=600,
            ),
            local=True,
            echo=lambda _: None,
        )
        extra["trained"] = len(s.trained) + len(s.skipped)
    elif name == "evaluate":
        from specens.inference.ensemble import Ensemble
        from specens.inference.evaluate import evaluate_ensemble, save_report

        r = evaluate_ensemble(Ensemble.load(str(run)), data, "test", progress=False)
        save_report(r, run / "evaluation")
        extra |= {"generalist_top1": r.generalist.top1, "ensemble_top1": r.ensemble.top1, "kept": len(r.specialists_on)}
    elif name == "quick-specialists":  # for inference throughput only: one batch of training each
        from specens.specialists.parallel import train_all
        from specens.specialists.train import SpecialistConfig

        s = train_all(
            SpecialistConfig(
                generalist=str(root / "generalist"),
                clusters=str(run / "clusters" / "clusters.json"),
                data=data,
                out=str(run),
                epochs=1,
                epoch_size=128,
                val_split="",
                init_batches=1,
                threads=threads,
                checkpoint_every=600,
            ),
            local=True,
            echo=lambda _: None,
        )
        extra["trained"] = len(s.trained) + len(s.skipped)
    elif name.startswith("infer"):
        from specens.inference.ensemble import Ensemble
        from specens.inference.infer import infer

        kw = {}
        if name in ("infer-all", "infer-budget"):  # every specialist on, whatever its gate says
            kw["all_specialists"] = True
        if name == "infer-budget":  # memory for 10 specialists: the rest load from disk as routed
            one = sum(
                t.numel() * t.element_size()
                for t in Ensemble.load(str(run), device="cpu", all_specialists=True)
                .specialists[0]
                .state_dict()
                .values()
            )
            kw["specialist_memory"] = 10 * one
        t = time.perf_counter()
        split = "train" if run.name.startswith("T") else "test"  # throughput: the larger split, steadier
        man = infer(str(run), data, str(run / f"predictions-{name}"), split=split, device="cpu", progress=False, **kw)
        extra["examples"] = man["n_samples"]
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"seconds": seconds, "peak_mib": peak, **extra}


def _run(name, c, m, root, threads) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_stage, (name, c, m, root, threads, HANZI))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, nargs="+", default=[1000, 3000, 10000])
    ap.add_argument("--specialists", type=int, nargs="+", default=[100])
    ap.add_argument("--work", default="runs/scale")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--throughput",
        type=int,
        nargs="*",
        default=[],
        metavar="M",
        help="inference throughput at these M on the first C (specialists trained on one batch each)",
    )
    ap.add_argument(
        "--budget",
        action="store_true",
        help="also run inference with memory for only 10 specialists (the rest loaded as routed)",
    )
    ap.add_argument(
        "--hanzi",
        action="store_true",
        help="every GB2312 character the benchmark fonts share, instead of synthetic classes (--classes names "
        "the run; --specialists 0: the clustering's own choice); shared-trunk specialists, 2 epochs, and an "
        "evaluation on the test faces",
    )
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    if args.throughput:
        return throughput(args)
    global HANZI
    HANZI = args.hanzi
    stages = (*STAGES, "evaluate") if HANZI else STAGES
    results = {}
    for c in args.classes:
        root = Path(args.work) / f"C{c}"
        for m in args.specialists:
            for name in stages:
                if name in ("import", "generalist") and m != args.specialists[0]:
                    results[c, m, name] = results[c, args.specialists[0], name]
                    continue
                done = (
                    root / f"M{m}" / f"{name}.json" if name not in ("import", "generalist") else root / f"{name}.json"
                )
                if not done.is_file():
                    done.parent.mkdir(parents=True, exist_ok=True)
                    done.write_text(json.dumps(_run(name, c, m, str(root), args.threads)))
                results[c, m, name] = json.loads(done.read_text())
                r = results[c, m, name]
                print(f"C={c} M={m} {name}: {r['seconds']:.0f} s, peak {r['peak_mib']:.0f} MiB", flush=True)
    rows = []
    for c, m in sorted({(c, m) for c, m, _ in results}):
        per = [results[c, m, s] for s in STAGES]
        inf = results[c, m, "infer"]
        rows.append(
            [
                f"{c:,}",
                m,
                *(f"{r['seconds']:.0f} s / {r['peak_mib']:,.0f}" for r in per),
                f"{sum(r['seconds'] for r in per) / 60:.1f} min",
                f"{max(r['peak_mib'] for r in per) / 1024:.2f}",
                f"{inf['examples'] / inf['seconds']:,.0f}",
            ]
        )
    table = markdown_table(
        ["C", "M", *(f"{s} (s / peak MiB)" for s in STAGES), "total", "peak GiB", "infer examples/s"], rows
    )
    growth = _growth(results, args)
    for (c, m, name), r in sorted(results.items()):
        if name == "evaluate":
            gen = results[c, m, "generalist"]
            growth += (
                f"\n\nC={c:,}, M={m}: generalist training top-1 {gen['train_top1']:.4f}, validation "
                f"{gen['val_top1']:.4f}; test top-1 generalist {r['generalist_top1']:.4f}, ensemble "
                f"{r['ensemble_top1']:.4f} ({r['kept']} specialists kept by the gate)"
            )
    if args.budget:
        rows = []
        for c, m in sorted({(c, m) for c, m, _ in results}):
            r = {}
            for name in ("infer-all", "infer-budget"):
                done = Path(args.work) / f"C{c}" / f"M{m}" / f"{name}.json"
                if not done.is_file():
                    done.write_text(json.dumps(_run(name, c, m, str(Path(args.work) / f"C{c}"), args.threads)))
                r[name] = json.loads(done.read_text())
            rows.append(_throughput_row(c, m, results[c, m, "cluster"], r["infer-all"], r["infer-budget"]))
        growth += (
            "\n\nInference on the test split with every specialist on (gates overridden):\n\n" + _throughput_table(rows)
        )
    print(table + "\n\n" + growth)
    if args.record:
        cmd = (
            "python benchmarks/scale.py --classes "
            + " ".join(map(str, args.classes))
            + " --specialists "
            + " ".join(map(str, args.specialists))
            + (" --budget" if args.budget else "")
            + (" --hanzi" if args.hanzi else "")
        )
        record("scale", cmd, table + "\n\n" + growth)


def throughput(args) -> None:
    """Inference at several M on one generalist: specialists trained on a single batch each (the
    cost of inference does not depend on how well they were trained), ``specens infer`` over the
    training split (20 examples per class) with every specialist loaded (the default memory
    budget) and with room for 10; examples per second of the whole command, loading included."""
    c = args.classes[0]
    root = Path(args.work) / f"C{c}"
    rows = []
    for name in ("import", "generalist"):
        if not (root / f"{name}.json").is_file():
            root.mkdir(parents=True, exist_ok=True)
            (root / f"{name}.json").write_text(json.dumps(_run(name, c, 0, str(root), args.threads)))
    for m in args.throughput:
        r = {}
        for name in ("cluster", "quick-specialists", "infer", "infer-budget"):
            done = root / f"T{m}" / f"{name}.json"
            if not done.is_file():
                done.parent.mkdir(parents=True, exist_ok=True)
                done.write_text(json.dumps(_run(name, c, f"T{m}", str(root), args.threads)))
            r[name] = json.loads(done.read_text())
        rows.append(_throughput_row(c, m, r["cluster"], r["infer"], r["infer-budget"]))
    table = _throughput_table(rows)
    print(table)
    if args.record:
        record(
            "scale throughput",
            f"python benchmarks/scale.py --classes {c} --throughput " + " ".join(map(str, args.throughput)),
            table,
        )


def _throughput_row(c, m, cluster, infer, budget) -> list:
    return [
        f"{c:,}",
        m,
        cluster["groups"],
        f"{infer['examples'] / infer['seconds']:,.0f}",
        f"{infer['peak_mib']:,.0f}",
        f"{budget['examples'] / budget['seconds']:,.0f}",
        f"{budget['peak_mib']:,.0f}",
    ]


def _throughput_table(rows) -> str:
    return markdown_table(
        ["C", "M asked", "groups", "examples/s, all loaded", "peak MiB", "examples/s, room for 10", "peak MiB"], rows
    )


def _growth(results, args) -> str:
    """Slopes of log seconds and log peak memory against log C (and log M), between the extremes."""
    lines = []
    cs, ms = sorted(args.classes), sorted(args.specialists)
    for axis, pairs in (("C", [((c, ms[0]), c) for c in cs]), ("M", [((cs[-1], m), m) for m in ms])):
        if len(pairs) < 2:
            continue
        (a, xa), (b, xb) = pairs[0], pairs[-1]
        parts = []
        for s in STAGES:
            ra, rb = results[(*a, s)], results[(*b, s)]
            t = math.log(rb["seconds"] / ra["seconds"]) / math.log(xb / xa)
            mem = math.log(rb["peak_mib"] / ra["peak_mib"]) / math.log(xb / xa)
            parts.append(f"{s} time ~{axis}^{t:.2f}, memory ~{axis}^{mem:.2f}")
        lines.append(f"Growth with {axis} ({xa:,} -> {xb:,}): " + "; ".join(parts) + ".")
    return "\n\n".join(lines)


if __name__ == "__main__":
    main()

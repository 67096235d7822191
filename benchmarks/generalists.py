"""Generalists against the baselines a practitioner tries first (issue 13).

Per dataset, side by side in one run, each row's training wall time measured here:

- text (CLINC150, Banking77): the default generalist (``specens generalist train`` with no
  settings: the ``ngram`` model on the default featuriser, early stopping on validation) against
  TF-IDF (word 1-2 and ``char_wb`` 2-5 grams, sublinear TF) + LogisticRegression(C=10) from
  scikit-learn, on the same splits (read by the importers' own readers); ``--former`` adds the
  former default (the ``bag`` model on the former featuriser: word 1-2 and character 3-grams, 96
  tokens, with repeats), trained as RESULTS.md's issue-6 runs were.
- printed Chinese (``hanzi``: ``--classes`` characters of GB2312 level 1, a seeded sample, from the
  20 faces of :data:`HANZI_PACKAGES`, test faces never seen in training): the default generalist;
  the training top-1 column says whether it under-fits (the regime of issue 27);
- images (glyphs at ``--classes`` classes, Fashion-MNIST): the default generalist (``resnet``,
  early stopping) against the former ``cnn`` as RESULTS.md's issue-6 runs trained it
  (``--former``: width 32, hidden 256, 8 epochs, as the demo and the glyph runs trained it).

Datasets and runs live under ``--work`` and are reused when rerun (delete a run to retime it).
Prints a table; ``--record`` appends it to RESULTS.md.

    python benchmarks/generalists.py clinc150 banking77 --data-root ../shared/data --former --record
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _results import former_featurizer, markdown_table, record

DATASETS = ("clinc150", "banking77", "glyphs", "hanzi", "fashion-mnist")
# Printed Chinese (issue 27): exactly these Debian packages' faces, so that results are comparable
# (20 faces once regional variants and pixel-identical siblings are dropped).
HANZI_PACKAGES = (
    "fonts-noto-cjk",
    "fonts-noto-cjk-extra",
    "fonts-arphic-ukai",
    "fonts-arphic-uming",
    "fonts-arphic-gbsn00lp",
    "fonts-arphic-gkai00mp",
    "fonts-wqy-zenhei",
    "fonts-wqy-microhei",
)
HANZI_FONTS = (
    "/usr/share/fonts/opentype/noto",
    "/usr/share/fonts/truetype/arphic",
    "/usr/share/fonts/truetype/arphic-gbsn00lp",
    "/usr/share/fonts/truetype/arphic-gkai00mp",
    "/usr/share/fonts/truetype/wqy",
)
HANZI_PER_CLASS = dict(
    train_per_class=240, val_per_class=8, test_per_class=12
)  # 16 renders per training face, 4 per validation and test face (15 / 2 / 3 faces)
FORMER = {  # the former default model, trained as the issue-6 benchmarks did (no early stopping)
    "clinc150": dict(model="bag", epochs=8, batch_size=64, patience=0),
    "banking77": dict(model="bag", epochs=10, batch_size=64, patience=0),
    "glyphs": dict(model="cnn", model_kwargs={"width": 32, "hidden": 256}, epochs=8, patience=0),
    "fashion-mnist": dict(model="cnn", model_kwargs={"width": 32, "hidden": 256}, epochs=8, patience=0),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+", choices=DATASETS)
    ap.add_argument(
        "--data-root", default="../shared/data", help="folder holding clinc150/, banking77/, fashion-mnist/"
    )
    ap.add_argument("--work", default="runs/generalists")
    ap.add_argument("--classes", type=int, default=1000, help="glyph classes")
    ap.add_argument(
        "--train-per-class",
        type=int,
        default=HANZI_PER_CLASS["train_per_class"],
        help="hanzi training renderings per class (spread over the 15 training faces)",
    )
    ap.add_argument("--former", action="store_true", help="also train the former default model")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainConfig setting of the default row (e.g. epochs=10 to fit a time budget)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()

    from specens.core.config import parse_overrides

    overrides = parse_overrides(args.overrides)
    rows = []
    for name in args.datasets:
        work = work_dir(name, args)
        data = _dataset(name, work / "data", args)
        label = "default" + "".join(f", {o}" for o in args.overrides)
        rows.append(_generalist_row(name, data, work / "default", overrides, label, args.threads))
        if args.former:
            fdata = (
                _dataset(name, work / "data-former", args, former=True) if name in ("clinc150", "banking77") else data
            )
            rows.append(_generalist_row(name, fdata, work / "former", FORMER[name], "former default", args.threads))
        if name in ("clinc150", "banking77"):
            rows.append(_tfidf_row(name, args.data_root))
    columns = [
        "dataset",
        "model",
        "train top-1 (best epoch)",
        "val top-1",
        "test top-1",
        "test NLL",
        "epochs (best / run)",
        "train wall s",
        "parameters",
        "MFLOP / example",
    ]
    table = markdown_table(columns, rows)
    print(table)
    if args.record:
        cmd = "python benchmarks/generalists.py " + " ".join(args.datasets) + f" --data-root {args.data_root}"
        cmd += (f" --classes {args.classes}" if {"glyphs", "hanzi"} & set(args.datasets) else "") + (
            " --former" if args.former else ""
        )
        cmd += "".join(f" --set {o}" for o in args.overrides)
        record("generalists " + ", ".join(args.datasets), cmd, table)


def work_dir(name: str, args) -> Path:
    """The dataset's folder under ``--work``: glyph sets are named by their class count (and the
    hanzi training renderings per class where not the default), so no two sizes share one."""
    if name not in ("glyphs", "hanzi"):
        return Path(args.work) / name
    per_class = args.train_per_class if name == "hanzi" else HANZI_PER_CLASS["train_per_class"]
    suffix = f"-t{per_class}" if per_class != HANZI_PER_CLASS["train_per_class"] else ""
    return Path(args.work) / f"{name}{args.classes}{suffix}"


def _dataset(name: str, out: Path, args, former: bool = False) -> str:
    from specens.data import importers
    from specens.data.format import INFO_FILE
    from specens.data.glyphs import import_glyphs
    from specens.data.text import HashedNgrams

    if (out / INFO_FILE).is_file():
        return str(out)
    src = Path(args.data_root) / name
    featurizer = former_featurizer() if former else HashedNgrams()
    t = time.perf_counter()
    if name == "clinc150":
        importers.import_clinc150(str(src), str(out), featurizer)
    elif name == "banking77":
        importers.import_banking77(str(src), str(out), featurizer)
    elif name == "glyphs":
        import_glyphs(str(out), n_classes=args.classes)
    elif name == "hanzi":
        import_glyphs(
            str(out),
            n_classes=args.classes,
            fonts=hanzi_fonts(),
            charset="gb2312-1",
            **{**HANZI_PER_CLASS, "train_per_class": args.train_per_class},
        )
    else:
        importers.import_idx(str(src), str(out), "fashion-mnist", importers.FASHION_CLASSES)
    print(f"{name}: imported into {out} in {time.perf_counter() - t:.0f} s")
    return str(out)


def hanzi_fonts() -> list[str]:
    """The benchmark's font folders; stops with the install command when they are missing."""
    missing = [d for d in HANZI_FONTS if not Path(d).is_dir()]
    if missing:
        raise SystemExit(
            f"hanzi: fonts missing ({', '.join(missing)}); install them with\n"
            f"  sudo apt-get update && sudo apt-get install -y {' '.join(HANZI_PACKAGES)}"
        )
    return list(HANZI_FONTS)


def _generalist_row(name: str, data: str, out: Path, settings: dict, label: str, threads: int) -> list:
    from specens.core.config import load_config
    from specens.generalist.checkpoint import load_generalist, read_record
    from specens.generalist.config import TrainConfig
    from specens.generalist.evaluate import evaluate_generalist
    from specens.generalist.train import train_generalist

    done = (out / "model.json").is_file()
    t = time.perf_counter()
    if not done:
        cfg = load_config(TrainConfig, None, {"data": data, "out": str(out), "threads": threads, **settings})
        train_generalist(cfg, progress=False)
    wall = time.perf_counter() - t
    record = read_record(out)
    hist = record.metrics.history
    if done:  # reused: the time recorded when it was trained
        wall = sum(h.seconds for h in hist)
    m = evaluate_generalist(str(out), data, "test", progress=False)
    spec = record.model
    n_params = sum(p.numel() for p in load_generalist(out).model.parameters())
    model = f"{label}: {spec['name']} {json.dumps(spec['kwargs'], separators=(',', ':'))}"
    print(f"{name} {label}: top-1 {m['top1']:.4f} in {wall:.0f} s")
    best = hist[record.metrics.best_epoch - 1]
    val = best.val_top1
    flops = record.metrics.cost.flops_per_example
    return [
        name,
        model,
        f"{best.train_top1:.4f}",
        f"{val:.4f}" if val is not None else "",
        f"{m['top1']:.4f}",
        f"{m['nll']:.3f}",
        f"{record.metrics.best_epoch} / {len(hist)}",
        f"{wall:.0f}",
        f"{n_params / 1e6:.2f} M",
        f"{flops / 1e6:.1f}",
    ]


def _tfidf_row(name: str, data_root: str) -> list:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.pipeline import make_pipeline, make_union

    from specens.data import importers

    src = str(Path(data_root) / name)
    classes, splits = importers.read_clinc150(src)[:2] if name == "clinc150" else importers.read_banking77(src)
    t = time.perf_counter()
    model = make_pipeline(
        make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
        ),
        LogisticRegression(C=10, max_iter=1000),
    )
    model.fit([x for x, _ in splits["train"]], [c for _, c in splits["train"]])
    wall = time.perf_counter() - t
    val = model.score([x for x, _ in splits["val"]], [c for _, c in splits["val"]])
    texts, labels = [x for x, _ in splits["test"]], [c for _, c in splits["test"]]
    top1 = model.score(texts, labels)
    nll = log_loss(labels, model.predict_proba(texts), labels=model.classes_)
    print(f"{name} TF-IDF + LR: top-1 {top1:.4f} in {wall:.0f} s")
    n_params = model[-1].coef_.size + model[-1].intercept_.size
    return [
        name,
        "TF-IDF (word 1-2 + char_wb 2-5, sublinear) + LogisticRegression(C=10)",
        "",
        f"{val:.4f}",
        f"{top1:.4f}",
        f"{nll:.3f}",
        "",
        f"{wall:.0f}",
        f"{n_params / 1e6:.2f} M",
        "",
    ]


if __name__ == "__main__":
    main()

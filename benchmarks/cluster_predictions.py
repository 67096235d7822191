"""``specens cluster --predictions`` on a model trained elsewhere: the issue's check on Banking77.

Fits TF-IDF (word 1-2 grams and char_wb 2-5 grams) + logistic regression with scikit-learn on
Banking77's training split less the stratified 10% the project holds out as ``val``
(``read_banking77``), saves its logits on that held-out 10% as a predictions file, runs the real
``specens cluster --predictions`` on it (K chosen from the error capture), and fits
``ConfusionClusterer`` directly on the same probabilities (softmax at the command's T = 4) with that
K. Prints the model's accuracy, the groups found, the share of its errors they capture, and whether
the two sets of groups are identical.

    python benchmarks/cluster_predictions.py --data-root ../shared/data --work runs/bench_cluster_predictions --record
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _results import markdown_table, record


def fit_logits(data_root: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str], float]:
    """The logistic regression's logits (n, 77) on the held-out 10%, its labels, the class names
    and the seconds the fit took."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_union

    from specens.data.importers import read_banking77

    classes, splits = read_banking77(str(data_root / "banking77"), 0.1, seed)
    index = {c: i for i, c in enumerate(classes)}
    (x_train, y_train), (x_held, y_held) = (
        ([t for t, _ in splits[s]], np.array([index[c] for _, c in splits[s]])) for s in ("train", "val")
    )
    start = time.perf_counter()
    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    )
    model = LogisticRegression(C=10, max_iter=1000).fit(features.fit_transform(x_train), y_train)
    logits = model.decision_function(features.transform(x_held))  # (n, 77), columns in class-index order
    return logits, y_held, classes, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--work", type=Path, default=Path("runs/bench_cluster_predictions"))
    ap.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args()
    from scipy.special import softmax

    from specens.clustering import ConfusionClusterer
    from specens.clustering.cluster import DEFAULT_TEMPERATURE, load_clusters

    logits, labels, classes, fit_s = fit_logits(args.data_root)
    args.work.mkdir(parents=True, exist_ok=True)
    preds, out = args.work / "banking77_logreg.npz", args.work / "clusters"
    np.savez(preds, logits=logits, labels=labels, classes=np.array(classes))

    start = time.perf_counter()
    specens = Path(sys.executable).with_name("specens")
    subprocess.run([specens, "cluster", "--predictions", preds, "--out", out, "--quiet"], check=True)
    cluster_s = time.perf_counter() - start
    report = json.loads((out / "report.json").read_text())
    k = report["n_groups_search"]["chosen"]
    direct = ConfusionClusterer(k).fit(softmax(logits / DEFAULT_TEMPERATURE, axis=1))
    groups = load_clusters(out / "clusters.json").groups
    same = [g.tolist() for g in groups] == [g.tolist() for g in direct.groups_]
    sizes = [len(g) for g in groups]
    cap = report["error_capture"]
    row = [
        "Banking77, held-out 10% of train",
        len(labels),
        f"{(logits.argmax(1) == labels).mean():.3f}",
        cap["errors"],
        k,
        len(groups),
        f"{min(sizes)}-{max(sizes)}",
        f"{cap['captured']:.1%}",
        "yes" if same else "NO",
        f"{fit_s:.0f}",
        f"{cluster_s:.1f}",
    ]
    cols = [
        "transfer set",
        "examples",
        "top-1",
        "errors",
        "K chosen",
        "groups",
        "sizes",
        "errors captured",
        "groups identical to the estimator's",
        "fit s",
        "cluster s",
    ]
    text = markdown_table(cols, [row])
    print(text)
    if args.record:
        record(
            "cluster_predictions (TF-IDF + logistic regression, specens cluster --predictions)",
            "python benchmarks/cluster_predictions.py --record",
            text,
        )
    if not same:
        sys.exit(
            "the groups of `specens cluster --predictions` differ from ConfusionClusterer's on the same probabilities"
        )


if __name__ == "__main__":
    main()

"""Covariance + grouping at C = 1,000, 5,000 and 15,000 classes on streamed synthetic predictions.

Each size runs in its own process so that its peak memory (ru_maxrss) is its own. Prints a table;
``--record`` appends it to benchmarks/RESULTS.md. Target (issue 3): 15,000 classes in under
2 minutes and under 8 GiB on a 2-core, 24 GiB machine.

    python benchmarks/cluster_scale.py --samples 100000 --record
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from _results import markdown_table, record


def one(c: int, samples: int, top_k: int, group_size: int, dtype: str) -> dict:
    import numpy as np
    import torch
    from sklearn.metrics import adjusted_rand_score

    from specens.clustering import ConfusionClusterer, CovarianceAccumulator
    from specens.data.synthetic import synthetic_predictions

    torch.set_num_threads(os.cpu_count() or 1)
    groups, batches = synthetic_predictions(samples, c, group_size, batch_size=2000, seed=0)
    acc = CovarianceAccumulator(c, top_k=top_k or None, dtype=dtype, check=False)
    t0 = time.perf_counter()
    t_gen = 0.0
    while True:
        g0 = time.perf_counter()
        try:
            p, _ = next(batches)
        except StopIteration:
            break
        t_gen += time.perf_counter() - g0
        acc.update(p)
    cov = acc.covariance()
    dropped = acc.dropped_mass / acc.count
    del acc
    t_cov = time.perf_counter() - t0 - t_gen
    t1 = time.perf_counter()
    cl = ConfusionClusterer(len(groups), algorithm="minibatch", n_components="auto", random_state=0).fit_covariance(cov)
    t_fit = time.perf_counter() - t1
    truth = np.empty(c, dtype=int)
    for i, g in enumerate(groups):
        truth[g] = i
    return {
        "classes": c,
        "samples": samples,
        "top_k": top_k or "exact",
        "storage": dtype,
        "generate_s": round(t_gen, 1),
        "covariance_s": round(t_cov, 1),
        "grouping_s": round(t_fit, 1),
        "total_s": round(t_cov + t_fit, 1),
        "peak_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "ari": round(adjusted_rand_score(truth, cl.labels_), 3),
        "dropped_mass": round(dropped, 4),
    }


RUNS = [  # (classes, top_k, storage): exact where it fits the time, sparse top-k above
    (1000, 0, "float64"),
    (5000, 0, "float32"),
    (5000, 64, "float64"),
    (15000, 64, "float64"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--group-size", type=int, default=20)
    ap.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        c, k, dtype = args.one.split(",")
        print(json.dumps(one(int(c), args.samples, int(k), args.group_size, dtype)))
        return
    rows = []
    for c, k, dtype in RUNS:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                f"{c},{k},{dtype}",
                "--samples",
                str(args.samples),
                "--group-size",
                str(args.group_size),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    cols = [
        "classes",
        "samples",
        "top_k",
        "storage",
        "covariance_s",
        "grouping_s",
        "total_s",
        "peak_gib",
        "ari",
        "dropped_mass",
        "generate_s",
    ]
    text = markdown_table(cols, [[r[c] for c in cols] for r in rows])
    print(text)
    if args.record:
        record("cluster_scale", f"python benchmarks/cluster_scale.py --samples {args.samples} --record", text)


if __name__ == "__main__":
    main()

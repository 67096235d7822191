"""Parallel specialist training: N specialists on 1 and on W single-threaded Ray workers.

Builds a synthetic dataset, a generalist and N groups, then trains the N specialists twice
through Ray, with 1 and with W CPUs in the local cluster (one CPU and one torch thread per
specialist), side by side in one run. Reports the speed-up T(1)/T(W) against the ideal min(W, N).
Target (issue 4): within 15% of ideal.

    python benchmarks/ray_scaling.py --specialists 4 --workers 2 --record
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from _results import markdown_table, record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specialists", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a loopback-only local cluster
    import numpy as np
    import ray

    from specens.clustering.cluster import save_clusters
    from specens.data.format import load_info
    from specens.data.synthetic import import_synthetic
    from specens.generalist.config import TrainConfig
    from specens.generalist.train import train_generalist
    from specens.specialists.parallel import train_all
    from specens.specialists.train import SpecialistConfig

    work = Path(tempfile.mkdtemp(prefix="ray_scaling."))
    n = args.specialists
    import_synthetic(str(work / "data"), n_classes=8 * n, n_groups=n, dim=64, n_train=400, n_val=50, n_test=10, seed=0)
    gen = train_generalist(
        TrainConfig(data=str(work / "data"), out=str(work / "gen"), epochs=1, model_kwargs={"hidden": [512, 512]}),
        progress=False,
    )
    info = load_info(work / "data")
    groups = [np.arange(8 * m, 8 * m + 8) for m in range(n)]
    save_clusters(work / "clusters.json", groups, info.classes, gen.fingerprint, {})
    times = {}
    for w in (1, args.workers):
        ray.init(num_cpus=w, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
        ray.get([ray.remote(lambda: 0).remote() for _ in range(w)])  # start the worker pool before timing
        cfg = SpecialistConfig(
            generalist=gen.run_dir,
            clusters=str(work / "clusters.json"),
            data=str(work / "data"),
            out=str(work / f"run{w}"),
            epochs=args.epochs,
            threads=1,
            val_split="val",
        )
        t0 = time.perf_counter()
        s = train_all(cfg, cpus_per_specialist=1, restart=True, echo=lambda line: None)
        times[w] = time.perf_counter() - t0
        assert len(s.trained) == n, s
        ray.shutdown()
        print(f"{n} specialists on {w} worker(s): {times[w]:.1f} s", flush=True)
    speedup = times[1] / times[args.workers]
    ideal = min(args.workers, n)
    table = markdown_table(
        ["specialists", "workers", "wall s (1 worker)", "wall s (W workers)", "speed-up", "ideal", "of ideal"],
        [
            [
                n,
                args.workers,
                f"{times[1]:.1f}",
                f"{times[args.workers]:.1f}",
                f"{speedup:.2f}",
                ideal,
                f"{speedup / ideal:.0%}",
            ]
        ],
    )
    print(table)
    if args.record:
        record(
            "ray_scaling",
            f"python benchmarks/ray_scaling.py --specialists {n} --workers {args.workers} "
            f"--epochs {args.epochs} --record",
            table,
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

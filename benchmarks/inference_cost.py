"""Ensemble vs generalist-only inference throughput, against the predicted ratio (issue 5).

With sparse execution each example costs one generalist pass plus one pass of each active
specialist, so the time ratio ensemble / generalist should be

    predicted = 1 + (mean active specialists) × (specialist cost / generalist cost)

where both costs are per example, each at the batch size it runs at: the generalist on whole
batches, a specialist on the sub-batch routing gives it (on average B × mean active / M examples;
on a CPU the cost per example depends on the batch size, so this matters). What the prediction
leaves out shows as the difference: routing, the gather/scatter and the KL solve. Timings alternate generalist and ensemble passes over the same batches
(median of ``--repeats``). Needs a trained run, e.g. the one ``specens demo`` leaves:

    specens demo --run runs/demo
    python benchmarks/inference_cost.py --run runs/demo --data runs/demo/glyphs --record

Target (issue 5): measured ratio within 10% of the predicted one.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _results import markdown_table, record


def _timed(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--batch-sizes", default="256,1024")
    ap.add_argument("--top-n", default="1,2")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    from specens.data.shards import iter_split
    from specens.inference import Ensemble

    ens = Ensemble.load(args.run, device=args.device)
    dev = ens.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rows = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        xs = [b.inputs.to(dev) for b in iter_split(args.data, args.split, bs)]
        xs = [x for x in xs if len(x) == bs] or xs[:1]  # full batches only
        n = sum(len(x) for x in xs)
        gen = ens.generalist.model
        with torch.no_grad():

            def run_gen():
                for x in xs:
                    gen(x)

            run_gen()  # warm-up
            t_gen = statistics.median(_timed(run_gen, sync) for _ in range(args.repeats))
            for top_n in [int(t) for t in args.top_n.split(",")]:
                ens.top_n = top_n
                active = sum(float(ens.forward(x).active.sum()) for x in xs) / n
                sub = max(1, round(bs * active / len(ens.groups)))  # a specialist's mean sub-batch

                def run_spec():  # the specialists in turn, one sub-batch each
                    for x in xs:
                        for i, chunk in enumerate(x.split(sub)):
                            ens.specialists[i % len(ens.specialists)](chunk)

                run_spec()
                t_spec = statistics.median(_timed(run_spec, sync) for _ in range(args.repeats))

                def run_ens():
                    for x in xs:
                        ens.forward(x)

                t_gen2, t_ens = [], []
                for _ in range(args.repeats):  # alternate, so drift affects both alike
                    t_gen2.append(_timed(run_gen, sync))
                    t_ens.append(_timed(run_ens, sync))
                g, e = statistics.median(t_gen2), statistics.median(t_ens)
                predicted = 1 + active * t_spec / t_gen
                measured = e / g
                rows.append(
                    [
                        bs,
                        top_n,
                        len(ens.groups),
                        f"{active:.2f}",
                        sub,
                        f"{n / g:,.0f}",
                        f"{n / e:,.0f}",
                        f"{t_spec / t_gen:.2f}",
                        f"{predicted:.2f}",
                        f"{measured:.2f}",
                        f"{measured / predicted - 1:+.1%}",
                    ]
                )
                print(rows[-1], flush=True)
    table = markdown_table(
        [
            "batch",
            "top-n",
            "specialists",
            "mean active",
            "spec. sub-batch",
            "generalist ex/s",
            "ensemble ex/s",
            "spec/gen cost",
            "predicted ratio",
            "measured ratio",
            "measured vs predicted",
        ],
        rows,
    )
    print(table)
    if args.record:
        record(
            "inference_cost", f"python benchmarks/inference_cost.py --run {args.run} --data {args.data} --record", table
        )


if __name__ == "__main__":
    main()

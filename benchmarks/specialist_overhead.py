"""A specialist's wall time split into training, validation and overhead, with the training state
written after every epoch (``checkpoint_every=0``, the former behaviour) against the default (once
a minute and after the last epoch), issue 15. The same specialists, config otherwise as the run
trained them, one thread each as in a Ray task, run in turn in this process:

    python benchmarks/specialist_overhead.py runs/generalists/banking77/compute_matched --record
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _results import markdown_table, record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="run directory whose specialists/s000 config is reused")
    ap.add_argument("--specialists", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()

    from specens.core.config import load_config
    from specens.specialists.train import SpecialistConfig, train_specialist

    saved = json.loads((Path(args.run) / "specialists" / "s000" / "specialist.json").read_text())["config"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for every in (0.0, 60.0):
            for m in args.specialists:
                cfg = load_config(
                    SpecialistConfig, None, {**saved, "out": f"{tmp}/{every}", "checkpoint_every": every, "threads": 1}
                )
                c = train_specialist(cfg, m).cost
                rows.append(
                    [
                        f"{every:g} s" + (" (former: every epoch)" if not every else " (default)"),
                        m,
                        c.epochs,
                        f"{c.wall_seconds:.1f}",
                        f"{c.train_seconds:.1f}",
                        f"{c.train_seconds / c.wall_seconds:.0%}",
                        f"{c.validation_seconds:.1f}",
                        f"{c.overhead_seconds:.1f}",
                    ]
                )
                print(rows[-1], flush=True)
    table = markdown_table(
        [
            "checkpoint_every",
            "specialist",
            "epochs",
            "wall s",
            "training s",
            "training share",
            "validation s",
            "overhead s",
        ],
        rows,
    )
    print(table)
    if args.record:
        record("specialist_overhead", f"python benchmarks/specialist_overhead.py {args.run} --record", table)


if __name__ == "__main__":
    main()

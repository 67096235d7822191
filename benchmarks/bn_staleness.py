"""Whether the generalist's batch-norm running statistics are current when it is validated, and
over how many batches (``bn_batches``) to recompute them.

Trains the default generalist on the demo's glyphs (``--classes`` of them, the embedded DejaVu
faces) with the running averages as trained (``bn_batches=0``), keeping every epoch's weights, and
scores each epoch's net on validation: as such a loop validates it (eval mode, the running
statistics), with each batch's own statistics (BN layers in train mode, no gradient), and in eval
mode after the statistics are recomputed (:func:`specens.core.batchnorm.recompute_batch_norm`) over
K shuffled training batches, for each K of ``--k`` and over one whole training pass. Where the
first is far below the others, the loop validated a net whose statistics lag its weights; where a
K reads what the whole pass reads, K batches are enough.

    python benchmarks/bn_staleness.py --classes 30 --epochs 8 --k 4,8,16,32,64 --record
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import tempfile
from pathlib import Path

import torch
from _results import markdown_table, record
from safetensors.torch import load_file

from specens.core.batchnorm import recompute_batch_norm
from specens.data.glyphs import import_glyphs
from specens.data.shards import SHUFFLE_BUFFER, Batches, Cycle, Pipeline, Read, Shuffle, Split, iter_split
from specens.generalist.checkpoint import load_generalist
from specens.generalist.config import TrainConfig
from specens.generalist.train import train_generalist


@torch.no_grad()
def top1(model: torch.nn.Module, data: str, split: str, batch_stats: bool = False) -> float:
    model.train(batch_stats)
    right = n = 0
    for b in iter_split(data, split, 256):
        right += int((model(b.inputs).argmax(1) == b.labels).sum())
        n += len(b)
    return right / n


def recalibrate(model: torch.nn.Module, data: str, batch_size: int, k: int | None) -> None:
    """Batch-norm statistics recomputed over ``k`` shuffled training batches (None: one whole pass)."""
    split = Split.of(data, "train")
    stages = Cycle(Read()), Shuffle(SHUFFLE_BUFFER, split.num_samples), Batches(batch_size)
    batches = (b.inputs for b in Pipeline(split, *stages, seed=1))
    recompute_batch_norm(model, batches if k is None else itertools.islice(batches, k))


class _Stop(Exception):
    pass


def _train_keeping_every_epoch(cfg: TrainConfig, keep: Path) -> list[Path]:
    """Train ``cfg``, stopping after each epoch to copy its weights (the loop keeps only the latest
    state) and resuming, which continues exactly; returns each epoch's weights file."""
    keep.mkdir()
    files = []
    for e in range(cfg.epochs):

        def stop(epoch, record, e=e):
            if epoch == e and e < cfg.epochs - 1:
                raise _Stop

        try:
            train_generalist(cfg, progress=False, on_epoch_end=stop)
        except _Stop:
            pass
        files.append(keep / f"{e}.safetensors")
        shutil.copy(Path(cfg.out) / "checkpoints" / f"epoch-{e:04d}" / "model.safetensors", files[-1])
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--k", default="4,8,16,32,64", help="batch counts to recompute the statistics over")
    ap.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, out = str(Path(tmp) / "glyphs"), str(Path(tmp) / "generalist")
        import_glyphs(data, n_classes=args.classes, progress=False)
        cfg = TrainConfig(data=data, out=out, epochs=args.epochs, checkpoint_every=0, patience=0, bn_batches=0)
        ks = [int(k) for k in args.k.split(",")] + [None]
        weights = _train_keeping_every_epoch(cfg, Path(tmp) / "epochs")
        trained = load_generalist(out)
        model, history = trained.spec.build(False), trained.record.metrics.history
        rows = []
        for e, h in enumerate(history):
            model.load_state_dict(load_file(weights[e]))
            scores = [top1(model, data, "val"), top1(model, data, "val", True)]
            for k in ks:
                recalibrate(model, data, cfg.batch_size, k)
                scores.append(top1(model, data, "val"))
            rows.append([e + 1, f"{h.train_top1:.3f}", *(f"{s:.3f}" for s in scores)])
            print(*rows[-1], flush=True)
    head = ["epoch", "training-stream top-1", "val, running averages", "val, batch statistics"]
    table = markdown_table(head + [f"val, recomputed over {k} batches" for k in ks[:-1]] + ["val, one pass"], rows)
    print(table)
    if args.record:
        record(
            "bn_staleness",
            f"python benchmarks/bn_staleness.py --classes {args.classes} --epochs {args.epochs} --k {args.k}",
            table,
        )


if __name__ == "__main__":
    main()

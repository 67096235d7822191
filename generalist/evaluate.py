"""Evaluating a classifier on a split, and writing its logits for later stages to reuse."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from specens.core.config import param
from specens.core.device import autocast, resolve_device
from specens.core.errors import ConfigError
from specens.core.io import check_target, publish_dir, write_json_atomic
from specens.core.progress import progress_bar
from specens.core.records import Record, read_report
from specens.data.format import INFO_FILE
from specens.data.shards import Batch, iter_split

from .checkpoint import load_generalist


class Metrics:
    """Running top-1, top-5 and negative log-likelihood over batches of logits."""

    def __init__(self):
        self.n, self.top1, self.top5, self.nll = 0, 0, 0, 0.0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """logits: (B, C); labels: (B,) int64."""
        logits = logits.float()
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices  # (B, k)
        hit = topk == labels[:, None]
        self.top1 += int(hit[:, 0].sum())
        self.top5 += int(hit.any(1).sum())
        self.nll += float(F.cross_entropy(logits, labels, reduction="sum"))
        self.n += len(labels)

    def result(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {"n": self.n, "top1": self.top1 / n, "top5": self.top5 / n, "nll": self.nll / n}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[Batch],
    device: torch.device,
    amp: bool = True,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, float]:
    """Top-1, top-5 and NLL of ``model`` over ``batches``; leaves the model in eval mode."""
    model.eval()
    m = Metrics()
    for batch in progress_bar(batches, desc=desc, unit="batch", enabled=progress, leave=False):
        b = batch.to(device)
        with autocast(device, amp):
            logits = model(b.inputs)
        m.update(logits, b.labels)
    return m.result()


PREDICT_FILES = ("logits.npy", "labels.npy", "keys.txt", "predictions.json")
PREDICT_FORMAT = "specens.generalist-predictions"  # predictions.json's header: what check_target trusts
PREDICT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class PredictionsRecord(Record):
    """``predictions.json``, beside the logits ``specens generalist predict`` wrote: the generalist
    (its run directory and fingerprint), the dataset and split they are of, and the logits' shape."""

    ARTIFACT = (PREDICT_FORMAT, PREDICT_VERSION)
    generalist: str
    generalist_fingerprint: str
    data: str
    split: str
    n_samples: int = param(ge=0)
    n_classes: int = param(ge=2)


def read_predictions_record(out: str | Path) -> PredictionsRecord:
    """``predictions.json`` in ``out`` (a ``specens generalist predict`` output), checked."""
    path = Path(out) / "predictions.json"
    return read_report(PredictionsRecord, path, PREDICT_FORMAT, PREDICT_VERSION, "specens generalist predict")


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}")


def evaluate_generalist(
    run_dir: str,
    data: str,
    split: str = "test",
    batch_size: int = 512,
    device: str = "auto",
    progress: bool = True,
    trust_code: bool = False,
) -> dict[str, float]:
    """``specens generalist eval``: top-1, top-5 and NLL of an exported generalist on one split."""
    _check_batch_size(batch_size)
    dev = resolve_device(device)
    g = load_generalist(run_dir, dev, trust_code)
    loader = iter_split(data, split, batch_size)
    g.check_fits(loader.stream.info, run_dir, f"{data}/{INFO_FILE}")
    return evaluate(g.model, loader, dev, progress=progress, desc=f"eval {split}")


@torch.no_grad()
def predict_generalist(
    run_dir: str,
    data: str,
    split: str,
    out: str,
    batch_size: int = 512,
    device: str = "auto",
    progress: bool = True,
    trust_code: bool = False,
) -> PredictionsRecord:
    """``specens generalist predict``: write the logits of one split, in the split's order.

    Writes into ``out``: ``logits.npy`` float32 of shape (n_samples, n_classes), ``labels.npy``
    int64 of shape (n_samples,), ``keys.txt`` (one sample key a line), then ``predictions.json``
    (:class:`PredictionsRecord`, returned); the folder is published whole when complete, replacing
    an earlier output (never a folder of other files).
    """
    _check_batch_size(batch_size)
    check_target(out, PREDICT_FILES, "a `specens generalist predict` output", "predictions.json")
    dev = resolve_device(device)
    g = load_generalist(run_dir, dev, trust_code)
    loader = iter_split(data, split, batch_size)
    info = loader.stream.info
    g.check_fits(info, run_dir, f"{data}/{INFO_FILE}")
    n, c = info.split(split).num_samples, g.n_classes
    meta = PredictionsRecord(
        generalist=str(run_dir),
        generalist_fingerprint=g.fingerprint,
        data=str(data),
        split=split,
        n_samples=n,
        n_classes=c,
    )

    def write(tmp: Path) -> None:
        labels = np.empty(n, dtype=np.int64)
        keys: list[str] = []
        logits = np.lib.format.open_memmap(tmp / "logits.npy", mode="w+", dtype=np.float32, shape=(n, c))
        i = 0
        for batch in progress_bar(loader, desc=f"predict {split}", unit="batch", enabled=progress):
            z = g.model(batch.inputs.to(dev)).float().cpu().numpy()
            logits[i : i + len(z)] = z
            labels[i : i + len(z)] = batch.labels.numpy()
            keys += batch.keys
            i += len(z)
        logits.flush()
        del logits
        np.save(tmp / "labels.npy", labels)
        (tmp / "keys.txt").write_bytes(("\n".join(keys) + "\n").encode())
        write_json_atomic(tmp / "predictions.json", meta.to_json())

    publish_dir(out, write, own=PREDICT_FILES, what="a `specens generalist predict` output", record="predictions.json")
    return meta

"""The data every specialist reads, split out in one pass (docs/method.md §4, §5).

Specialist m reads two subsets that are small when M is large: the training examples of its
group S_m (half of each enriched batch) and the validation examples the generalist routes to it
(its model selection and gate, :mod:`.gate`). Found by filtering, each specialist walks the
whole training split and runs the generalist over the whole validation split: the specialists
stage costs O(M·N), which at 10,000 classes and 100 specialists was 91% of the pipeline's time.
Here both are written out once per run, before any specialist trains:

- ``train``: one pass over the training split; example (x, y) goes to every group holding y;
- ``val``: one pass of the generalist over the validation split; an example goes to every group
  holding one of its ``top_n`` classes (the routing of docs/method.md §5 that inference will use).

so the stage costs O(N + Σ_m |its subsets|). The result lives in ``<out>/specialists/groups/``
(shards in the dataset's own format, :mod:`specens.data.parts`, and ``groups.json``), published
atomically, and is reused while its key holds: the dataset's ``dataset.json`` (hashed), the
clusters, the generalist (for ``val``), ``val_split`` and ``top_n``. Anything else changed, it is
rebuilt; interrupted, it is rebuilt from the start (one pass). It takes about the disk space of
the training split (more where groups overlap) plus the routed validation examples.

The examples a specialist sees are exactly those the filters would find, in another order (tested).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from specens.core.errors import CheckpointError
from specens.core.io import check_no_links, publish_dir, read_artifact_json, write_json_atomic
from specens.core.records import Record
from specens.data.format import DatasetInfo
from specens.data.parts import Parts, partition_split

from .model import route

FORMAT, FORMAT_VERSION = "specens.groups", 1
MANIFEST = "groups.json"
PARTITION_FILES = (MANIFEST, "train-*.tar", "val-*.tar")  # what the partition's directory holds


def partition_dir(out: str | Path) -> Path:
    return Path(out) / "specialists" / "groups"


@dataclass(frozen=True)
class Partition:
    """Each group's training examples and routed validation examples (``val`` None without a
    validation split). ``root, info = partition.source(m, "train")`` opens as
    ``Split.of(root, "train", info)``."""

    root: Path
    dataset: DatasetInfo
    train: Parts
    val: Parts | None

    def source(self, index: int, split: str) -> tuple[Path, DatasetInfo]:
        """(root, info) of group ``index``'s part of ``split`` (``"train"`` or ``"val"``); the info's
        one split is named ``split``."""
        parts = self.train if split == "train" else self.val
        if parts is None:
            raise ValueError(f"{self.root}: no {split!r} part (the specialists have no validation split)")
        return parts.root, parts.info(self.dataset, index, split)


def dataset_hash(info: DatasetInfo) -> str:
    """16 hex digits identifying a dataset's ``dataset.json`` content (its shards' names, sizes and counts)."""
    return hashlib.sha256(json.dumps(info.to_json(), sort_keys=True).encode()).hexdigest()[:16]


def partition_key(info: DatasetInfo, clusters_fp: str, generalist_fp: str, val_split: str, top_n: int) -> dict:
    """What the partition depends on; a stored partition with another key is rebuilt."""
    return {
        "dataset": dataset_hash(info),
        "clusters_fingerprint": clusters_fp,
        "generalist_fingerprint": generalist_fp if val_split else None,
        "val_split": val_split,
        "top_n": top_n if val_split else None,
    }


@dataclass(frozen=True, kw_only=True)
class _Manifest(Record):
    """``groups.json``: what the partition was made for (:func:`partition_key`) and each split's
    parts (:class:`~specens.data.parts.Parts` as JSON, checked by its ``from_json``; ``val`` null
    without a validation split)."""

    ARTIFACT = (FORMAT, FORMAT_VERSION)
    key: dict[str, Any]
    train: list[dict[str, Any]]
    val: list[dict[str, Any]] | None


def load_partition(out: str | Path, key: dict, info: DatasetInfo, n_parts: int) -> Partition | None:
    """The partition stored under ``out`` if it is complete, made for ``key`` and holds
    ``n_parts`` parts; else None (a manifest that is not one, edited or damaged, is rebuilt)."""
    root = partition_dir(out)
    where = str(root / MANIFEST)
    try:
        m = _Manifest.from_json(read_artifact_json(root / MANIFEST, FORMAT, FORMAT_VERSION), where)
        if m.key != key or (key["val_split"] and m.val is None):
            return None
        train = Parts.from_json(root, m.train, info.n_classes, where)
        val = None if m.val is None else Parts.from_json(root, m.val, info.n_classes, where)
    except CheckpointError:
        return None
    if len(train.parts) != n_parts or (val is not None and len(val.parts) != n_parts):
        return None
    return Partition(root, info, train, val)


def build_partition(
    out: str | Path,
    key: dict,
    generalist: torch.nn.Module,
    groups: list[list[int]],
    data: str,
    info: DatasetInfo,
    val_split: str,
    top_n: int,
    device: torch.device,
    batch_size: int = 512,
) -> Partition:
    """Write the partition (see the module doc) and return it. ``generalist`` in eval mode on ``device``."""
    membership = torch.zeros(len(groups), info.n_classes, dtype=torch.bool)  # (M, C)
    for m, g in enumerate(groups):
        membership[m, g] = True

    def by_label(inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return membership[:, labels].T  # (B, M)

    @torch.no_grad()
    def by_route(inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        p = F.softmax(generalist(inputs.to(device)).float(), dim=1).cpu()  # (B, C)
        return route(p, membership, top_n)  # (B, M)

    def write(tmp: Path) -> None:
        train = partition_split(data, "train", tmp, len(groups), by_label, info=info, batch_size=batch_size)
        val = (
            partition_split(data, val_split, tmp, len(groups), by_route, info=info, prefix="val", batch_size=batch_size)
            if val_split
            else None
        )  # "val" even if val_split is "train"
        manifest = _Manifest(key=key, train=train.to_json(), val=None if val is None else val.to_json())
        write_json_atomic(tmp / MANIFEST, manifest.to_json())

    final = check_no_links(out, partition_dir(out))
    publish_dir(final, write, own=PARTITION_FILES, what="the specialists' data partition")
    return load_partition(out, key, info, len(groups))


def ensure_partition(
    out: str | Path,
    generalist,
    clusters,
    data: str,
    info: DatasetInfo,
    val_split: str,
    top_n: int,
    device: torch.device,
    echo=None,
) -> Partition:
    """The stored partition if it is current, else a new one (``generalist``: a loaded
    :class:`~specens.generalist.checkpoint.Generalist`; ``clusters``: loaded clusters)."""
    key = partition_key(info, clusters.fingerprint, generalist.fingerprint, val_split, top_n)
    found = load_partition(out, key, info, len(clusters.groups))
    if found is not None:
        return found
    t0 = time.perf_counter()
    part = build_partition(
        out, key, generalist.model, [list(g) for g in clusters.groups], data, info, val_split, top_n, device
    )
    if echo is not None:
        routed = "" if part.val is None else f", {part.val.num_samples} routed {val_split} examples"
        echo(
            f"partitioned the data for {len(clusters.groups)} specialists in {time.perf_counter() - t0:.1f} s: "
            f"{part.train.num_samples} training examples{routed} "
            f"({partition_dir(out)})"
        )
    return part

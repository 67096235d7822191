"""The specialist ensemble as a teacher of soft targets (docs/method.md §5), for ``specens distill``:
on the fly (:class:`EnsembleTeacher`: sparse routing and the exact KL solve on the very inputs the
student sees) or from the ``<shard>.q.npy`` files ``specens infer --save-q`` wrote
(:class:`QCacheTeacher`: memory-mapped, looked up by sample key, used only where its manifest
matches this run's ensemble and data). Both give q at temperature T as ``temper(q, T)``."""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from specens.core.cost import forward_flops
from specens.core.errors import ConfigError, DataError
from specens.data.format import load_info
from specens.generalist.losses import temper

from .ensemble import Ensemble
from .infer import MANIFEST, read_manifest, shard_stem


class EnsembleTeacher:
    """q from the ensemble, computed on each batch (docs/method.md §5), tempered (:func:`temper`)."""

    def __init__(self, ens: Ensemble):
        self.ens = ens
        self.fingerprints = [ens.fingerprints]
        self.examples, self.active = 0, 0  # for the mean number of specialist passes per example

    @torch.no_grad()
    def soft_targets(self, x: torch.Tensor, temperature: float, keys=None, source: int = 0) -> torch.Tensor:
        out = self.ens.forward(x)
        self.examples += len(x)
        self.active += int(out.active.sum())
        return temper(out.q, temperature)

    def flops(self, example: torch.Tensor) -> float:
        """One generalist pass plus the mean number of specialist passes seen so far."""
        f_s = self.ens.specialist_flops(example)
        return forward_flops(self.ens.generalist.model, example) + self.active / max(self.examples, 1) * f_s


@dataclass
class _Cache:
    """One ``specens infer --save-q`` output: the rows of q by sample key, memory-mapped."""

    path: Path
    index: dict[str, tuple[int, int]]  # key -> (shard, row)
    arrays: list[np.ndarray]


class QCacheTeacher:
    """q read from caches written by ``specens infer --save-q``, one per source (the training split
    and each transfer set), after checking each belongs to ``ens`` and to its source."""

    def __init__(self, caches: typing.Sequence[str], ens: Ensemble, sources: typing.Sequence[tuple[str, str]]):
        """``sources``: (dataset directory, split) of the training split (0) and each transfer set."""
        self.fingerprints = [ens.fingerprints]
        expected = {
            "fingerprints": ens.fingerprints,
            "specialists_on": ens.indices,
            "top_n": ens.top_n,
            "method": ens.method,
            "specialist_weight": ens.specialist_weight,
            "save_q": True,
            "complete": True,
        }
        by_source: dict[int, _Cache] = {}
        for d in caches:
            path = Path(d) / MANIFEST
            m = read_manifest(path, f"; is {d} the --out of `specens infer --save-q`?")
            for key, want in expected.items():
                if getattr(m, key) != want:
                    raise ConfigError(
                        f"{path}: {key} is {getattr(m, key)!r}, but the run's ensemble has {want!r}; the q it holds "
                        "is not this ensemble's (rerun `specens infer --save-q` into a new --out)"
                    )
            matches = [
                i for i, (root, split) in enumerate(sources) if (m.split, m.dataset) == (split, load_info(root).name)
            ]
            if not matches:
                names = ", ".join(f"{root} split {split!r}" for root, split in sources)
                raise ConfigError(
                    f"{path}: holds q of dataset {m.dataset!r} split {m.split!r}, which "
                    f"is none of the splits this student reads ({names})"
                )
            i = matches[0]
            root, split = sources[i]
            shards = [s.name for s in load_info(root).split(split).shards]
            if m.shards != shards:
                raise ConfigError(f"{path}: made for shards {m.shards} of {split!r}, but {root} has {shards}")
            if i in by_source:
                raise ConfigError(f"{path}: a second cache for {root} split {split!r} (the first: {by_source[i].path})")
            by_source[i] = self._open(Path(d), shards, ens.n_classes)
        missing = [f"{root} split {split!r}" for i, (root, split) in enumerate(sources) if i not in by_source]
        if missing:
            raise ConfigError(
                f"q_cache: no cache for {missing[0]}; write one with `specens infer --save-q "
                "--split ...` or leave q_cache empty to compute q on the fly"
            )
        self.caches = [by_source[i] for i in range(len(sources))]

    @staticmethod
    def _open(d: Path, shards: list[str], n_classes: int) -> _Cache:
        index, arrays = {}, []
        for s, name in enumerate(shards):
            stem = shard_stem(name)
            try:
                with open(d / f"{stem}.jsonl", encoding="utf-8") as f:
                    keys = [json.loads(line)["key"] for line in f if line.strip()]
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{d / (stem + '.jsonl')}: not the output of `specens infer` ({e!r})") from None
            try:
                q = np.load(d / f"{stem}.q.npy", mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise DataError(f"{d / (stem + '.q.npy')}: not a readable .npy array ({e})") from None
            if (
                q.ndim == 2
                and q.shape[0]
                and not (np.isfinite(q).all() and (q >= 0).all() and np.allclose(q.sum(1), 1, atol=1e-3))
            ):
                raise DataError(
                    f"{d / (stem + '.q.npy')}: rows are not probability distributions (non-finite, "
                    "negative, or not summing to 1)"
                )
            if q.shape != (len(keys), n_classes):
                raise DataError(
                    f"{d / (stem + '.q.npy')}: shape {q.shape}, expected ({len(keys)}, {n_classes}) "
                    f"from {stem}.jsonl and the ensemble"
                )
            index.update((k, (s, r)) for r, k in enumerate(keys))
            arrays.append(q)
        return _Cache(d, index, arrays)

    def soft_targets(self, x: torch.Tensor, temperature: float, keys=None, source: int = 0) -> torch.Tensor:
        cache = self.caches[source]
        rows = []
        for k in keys:
            where = cache.index.get(k)
            if where is None:
                raise DataError(f"{cache.path}: no q for sample {k!r}")
            rows.append(cache.arrays[where[0]][where[1]])
        return temper(torch.from_numpy(np.stack(rows)).to(x.device), temperature)

    def flops(self, example: torch.Tensor) -> float:
        return 0.0  # paid when the cache was written (`specens infer`'s cost)

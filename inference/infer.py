"""Batch inference over WebDataset shards: ``specens infer``.

For every shard of the chosen split, ``infer`` writes into ``out``:

- ``<shard>.jsonl``: one line per sample, in shard order:
  ``{"key": ..., "classes": [top-k class indices], "names": [their names], "probs": [their q],
  "specialists": [indices of the active specialists]}``;
- ``<shard>.q.npy`` (with ``save_q``): the full q, float32 of shape (samples in shard, C), rows in
  the order of the ``.jsonl`` lines;
- ``infer.json``: the run's fingerprints, the dataset, the settings and the shards' names, written
  before the first shard (``complete: false``) and again after the last (``complete: true``,
  totals).

Every file is written to a temporary name and renamed into place, ``.q.npy`` before ``.jsonl``,
so a shard is finished exactly when its ``.jsonl`` exists. A rerun on the same ``out`` skips the
finished shards; as each shard's batches depend on that shard alone, the outputs of an
interrupted and resumed run are byte-identical to an uninterrupted run's. A rerun with other
settings or another run directory is refused rather than mixed in.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from specens.core.errors import DataError
from specens.core.io import TEMP_GLOB, write_bytes_atomic, write_json_atomic
from specens.data.shards import iter_split

from .ensemble import Ensemble

FORMAT, FORMAT_VERSION = "specens.predictions", 1
MANIFEST = "infer.json"
SETTING_DEFAULTS = {"specialist_weight": 1.0}  # settings added later: what an older manifest meant


def shard_stem(name: str) -> str:
    """``test-000003.tar`` -> ``test-000003``."""
    return name[:-4] if name.endswith(".tar") else name


def _lines(keys, q: torch.Tensor, active: torch.Tensor, names, k: int) -> list[str]:
    probs, idx = q.topk(k, dim=1)
    out = []
    for key, p, i, a in zip(keys, probs.tolist(), idx.tolist(), active.tolist()):
        out.append(json.dumps({"key": key, "classes": i, "names": [names[c] for c in i],
                               "probs": [round(v, 7) for v in p],
                               "specialists": [m for m, on in enumerate(a) if on]}, ensure_ascii=False))
    return out


def infer(run_dir: str, data: str, out: str, *, split: str = "test", top_k: int = 5, save_q: bool = False,
          batch_size: int = 256, top_n: int = 1, device: str = "auto", progress: bool = True,
          ensemble: Ensemble | None = None, all_specialists: bool = False,
          on_batch: Callable[[int, int, int], None] | None = None) -> dict:
    """Predict every sample of ``data``'s ``split`` with the ensemble of ``run_dir``; see the
    module docstring for the outputs. Returns the final manifest.

    ``on_batch(shard_index, done, shard_samples)`` is called after each batch with the samples
    of the shard done so far (progress reporting; tests kill the process through it)."""
    ens = ensemble or Ensemble.load(run_dir, device=device, top_n=top_n, all_specialists=all_specialists)
    info = ens.dataset_info(data)
    shards = info.split(split).shards
    k = min(top_k, ens.n_classes)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"format": FORMAT, "format_version": FORMAT_VERSION, "fingerprints": ens.fingerprints,
                "n_specialists": len(ens.groups), "specialists_on": ens.indices, "dataset": info.name, "split": split,
                "shards": [s.name for s in shards], "top_k": k, "top_n": ens.top_n, "save_q": save_q,
                "method": ens.method, "specialist_weight": ens.specialist_weight, "batch_size": batch_size}
    _check_manifest(out_dir, settings)
    write_json_atomic(out_dir / MANIFEST, {**settings, "complete": False})
    for leftover in out_dir.glob(TEMP_GLOB):  # temporaries of a killed run
        leftover.unlink()

    done = [s for s in shards if (out_dir / f"{shard_stem(s.name)}.jsonl").is_file()]
    bar = tqdm(total=info.split(split).num_samples, initial=sum(s.num_samples for s in done), unit="ex",
               unit_scale=True, desc=f"infer {split}", disable=not progress, smoothing=0.1)
    for i, shard in enumerate(shards):
        stem = shard_stem(shard.name)
        if shard in done:
            continue
        lines, qs, seen = [], [], 0
        for batch in iter_split(data, split, batch_size, info=info, shards=[shard.name]):
            res = ens.forward(batch.inputs)
            lines += _lines(batch.keys, res.q.cpu(), res.active.cpu(), ens.classes, k)
            if save_q:
                qs.append(res.q.float().cpu().numpy())
            seen += len(batch)
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(i, seen, shard.num_samples)
        if save_q:
            buf = io.BytesIO()
            np.save(buf, np.concatenate(qs) if qs else np.zeros((0, ens.n_classes), np.float32))
            write_bytes_atomic(out_dir / f"{stem}.q.npy", buf.getvalue())
        write_bytes_atomic(out_dir / f"{stem}.jsonl", ("\n".join(lines) + "\n" if lines else "").encode())
    bar.close()
    total = sum((out_dir / f"{shard_stem(s.name)}.jsonl").read_bytes().count(b"\n") for s in shards)
    manifest = {**settings, "complete": True, "n_samples": total}
    write_json_atomic(out_dir / MANIFEST, manifest)
    return manifest


def _check_manifest(out_dir: Path, settings: dict) -> None:
    """Refuse to resume into ``out_dir`` when it holds predictions made differently."""
    path = out_dir / MANIFEST
    if not path.is_file():
        if any(out_dir.glob("*.jsonl")):
            raise DataError(f"{out_dir}: holds .jsonl files but no {MANIFEST}; choose an empty --out")
        return
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); delete {out_dir} or choose another --out") from None
    for key, value in settings.items():
        if old.get(key, SETTING_DEFAULTS.get(key)) != value:
            raise DataError(f"{path}: these predictions were made with {key} = {old.get(key)!r}, this run has "
                            f"{value!r}; choose another --out (or delete it) to start afresh")

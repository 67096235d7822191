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
so a shard is finished exactly when its ``.jsonl`` exists. With ``workers`` > 1 the shards are
written in parallel by Ray tasks (the q cache of ``specens distill``, over a large training split).
A rerun on the same ``out`` skips the finished shards; as each shard's batches depend on that
shard alone, the outputs of an interrupted and resumed run are byte-identical to an uninterrupted
run's. A rerun with other settings or another run directory is refused rather than mixed in.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from specens.core.config import param
from specens.core.errors import CheckpointError, ConfigError, DataError
from specens.core.io import (
    TEMP_GLOB,
    check_outside_inputs,
    check_target,
    read_artifact_json,
    write_bytes_atomic,
    write_json_atomic,
)
from specens.core.progress import progress_bar
from specens.core.raysession import RETRIED_EXCEPTIONS, ray_session  # before Ray: it sets Ray's environment
from specens.core.records import Record
from specens.data.remote import is_url
from specens.data.shards import iter_split

from .ensemble import SPECIALIST_MEMORY, Ensemble

FORMAT, FORMAT_VERSION = "specens.predictions", 1
MANIFEST = "infer.json"


@dataclass(frozen=True, kw_only=True)
class InferManifest(Record):
    """``infer.json``: the ensemble and data the predictions came from, the settings they were made
    with (what a rerun must match to resume), and, once every shard is written, the totals."""

    ARTIFACT = (FORMAT, FORMAT_VERSION)

    fingerprints: dict[str, Any]
    n_specialists: int = param(ge=0)
    specialists_on: list[int] = param(ge=0)
    dataset: str
    split: str
    shards: list[str]  # the shards' names
    top_k: int = param(ge=0)
    top_n: int = param(ge=0)
    save_q: bool
    method: str
    specialist_weight: float = 1.0  # absent from manifests written before the setting: they meant 1
    batch_size: int = param(ge=0)
    complete: bool
    n_samples: int | None = param(None, ge=0)  # written with complete = true

    SETTINGS: ClassVar[tuple[str, ...]] = (
        "fingerprints", "n_specialists", "specialists_on", "dataset", "split", "shards", "top_k", "top_n",
        "save_q", "method", "specialist_weight", "batch_size",
    )  # fmt: skip

    def first_difference(self, other: InferManifest) -> str | None:
        """The first setting in which ``other`` differs from this manifest, or None."""
        return next((k for k in self.SETTINGS if getattr(self, k) != getattr(other, k)), None)


def read_manifest(path: Path, hint: str = "") -> InferManifest:
    """``infer.json`` at ``path``, its header and every key checked (:class:`CheckpointError`
    naming the file; ``hint`` added where the file is missing)."""
    return InferManifest.from_json(read_artifact_json(path, FORMAT, FORMAT_VERSION, hint), str(path))


def shard_stem(name: str) -> str:
    """``test-000003.tar`` -> ``test-000003``."""
    return name[:-4] if name.endswith(".tar") else name


def _lines(keys, q: torch.Tensor, active: torch.Tensor, names, k: int) -> list[str]:
    probs, idx = q.topk(k, dim=1)
    out = []
    for key, p, i, a in zip(keys, probs.tolist(), idx.tolist(), active.tolist(), strict=True):
        out.append(
            json.dumps(
                {
                    "key": key,
                    "classes": i,
                    "names": [names[c] for c in i],
                    "probs": [round(v, 7) for v in p],
                    "specialists": [m for m, on in enumerate(a) if on],
                },
                ensure_ascii=False,
            )
        )
    return out


def infer(
    run_dir: str,
    data: str,
    out: str,
    *,
    split: str = "test",
    top_k: int = 5,
    save_q: bool = False,
    batch_size: int = 256,
    top_n: int = 1,
    device: str = "auto",
    progress: bool = True,
    ensemble: Ensemble | None = None,
    all_specialists: bool = False,
    workers: int = 1,
    specialist_memory: int = SPECIALIST_MEMORY,
    on_batch: Callable[[int, int, int], None] | None = None,
    trust_code: bool = False,
) -> dict:
    """Predict every sample of ``data``'s ``split`` with the ensemble of ``run_dir``; see the
    module docstring for the outputs. Returns the final manifest.

    ``workers`` > 1 writes the unfinished shards in that many Ray tasks (a local Ray cluster on
    loopback, or the cluster of ``ray job submit``), each loading the ensemble itself with one CPU;
    every shard's files are what a single process writes at one torch thread, byte for byte.
    ``on_batch(shard_index, done, shard_samples)`` is called after each batch with the samples of the shard done so far
    (progress reporting; tests kill the process through it; single process only). At most
    ``specialist_memory`` bytes of specialist weights are loaded at a time (per worker).
    ``trust_code``: build a generalist whose ``model.json`` names code (see :class:`ModelSpec`)."""
    _check_counts(top_k=(top_k, 1), batch_size=(batch_size, 1), top_n=(top_n, 1), workers=(workers, 1))
    _check_counts(specialist_memory=(specialist_memory, 0))
    check_outside_inputs(out, "--out", data=data)
    check_target(out, (MANIFEST, "*.jsonl", "*.q.npy"), "a `specens infer` output", MANIFEST)
    ens = ensemble or Ensemble.load(
        run_dir,
        device=device,
        top_n=top_n,
        all_specialists=all_specialists,
        specialist_memory=specialist_memory,
        trust_code=trust_code,
    )
    info = ens.dataset_info(data)
    shards = info.split(split).shards
    k = min(top_k, ens.n_classes)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = _settings(ens, info, split, shards, k, save_q, batch_size)
    _open_output(out_dir, settings)

    todo = [s.name for s in shards if not (out_dir / f"{shard_stem(s.name)}.jsonl").is_file()]
    if workers > 1 and len(todo) > 1:
        task = dict(split=split, top_k=k, save_q=save_q, batch_size=batch_size, top_n=ens.top_n, device=device)
        task.update(all_specialists=all_specialists, specialist_memory=specialist_memory, trust_code=trust_code)
        _infer_with_ray(run_dir, data, out, todo, workers, task, settings.fingerprints)
    else:
        _write_here(ens, data, out_dir, split, info.split(split), todo, k, save_q, batch_size, progress, on_batch)
    total = sum((out_dir / f"{shard_stem(s.name)}.jsonl").read_bytes().count(b"\n") for s in shards)
    manifest = replace(settings, complete=True, n_samples=total).to_json()
    write_json_atomic(out_dir / MANIFEST, manifest)
    return manifest


def _write_here(ens, data, out_dir, split, split_info, todo, k, save_q, batch_size, progress, on_batch) -> None:
    """Write the unfinished shards ``todo`` in this process, with one progress bar over the split."""
    done = sum(s.num_samples for s in split_info.shards if s.name not in todo)
    with progress_bar(
        total=split_info.num_samples,
        initial=done,
        unit="ex",
        unit_scale=True,
        desc=f"infer {split}",
        enabled=progress,
        smoothing=0.1,
    ) as bar:
        write_shards(ens, data, out_dir, split, todo, k, save_q, batch_size, bar.update, on_batch)


def _check_counts(**values: tuple[int, int]) -> None:
    """Each ``name=(value, least)``: an int (not a bool) >= least, else a :class:`ConfigError`."""
    for name, (value, least) in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{name} must be an int >= {least}, got {value!r}")


def _settings(ens: Ensemble, info, split: str, shards, k: int, save_q: bool, batch_size: int) -> InferManifest:
    """The manifest of this run before any shard is written: what a rerun must match to resume."""
    return InferManifest(
        fingerprints=ens.fingerprints,
        n_specialists=len(ens.groups),
        specialists_on=ens.indices,
        dataset=info.name,
        split=split,
        shards=[s.name for s in shards],
        top_k=k,
        top_n=ens.top_n,
        save_q=save_q,
        method=ens.method,
        specialist_weight=ens.specialist_weight,
        batch_size=batch_size,
        complete=False,
    )


def _open_output(out_dir: Path, settings: InferManifest) -> None:
    """Refuse an output made with other settings, mark it incomplete, drop a killed run's temporaries."""
    _check_manifest(out_dir, settings)
    write_json_atomic(out_dir / MANIFEST, settings.to_json())
    for leftover in out_dir.glob(TEMP_GLOB):
        leftover.unlink()


def write_shards(
    ens: Ensemble,
    data: str,
    out_dir: Path,
    split: str,
    names: list[str],
    top_k: int,
    save_q: bool,
    batch_size: int,
    advance: Callable[[int], None] = lambda n: None,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> None:
    """Predict the shards ``names`` of ``split`` and write each one's ``.q.npy`` and ``.jsonl``
    (the latter last: it marks the shard finished). A shard's output depends on that shard alone."""
    info = ens.dataset_info(data)
    index = {s.name: i for i, s in enumerate(info.split(split).shards)}
    for name in names:
        stem = shard_stem(name)
        n_shard = info.split(split).shards[index[name]].num_samples
        lines, qs, seen = [], [], 0
        for batch in iter_split(data, split, batch_size, info=info, shards=[name]):
            res = ens.forward(batch.inputs)
            lines += _lines(batch.keys, res.q.cpu(), res.active.cpu(), ens.classes, top_k)
            if save_q:
                qs.append(res.q.float().cpu().numpy())
            seen += len(batch)
            advance(len(batch))
            if on_batch is not None:
                on_batch(index[name], seen, n_shard)
        if save_q:
            buf = io.BytesIO()
            np.save(buf, np.concatenate(qs) if qs else np.zeros((0, ens.n_classes), np.float32))
            write_bytes_atomic(out_dir / f"{stem}.q.npy", buf.getvalue())
        write_bytes_atomic(out_dir / f"{stem}.jsonl", ("\n".join(lines) + "\n" if lines else "").encode())


def _shards_task(run_dir: str, data: str, out: str, names: list[str], options: dict, fingerprints: dict) -> list[str]:
    """One Ray task: load the ensemble, check it is the driver's, write its shards."""
    ens = Ensemble.load(
        run_dir,
        device=options["device"],
        top_n=options["top_n"],
        all_specialists=options["all_specialists"],
        specialist_memory=options["specialist_memory"],
        trust_code=options["trust_code"],
    )
    if ens.fingerprints != fingerprints:
        raise DataError(
            f"{run_dir}: its models changed while `specens infer` ran ({ens.fingerprints} vs {fingerprints})"
        )
    write_shards(
        ens, data, Path(out), options["split"], names, options["top_k"], options["save_q"], options["batch_size"]
    )
    return names


def _infer_with_ray(run_dir, data, out, todo, workers, options, fingerprints) -> None:
    import ray

    with ray_session():
        task = ray.remote(_shards_task).options(num_cpus=1, max_retries=2, retry_exceptions=RETRIED_EXCEPTIONS)
        parts = [todo[i::workers] for i in range(min(workers, len(todo)))]
        paths = [
            p if is_url(p) else str(Path(p).resolve()) for p in map(str, (run_dir, data, out))
        ]  # not the worker's cwd
        ray.get([task.remote(*paths, part, options, fingerprints) for part in parts])


def _check_manifest(out_dir: Path, settings: InferManifest) -> None:
    """Refuse to resume into ``out_dir`` when it holds predictions made differently."""
    path = out_dir / MANIFEST
    if not path.is_file():  # predictions without it were refused by check_target's record rule
        return
    try:
        old = read_manifest(path)
    except CheckpointError as e:
        raise DataError(f"{e}; delete {out_dir} or choose another --out") from None
    key = old.first_difference(settings)
    if key is not None:
        raise DataError(
            f"{path}: these predictions were made with {key} = {getattr(old, key)!r}, this run has "
            f"{getattr(settings, key)!r}; choose another --out (or delete it) to start afresh"
        )

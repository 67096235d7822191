"""The generators under the stages a :class:`~specens.data.shards.Pipeline` composes, in
webdataset's style: each a small generator over the one before it, tested alone.

    shards → split by node and worker → raw samples (an error handler) → count check
           → label / key-fraction filters → decode → seeded shuffle buffer → batches

Bad samples go to one :class:`ErrorPolicy`: under ``"raise"`` it re-raises the
:class:`DataError` naming the shard and key, under ``"skip"`` it counts the sample, and the batch
stage reports the count in :attr:`Batch.skipped`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from specens.core.errors import DataError

from .format import INFO_FILE, InputSpec, ShardInfo
from .remote import open_stream

Sample = tuple[str, np.ndarray, int]  # (key, x as stored, label)


def decode_sample(sample: dict, spec: InputSpec, n_classes: int) -> tuple[str, np.ndarray, int]:
    """Decode and validate one raw sample (a dict of bytes keyed by field) into (key, x, label).

    Raises :class:`DataError` naming the shard and the key for a missing field, an undecodable
    input, a label outside ``[0, n_classes)``, a shape or dtype other than ``spec``'s, or
    non-finite values.
    """
    key, url = sample.get("__key__", "?"), sample.get("__url__", "?")
    where = f"{url}: sample {key!r}"
    if "cls" not in sample:
        raise DataError(f"{where}: missing 'cls' (the label)")
    if spec.field not in sample:
        present = sorted(k for k in sample if not k.startswith("__"))
        raise DataError(f"{where}: missing {spec.field!r} (fields present: {present})")
    try:
        label = int(sample["cls"])
    except ValueError:
        raise DataError(f"{where}: 'cls' is not an integer: {sample['cls'][:20]!r}") from None
    if not 0 <= label < n_classes:
        raise DataError(f"{where}: label {label} outside the class range [0, {n_classes})")
    try:
        if spec.kind == "image":
            with Image.open(io.BytesIO(sample[spec.field])) as img:
                x = np.asarray(img)
            x = x[None] if x.ndim == 2 else np.transpose(x, (2, 0, 1))  # -> (C, H, W)
        else:
            x = _load_npy(sample[spec.field], spec)
    except Exception as e:  # PIL and numpy raise many types for corrupt bytes
        raise DataError(f"{where}: cannot decode {spec.field!r} ({e})") from None
    if tuple(x.shape) != spec.shape:
        raise DataError(f"{where}: input shape {tuple(x.shape)} disagrees with {INFO_FILE}'s {list(spec.shape)}")
    if x.dtype != np.dtype(spec.dtype):
        raise DataError(f"{where}: input dtype {x.dtype} disagrees with {INFO_FILE}'s {spec.dtype}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{where}: input has non-finite values")
    return key, x, label


def _load_npy(raw: bytes, spec: InputSpec) -> np.ndarray:
    """``.npy`` bytes as an array: when they are exactly what the writer makes for ``spec`` (its
    header, then the data), read straight from the buffer; anything else through ``np.load``,
    which parses the header (a ``literal_eval`` per sample, most of the decoding time)."""
    head, nbytes = _npy_header(spec.shape, spec.dtype)
    if len(raw) == len(head) + nbytes and raw.startswith(head):
        return np.frombuffer(raw, dtype=spec.dtype, offset=len(head)).reshape(spec.shape).copy()
    return np.load(io.BytesIO(raw), allow_pickle=False)


@functools.lru_cache(maxsize=16)
def _npy_header(shape: tuple[int, ...], dtype: str) -> tuple[bytes, int]:
    """The header ``np.save`` writes for a C-ordered array of ``shape`` and ``dtype``, and the data's
    size; built from the header fields alone (``shape`` comes from dataset.json: nothing of that
    size is allocated)."""
    buf = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue(), math.prod(shape) * np.dtype(dtype).itemsize


@dataclass
class Batch:
    """A batch of decoded samples.

    inputs: Tensor of shape (batch, *input_shape): float32 (images scaled to [0, 1]) or int64.
    labels: int64 Tensor of shape (batch,).
    keys:   the samples' keys, in batch order.
    skipped: bad samples dropped (``on_error="skip"``) since the previous batch.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    keys: list[str] = field(default_factory=list)
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.keys)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.inputs.to(device, non_blocking=True),
            self.labels.to(device, non_blocking=True),
            self.keys,
            self.skipped,
        )


def to_model_input(x: np.ndarray) -> np.ndarray:
    """Stored input (any of the format's dtypes) to what models take: uint8 images become float32
    in [0, 1], float arrays float32, integer arrays (token ids) int64."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    return x.astype(np.float32 if x.dtype.kind == "f" else np.int64, copy=False)


def collate(items: list[Sample], skipped: int) -> Batch:
    """One :class:`Batch` of decoded samples, models' dtypes (:func:`to_model_input`)."""
    if not items:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.int64), [], skipped)
    keys, xs, ys = zip(*items, strict=True)
    return Batch(
        torch.from_numpy(to_model_input(np.stack(xs))), torch.tensor(ys, dtype=torch.int64), list(keys), skipped
    )


class ErrorPolicy:
    """What a stream does with a bad sample: ``"raise"`` its :class:`DataError`, or ``"skip"`` it
    and count it. ``pending`` counts the skips not yet reported in a batch, ``total`` all of them."""

    def __init__(self, on_error: str = "raise"):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.skips = on_error == "skip"
        self.pending = self.total = 0

    def __call__(self, error: DataError, n: int = 1) -> None:
        """Handle ``n`` bad samples that ``error`` describes."""
        if not self.skips:
            raise error
        self.pending += n
        self.total += n

    def take(self) -> int:
        """The skips since the last call (what the next batch reports)."""
        n, self.pending = self.pending, 0
        return n

    def tar_handler(self, url: str):
        """WebDataset's ``handler`` for reading ``url``'s archive: under ``"skip"`` stop reading
        the shard (its shortfall is counted by :func:`checked_count`); else raise naming the URL."""

        def handler(exn: Exception) -> bool:
            if self.skips:
                return False
            if isinstance(exn, DataError):  # a URL no retry could read (WebDataset appends to args)
                raise DataError(exn.args[0]) from None
            if isinstance(exn, FileNotFoundError):
                raise DataError(
                    f"{url}: missing (its dataset's record lists it; the shard was moved or deleted)"
                ) from None
            raise DataError(f"{url}: corrupt or truncated tar archive ({exn.args[0] if exn.args else exn})") from None

        return handler


def split_shards(shards: Sequence[ShardInfo]) -> tuple[list[ShardInfo], int, int]:
    """This reader's shards (split by node, then by DataLoader worker), its global index and the
    number of readers in all."""
    info = torch.utils.data.get_worker_info()
    wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
    rank, world = wds.utils.pytorch_worker_info()[:2]
    mine = list(wds.split_by_worker(wds.split_by_node(list(shards))))
    return mine, rank * nw + wid, world * nw


def raw_samples(url: str, remote: bool, errors: ErrorPolicy) -> Iterator[dict]:
    """One shard's raw samples (dicts of bytes by field, with ``__key__`` and ``__url__``): a local
    file through WebDataset's own opener, a URL through :func:`specens.data.remote.open_stream`."""
    handler = errors.tar_handler(url)
    if not remote:
        yield from wds.tariterators.tarfile_samples([{"url": url}], handler=handler)
        return
    with open_stream(url) as stream:
        files = wds.tariterators.tar_file_expander([{"url": url, "stream": stream}], handler=handler)
        yield from wds.tariterators.group_by_keys(files, handler=handler)


def checked_count(raw: Iterable[dict], url: str, expected: int, errors: ErrorPolicy) -> Iterator[dict]:
    """``raw`` passed through; at its end, a count other than ``dataset.json``'s is an error (a
    truncated shard), or under ``"skip"`` the shortfall is counted."""
    seen = 0
    for sample in raw:
        seen += 1
        yield sample
    if seen != expected:
        errors(
            DataError(
                f"{url}: holds {seen} samples but {INFO_FILE} lists {expected} "
                "(truncated shard, or dataset.json from another import)"
            ),
            max(expected - seen, 0),
        )


def keep_labels(raw: Iterable[dict], keep: np.ndarray) -> Iterator[dict]:
    """Samples whose label ``keep`` (bool, (n_classes,)) marks, read before the input is decoded.
    A missing or out-of-range label passes, for :func:`decoded` to report."""
    for sample in raw:
        try:
            label = int(sample["cls"])
        except (KeyError, ValueError):
            yield sample
            continue
        if not 0 <= label < len(keep) or keep[label]:
            yield sample


def key_fraction(key: str) -> float:
    """A sample key's stable position in [0, 1) (BLAKE2b of the key): ``key_fraction(k) < f`` picks
    a fraction ``f`` of a split that does not depend on shard order, workers or the machine."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") / 2**64


def keep_fraction(raw: Iterable[dict], fraction: float) -> Iterator[dict]:
    """Samples whose :func:`key_fraction` is below ``fraction``."""
    return (s for s in raw if key_fraction(s.get("__key__", "")) < fraction)


def decoded(raw: Iterable[dict], spec: InputSpec, n_classes: int, errors: ErrorPolicy) -> Iterator[Sample]:
    """:func:`decode_sample` on each sample; a bad one goes to ``errors``."""
    for sample in raw:
        try:
            yield decode_sample(sample, spec, n_classes)
        except DataError as e:
            errors(e)


def shuffled(samples: Iterator[Sample], rng: random.Random, n: int, buffer: int) -> Iterator[Sample]:
    """``n`` samples drawn through a shuffle buffer of ``buffer``: each step emits a random element
    and refills, drawing no more than ``n`` from ``samples``."""
    buf: list = []
    drawn = 0
    for _ in range(n):
        while len(buf) < buffer and drawn < n or not buf:
            buf.append(next(samples))
            drawn += 1
        i = rng.randrange(len(buf))
        yield buf[i]
        buf[i] = buf[-1]
        buf.pop()


def batched(samples: Iterable[Sample], batch_size: int, errors: ErrorPolicy) -> Iterator[Batch]:
    """:class:`Batch` es of ``batch_size`` (the last may be smaller), each reporting the skips
    since the one before; a final empty batch reports trailing skips."""
    items: list = []
    for item in samples:
        items.append(item)
        if len(items) == batch_size:
            yield collate(items, errors.take())
            items = []
    if items or errors.pending:
        yield collate(items, errors.take())

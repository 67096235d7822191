"""How fast a split streams from its shards: samples per second through ``iter_split`` (read, decode,
batch; one process), for shards as written now and as written before 2026-12-02, side by side.

Two things changed in how shards are read and written, and each row adds one:
- the former layout: every tar member carried a pax header (WebDataset's float ``mtime=0.0``),
  and every ``.npy`` input went through ``np.load`` (which parses its header with ``literal_eval``);
- plain ustar headers (an integer mtime), ``np.load`` still;
- plain headers and the writer's exact ``.npy`` layout read straight from the buffer (today).
Datasets: 16-d float vectors (the synthetic tests' shape), 64 token ids (the text datasets'), and
32 x 32 PNG glyphs (images decode through PIL, so only the headers change for them).

    python benchmarks/read_speed.py --record
"""

from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import markdown_table, record

from specens.data import stages
from specens.data.format import InputSpec
from specens.data.shards import iter_split
from specens.data.writer import DatasetWriter

INPUTS = {
    "16 floats": (InputSpec("array", (16,), "float32"), lambda rng, n: rng.normal(size=(n, 16)).astype(np.float32)),
    "64 token ids": (InputSpec("array", (64,), "int64"), lambda rng, n: rng.integers(0, 2**20, (n, 64))),
    "32x32 PNG": (
        InputSpec("image", (1, 32, 32), "uint8"),
        lambda rng, n: rng.integers(0, 256, (n, 1, 32, 32), dtype=np.uint8),
    ),
}


def write(root: Path, spec: InputSpec, xs: np.ndarray) -> str:
    with DatasetWriter(str(root), "bench", [f"c{i}" for i in range(10)], spec, shard_size=10_000) as w:
        with w.split("train") as s:
            for i, x in enumerate(xs):
                s.write(f"s{i:07d}", x, i % 10)
    return str(root)


def with_pax_headers(root: str) -> None:
    """Rewrite every shard as before: each member with a float mtime, so a pax header each."""
    for shard in Path(root).glob("*.tar"):
        with tarfile.open(shard) as src:
            members = [(m, src.extractfile(m).read()) for m in src.getmembers()]
        with tarfile.open(shard, "w", format=tarfile.PAX_FORMAT) as dst:
            for m, data in members:
                m.mtime = 0.0
                dst.addfile(m, io.BytesIO(data))


def rate(root: str, repeats: int) -> float:
    """Best samples per second over ``repeats`` full passes."""
    best = 0.0
    for _ in range(repeats):
        t0, n = time.perf_counter(), 0
        for b in iter_split(root, "train", 256):
            n += len(b)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    fast = stages._load_npy
    np_load = lambda raw, spec: np.load(io.BytesIO(raw), allow_pickle=False)  # noqa: E731
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (spec, make) in INPUTS.items():
            xs = make(np.random.default_rng(0), args.samples)
            plain = write(Path(tmp) / f"{name}-plain", spec, xs)
            pax = write(Path(tmp) / f"{name}-pax", spec, xs)
            with_pax_headers(pax)
            size = lambda root: sum(p.stat().st_size for p in Path(root).glob("*.tar")) / args.samples  # noqa: E731
            stages._load_npy = np_load
            before, headers = rate(pax, args.repeats), rate(plain, args.repeats)
            stages._load_npy = fast
            now = rate(plain, args.repeats)
            rows.append(
                [name, f"{size(pax):.0f} -> {size(plain):.0f}", f"{before:,.0f}", f"{headers:,.0f}", f"{now:,.0f}"]
                + [f"{now / before:.2f}x"]
            )
    table = markdown_table(
        [
            "input",
            "bytes / sample (before -> now)",
            "before: pax headers, np.load (samples/s)",
            "plain headers, np.load",
            "now: plain headers, buffer read",
            "now / before",
        ],
        rows,
    )
    print(table)
    if args.record:
        record("read_speed", "python benchmarks/read_speed.py --record", table)


if __name__ == "__main__":
    main()

"""The shard format: exact round trips, streaming orders, atomic writes, and every bad input."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from specens.core.errors import DataError
from specens.data.format import InputSpec, load_info
from specens.data.shards import (
    SHUFFLE_BUFFER,
    Batches,
    Cached,
    Cycle,
    Fraction,
    Labels,
    Pipeline,
    Read,
    ShardLoader,
    Shuffle,
    Split,
    iter_split,
)
from specens.data.writer import DatasetWriter, encode_input


def _write(root, xs, ys, spec, n_classes=3, shard_size=4):
    with DatasetWriter(root, "t", [f"c{i}" for i in range(n_classes)], spec, shard_size=shard_size) as w:
        with w.split("train") as s:
            for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
                s.write(f"s{i:04d}", x, y)
    return str(root)


def _training(root, batch_size, *, seed=0, buffer=SHUFFLE_BUFFER, samples=None, read=None, on_error="raise"):
    """The training order over ``root``'s train split: ``samples`` an epoch (default: the split's)."""
    split = Split.of(root, "train")
    n = samples if samples is not None else split.num_samples
    stages = Cycle(read or Read()), Shuffle(buffer, n), Batches(batch_size)
    return Pipeline(split, *stages, seed=seed, on_error=on_error)


def _read_all(root, split="train", **kw):
    keys, xs, ys = [], [], []
    for b in iter_split(root, split, batch_size=3, **kw):
        keys += b.keys
        xs.append(b.inputs)
        ys.append(b.labels)
    return keys, torch.cat(xs), torch.cat(ys)


def test_float_arrays_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(10, 5)).astype(np.float32)
    ys = rng.integers(0, 3, 10)
    root = _write(tmp_path, xs, ys, InputSpec("array", (5,), "float32"))
    keys, x, y = _read_all(root)
    assert keys == [f"s{i:04d}" for i in range(10)]
    assert np.array_equal(x.numpy(), xs) and np.array_equal(y.numpy(), ys)
    info = load_info(root)
    assert [s.num_samples for s in info.split("train").shards] == [4, 4, 2]
    assert list(info.split("train").class_counts) == np.bincount(ys, minlength=3).tolist()


def test_images_and_token_ids_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (6, 1, 8, 8), dtype=np.uint8)
    _, x, _ = _read_all(_write(tmp_path / "img", imgs, [0, 1, 2, 0, 1, 2], InputSpec("image", (1, 8, 8), "uint8")))
    assert torch.equal(x, torch.from_numpy(imgs).float() / 255)  # images come out scaled to [0, 1]
    rgb = rng.integers(0, 256, (3, 3, 4, 5), dtype=np.uint8)
    _, x, _ = _read_all(_write(tmp_path / "rgb", rgb, [0, 1, 2], InputSpec("image", (3, 4, 5), "uint8")))
    assert torch.equal(x, torch.from_numpy(rgb).float() / 255)
    tok = rng.integers(0, 1000, (4, 7)).astype(np.int64)
    _, x, _ = _read_all(_write(tmp_path / "tok", tok, [0, 1, 2, 0], InputSpec("array", (7,), "int64")))
    assert x.dtype == torch.int64 and torch.equal(x, torch.from_numpy(tok))


def test_shard_members_carry_no_pax_header(tmp_path):
    """A plain ustar header per member, mtime 0 (a float mtime adds a pax header to every member,
    doubling a small sample's bytes and its reading time)."""
    import tarfile

    root = _write(tmp_path, np.zeros((3, 5), np.float32), [0, 1, 2], InputSpec("array", (5,), "float32"))
    with tarfile.open(Path(root) / "train-000000.tar") as tar:
        members = tar.getmembers()
    assert len(members) == 6 and all(m.pax_headers == {} and m.mtime == 0 for m in members)


def test_npy_bytes_other_than_the_writers_decode_as_numpy_reads_them():
    """The reader takes the writer's exact ``.npy`` layout straight from the buffer; any other valid
    layout of the same shape and dtype (Fortran order, format version 2.0) goes through ``np.load``
    and gives the same values."""
    from specens.data.stages import decode_sample

    spec = InputSpec("array", (2, 3), "float32")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    layouts = [encode_input(x, spec)]
    for other, version in ((np.asfortranarray(x), None), (x, (2, 0))):
        buf = io.BytesIO()
        np.lib.format.write_array(buf, other, version=version, allow_pickle=False)
        layouts.append(buf.getvalue())
    assert len(set(layouts)) == 3 and all(len(raw) == len(layouts[0]) for raw in layouts[:2])
    for raw in layouts:
        _, got, _ = decode_sample({"__key__": "k", "cls": b"0", "input.npy": raw}, spec, 1)
        assert got.dtype == np.float32 and np.array_equal(got, x) and got.flags.writeable


def test_training_epoch_is_a_seeded_permutation(synthetic_ds):
    def epoch(seed, e, workers=0):
        stream = _training(synthetic_ds, 64, seed=seed, buffer=10_000)
        stream.set_epoch(e)
        return [k for b in ShardLoader(stream, workers) for k in b.keys]

    a = epoch(0, 0)
    n = load_info(synthetic_ds).split("train").num_samples
    assert len(a) == n and len(set(a)) == n  # every sample exactly once
    assert a == epoch(0, 0)  # reproducible
    assert a != epoch(0, 1) and a != epoch(1, 0)  # other epochs and seeds differ
    eval_order = [k for b in iter_split(synthetic_ds, "train", 500) for k in b.keys]
    assert a != eval_order and sorted(a) == sorted(eval_order)


def test_workers_split_the_shards(synthetic_ds):
    loader = ShardLoader(_training(synthetic_ds, 100, buffer=10_000), num_workers=2)
    keys = [k for b in loader for k in b.keys]
    n = load_info(synthetic_ds).split("train").num_samples
    assert len(keys) == n
    # Workers get whole shards (3 shards, 2 workers): each worker's quota is n/2, so at most the
    # shard imbalance repeats; every shard still contributes.
    assert len(set(keys)) >= n * 0.6


def test_epoch_size_is_fixed(synthetic_ds):
    stream = _training(synthetic_ds, 64, samples=1000)
    assert sum(len(b) for b in ShardLoader(stream)) == 1000


def test_fraction_is_a_stable_nested_subset(synthetic_ds):
    """``fraction`` (the small-data runs of docs/method.md §4) keeps the samples whose key hashes
    below it: the same ones in every epoch and evaluation order, about the fraction asked for, and
    nested."""
    from specens.data.shards import key_fraction

    def keys(fraction, train=True, epoch=0):
        if not train:
            return [k for b in iter_split(synthetic_ds, "train", 64, filters=[Fraction(fraction)]) for k in b.keys]
        stream = _training(synthetic_ds, 64, buffer=10_000, samples=4000, read=Read(Fraction(fraction)))
        stream.set_epoch(epoch)
        return [k for b in ShardLoader(stream) for k in b.keys]

    every = [k for b in iter_split(synthetic_ds, "train", 500) for k in b.keys]
    tenth = set(keys(0.1, train=False))
    assert tenth == {k for k in every if key_fraction(k) < 0.1}
    assert 0.08 * len(every) < len(tenth) < 0.12 * len(every)
    cycled = keys(0.1)  # a training epoch cycles the subset until epoch_size
    assert len(cycled) == 4000 and set(cycled) == tenth and set(keys(0.1, epoch=3)) == tenth
    assert tenth < set(keys(0.3, train=False))
    with pytest.raises(ValueError, match="fraction"):
        Fraction(0.0)


def test_a_filtering_stream_reads_each_shard_once_and_yields_the_same_batches(synthetic_ds, monkeypatch):
    """A training stream that keeps a small subset (a specialist's classes, a fraction) cycles over
    the split many times per epoch; it reads each shard from disk once and then from memory, and
    its batches are the ones it yields without the cache, epoch after epoch."""
    from specens.data import stages

    opened = []
    read = stages.wds.tariterators.tarfile_samples
    monkeypatch.setattr(
        stages.wds.tariterators, "tarfile_samples", lambda src, **kw: opened.append(src) or read(src, **kw)
    )

    def epochs(cache_bytes, filt):
        read = Cached(Read(filt), cache_bytes) if cache_bytes else Read(filt)
        stream = _training(synthetic_ds, 50, samples=1200, read=read)
        out = []
        for epoch in range(2):
            stream.set_epoch(epoch)
            out += [(b.keys, b.inputs, b.labels) for b in ShardLoader(stream)]
        return out

    n_shards = len(load_info(synthetic_ds).split("train").shards)
    for filt in (Labels([0, 1]), Fraction(0.1)):
        opened.clear()
        cached = epochs(256 * 2**20, filt)
        assert len(opened) == n_shards, filt
        opened.clear()
        uncached = epochs(0, filt)
        assert len(opened) > 5 * n_shards, filt  # 10% of the split (400 samples), cycled to 1,200 twice: 18 opens
        assert [k for k, _, _ in cached] == [k for k, _, _ in uncached]
        assert all(
            torch.equal(a, c) and torch.equal(b, d) for (_, a, b), (_, c, d) in zip(cached, uncached, strict=True)
        )


def test_crash_inside_a_split_leaves_the_directory_as_it_was(tmp_path):
    spec = InputSpec("array", (2,), "float32")
    root = tmp_path / "ds"
    with pytest.raises(RuntimeError):
        with DatasetWriter(root, "t", ["a", "b"], spec, shard_size=3) as w:
            with w.split("train") as s:
                for i in range(5):
                    s.write(f"k{i}", np.zeros(2, np.float32), 0)
                raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []  # nothing published, the build directory removed
    with pytest.raises(DataError, match="dataset.json: missing"):
        load_info(root)


def test_writer_rejects_bad_samples(tmp_path):
    spec = InputSpec("array", (2,), "float32")
    with DatasetWriter(tmp_path, "t", ["a", "b"], spec) as w:
        with w.split("train") as s:
            with pytest.raises(DataError, match="keys may hold only"):
                s.write("a.b", np.zeros(2, np.float32), 0)
            with pytest.raises(DataError, match="label 5 outside"):
                s.write("k", np.zeros(2, np.float32), 5)
            with pytest.raises(DataError, match="non-finite"):
                s.write("k", np.array([0, np.nan], np.float32), 0)
            with pytest.raises(DataError, match="does not match"):
                s.write("k", np.zeros(3, np.float32), 0)
            s.write("k", np.zeros(2, np.float32), 0)


# ----------------------------------------------------------------------------- bad shards


SPEC = InputSpec("array", (3,), "float32")


def _raw_dataset(root: Path, samples: list[dict], n_classes=3, listed=None) -> str:
    """A shard of hand-made raw samples, and a dataset.json that claims ``listed`` samples."""
    root.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(root / "train-000000.tar")) as tw:
        for s in samples:
            tw.write(s)
    n = len(samples) if listed is None else listed
    counts = [n] + [0] * (n_classes - 1)
    info = {
        "format": "specens.dataset",
        "format_version": 1,
        "name": "bad",
        "classes": [f"c{i}" for i in range(n_classes)],
        "groups": None,
        "input": {"kind": "array", "encoding": "npy", "shape": [3], "dtype": "float32"},
        "splits": {
            "train": {
                "num_samples": n,
                "class_counts": counts,
                "shards": [{"name": "train-000000.tar", "num_samples": n}],
            }
        },
    }
    (root / "dataset.json").write_text(json.dumps(info))
    return str(root)


def _good(key, label=0, x=None):
    x = np.zeros(3, np.float32) if x is None else x
    return {"__key__": key, "cls": str(label).encode(), "input.npy": encode_input(x, SPEC)}


def _pickled_npy() -> bytes:
    """An .npy holding a Python object: only loadable with pickle, which the reader never allows."""
    buf = io.BytesIO()
    np.save(buf, np.array([{}], dtype=object), allow_pickle=True)
    return buf.getvalue()


BAD_SAMPLES = {
    "missing cls": ({"__key__": "bad", "input.npy": encode_input(np.zeros(3, np.float32), SPEC)}, "missing 'cls'"),
    "missing input": ({"__key__": "bad", "cls": b"0"}, "missing 'input.npy'"),
    "label out of range": (_good("bad", label=7), r"label 7 outside the class range \[0, 3\)"),
    "negative label": (_good("bad", label=-2), r"label -2 outside"),
    "label not an int": ({**_good("bad"), "cls": b"cat"}, "'cls' is not an integer"),
    "non-finite": (_good("bad", x=np.array([1, np.inf, 0], np.float32)), "non-finite"),
    "wrong shape": (_good("bad", x=np.zeros(4, np.float32)), r"input shape \(4,\) disagrees"),
    "wrong dtype": ({**_good("bad"), "input.npy": encode_input(np.zeros(3, np.float64), SPEC)}, "dtype float64"),
    "undecodable": ({**_good("bad"), "input.npy": b"not numpy"}, "cannot decode 'input.npy'"),
    "pickled object": ({**_good("bad"), "input.npy": _pickled_npy()}, "cannot decode"),
}


@pytest.mark.parametrize("case", sorted(BAD_SAMPLES))
def test_bad_sample_names_shard_and_key(tmp_path, case):
    bad, message = BAD_SAMPLES[case]
    root = _raw_dataset(tmp_path, [_good("ok1"), bad, _good("ok2")])
    with pytest.raises(DataError, match=message) as e:
        _read_all(root)
    assert "train-000000.tar" in str(e.value) and "'bad'" in str(e.value)


@pytest.mark.parametrize("case", sorted(BAD_SAMPLES))
def test_skip_policy_drops_and_counts(tmp_path, case):
    bad, _ = BAD_SAMPLES[case]
    root = _raw_dataset(tmp_path, [_good("ok1"), bad, _good("ok2")])
    loader = iter_split(root, "train", batch_size=2, on_error="skip")
    keys = [k for b in loader for k in b.keys]
    assert keys == ["ok1", "ok2"] and loader.skipped == 1


def test_a_filtering_stream_counts_a_shards_bad_samples_on_every_pass(tmp_path):
    """A shard with a bad sample is not kept in the filter's memory cache, so each pass over it
    reports its skip, as a stream that does not filter (or caches nothing) does."""
    root = _raw_dataset(tmp_path, [_good("ok1"), BAD_SAMPLES["label out of range"][0], _good("ok2", label=1)])
    skipped = {}
    for cache in (0, 2**20):
        read = Cached(Read(Labels([0, 1])), cache) if cache else Read(Labels([0, 1]))
        stream = _training(root, 4, samples=6, read=read, on_error="skip")
        skipped[cache] = []
        for epoch in (0, 1):
            stream.set_epoch(epoch)
            skipped[cache].append(sum(b.skipped for b in stream))
    assert skipped[0] == skipped[2**20] and all(n >= 2 for n in skipped[0])  # 6 draws: 3 passes over 2 good


def test_corrupt_tar(tmp_path):
    root = _raw_dataset(tmp_path, [_good(f"k{i}") for i in range(4)])
    (tmp_path / "train-000000.tar").write_bytes(b"\x00garbage" * 300)
    with pytest.raises(DataError, match=r"train-000000.tar: (corrupt or truncated tar|holds 0 samples)"):
        _read_all(root)


def test_truncated_tar(tmp_path):
    root = _raw_dataset(tmp_path, [_good(f"k{i}") for i in range(20)])
    shard = tmp_path / "train-000000.tar"
    shard.write_bytes(shard.read_bytes()[: 5 * 1024 + 100])  # cut inside a member
    with pytest.raises(DataError, match="train-000000.tar: corrupt or truncated tar"):
        _read_all(root)
    loader = iter_split(root, "train", batch_size=4, on_error="skip")
    n = sum(len(b) for b in loader)
    assert 0 < n < 20 and n + loader.skipped == 20


def test_shard_shorter_than_dataset_json_says(tmp_path):
    root = _raw_dataset(tmp_path, [_good(f"k{i}") for i in range(4)], listed=6)
    with pytest.raises(DataError, match="holds 4 samples but dataset.json lists 6"):
        _read_all(root)


def test_dataset_json_problems(tmp_path, synthetic_ds):
    root = tmp_path / "ds"
    shutil.copytree(synthetic_ds, root)
    info = json.loads((root / "dataset.json").read_text())

    def broken(**changes):
        (root / "dataset.json").write_text(json.dumps({**info, **changes}))
        return str(root)

    with pytest.raises(DataError, match="class_counts has 19 entries for 20 classes"):
        load_info(
            broken(
                splits={
                    **info["splits"],
                    "train": {**info["splits"]["train"], "class_counts": info["splits"]["train"]["class_counts"][:19]},
                }
            )
        )
    with pytest.raises(DataError, match="'format_version' is 9"):
        load_info(broken(format_version=9))
    with pytest.raises(
        DataError, match=r"dataset.json: 'input'.kind must be one of 'image', 'array', got 'audio'; 'groups' must cover"
    ):
        load_info(broken(input={**info["input"], "kind": "audio"}, groups=[[0, 1]]))
    (root / "dataset.json").write_text(json.dumps(info))
    (root / "test-000000.tar").unlink()
    with pytest.raises(DataError, match="lists shards that do not exist: test-000000.tar"):
        load_info(root)
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="dataset.json: not valid JSON"):
        load_info(root)
    (root / "dataset.json").unlink()
    with pytest.raises(DataError, match="dataset.json: missing"):
        load_info(root)


def test_input_shape_disagreeing_with_dataset_json(tmp_path, synthetic_ds):
    root = tmp_path / "ds"
    shutil.copytree(synthetic_ds, root)
    info = json.loads((root / "dataset.json").read_text())
    info["input"]["shape"] = [8]
    (root / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(
        DataError, match=r"test-000000.tar: sample .* input shape \(16,\) disagrees with dataset.json's \[8\]"
    ):
        _read_all(str(root), "test")


def test_atomic_writes_leave_files_readable_as_the_umask_allows(tmp_path):
    """Atomically written files and published directories get the umask's permissions, as any new
    file does; ``tempfile`` would leave them owner-only, unreadable to Ray workers running as
    another user or to a team sharing a run directory."""
    import os

    from specens.core.checkpoint import save_weights
    from specens.core.io import publish_dir, write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        save_weights(torch.nn.Linear(2, 2), tmp_path / "w.safetensors")
        publish_dir(tmp_path / "run", lambda d: (d / "f.txt").write_text("x"))
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"a.json": 0o644, "w.safetensors": 0o644, "run": 0o755}
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}


def test_a_shard_that_vanishes_while_read_is_reported_missing_not_corrupt():
    """A shard deleted after dataset.json was checked (a cleanup, another job) used to read as
    "corrupt or truncated"; WebDataset hands the reader's FileNotFoundError to the handler."""
    from specens.data.stages import ErrorPolicy

    handler = ErrorPolicy("raise").tar_handler("d/train-000003.tar")
    with pytest.raises(DataError, match=r"^d/train-000003.tar: missing \(its dataset's record lists it; the shard"):
        handler(FileNotFoundError(2, "No such file or directory"))
    with pytest.raises(DataError, match="corrupt or truncated"):
        handler(ValueError("bad header"))


def test_an_import_clears_what_a_killed_one_left_and_refuses_a_live_one(tmp_path):
    """A SIGKILLed import left its hidden build folder beside the output for good; the next import
    into the same place removes it (holding the import lock, so no live import owns it), and a
    second import while one is writing is refused at once."""
    from specens.core.errors import CheckpointError
    from specens.core.io import flocked

    spec = InputSpec("array", (2,), "float32")
    leftover = tmp_path / ".ds.0123456789ab.tmp"
    leftover.mkdir()
    (leftover / "train-000000.tar").write_bytes(b"half a shard")
    (tmp_path / ".other.0123456789ab.tmp").mkdir()  # another output's: not this import's to remove
    with flocked(tmp_path / ".ds.lock.tmp", "busy"):  # as a live import holds it
        with pytest.raises(CheckpointError, match="ds: another import is writing it now"):
            DatasetWriter(tmp_path / "ds", "t", ["a", "b"], spec)
    with DatasetWriter(tmp_path / "ds", "t", ["a", "b"], spec) as w:
        with w.split("train") as s:
            s.write("k0", np.zeros(2, np.float32), 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.0123456789ab.tmp", "ds"]

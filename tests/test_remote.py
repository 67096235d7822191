"""Datasets read from a URL: a real HTTP server on 127.0.0.1 (one that drops connections too) and
fsspec's memory:// protocol give exactly the local dataset's samples, or an error naming the URL."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from httpserve import Server as _Server

from specens.core.errors import DataError
from specens.data import remote
from specens.data.format import load_info
from specens.data.shards import SHUFFLE_BUFFER, Batches, Cycle, InOrder, Pipeline, Read, Shuffle, Split


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setattr(remote, "BACKOFF", 0.01)


def _samples(root, split, train=False, seed=0, buffer=SHUFFLE_BUFFER):
    where = Split.of(root, split)
    order = (Cycle(Read()), Shuffle(buffer, where.num_samples)) if train else (InOrder(Read()),)
    out = []
    for b in Pipeline(where, *order, Batches(64), seed=seed):
        out += list(zip(b.keys, b.inputs, b.labels.tolist(), strict=True))
    return out


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        ka == kb and ya == yb and torch.equal(xa, xb) for (ka, xa, ya), (kb, xb, yb) in zip(a, b, strict=True)
    )


def test_a_dataset_at_an_http_url_reads_as_the_local_one(synthetic_ds):
    """Every split in order and a seeded training epoch are sample for sample the local ones, also
    when every shard's connection drops mid-shard twice and when the server ignores Range."""
    local = {s: _samples(synthetic_ds, s) for s in ("train", "val", "test")}
    local_train = _samples(synthetic_ds, "train", train=True, seed=3, buffer=500)
    info = load_info(synthetic_ds)
    shards = [s.name for sp in info.splits.values() for s in sp.shards]
    for honour_range in (True, False):
        with _Server(Path(synthetic_ds), honour_range) as srv:
            assert load_info(srv.url) == info
            for name in shards:
                srv.drop[name] = [5000, 2]  # past the first samples: the resume must not repeat any
            for split in ("train", "val", "test"):
                assert _same(_samples(srv.url, split), local[split]), (honour_range, split)
            assert all(srv.requests[n] == 3 for n in shards)  # two drops, two resumes, no copy
            assert _same(_samples(srv.url, "train", train=True, seed=3, buffer=500), local_train)


def test_url_errors_name_the_url(synthetic_ds, tmp_path, monkeypatch):
    monkeypatch.setattr(remote, "RETRIES", 2)
    shutil.copytree(synthetic_ds, tmp_path / "ds")
    info = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    shard = info["splits"]["val"]["shards"][0]["name"]
    with _Server(tmp_path) as srv:
        with pytest.raises(DataError, match=f"{srv.url}/nope/dataset.json: HTTP 404"):
            load_info(f"{srv.url}/nope")
        url = f"{srv.url}/ds"
        srv.drop[f"ds/{shard}"] = [0, 10]  # headers, then the connection closes: never any progress
        with pytest.raises(
            DataError,
            match=rf"{url}/{shard}: connection closed at byte \d+ of \d+|"
            rf"{url}/{shard}: .*IncompleteRead.*gave up after 2 retries",
        ):
            _samples(url, "val")
        assert srv.requests[f"ds/{shard}"] == 3  # the first try and 2 retries
        del srv.drop[f"ds/{shard}"]
        body = (tmp_path / "ds" / shard).read_bytes()  # the per-sample checks are the local ones
        with tarfile.open(tmp_path / "ds" / shard) as tar:
            middle = tar.getmembers()[len(tar.getmembers()) // 2]
        (tmp_path / "ds" / shard).write_bytes(body[: middle.offset_data + 10])  # cut inside a member's data
        with pytest.raises(DataError, match=f"{url}/{shard}: (corrupt or truncated|holds)"):
            _samples(url, "val")
    with pytest.raises(DataError, match="127.0.0.1:1/ds/dataset.json: cannot connect.*gave up after 2 retries"):
        load_info("http://127.0.0.1:1/ds")


def test_a_dataset_through_fsspec_memory_protocol(synthetic_ds):
    fsspec = pytest.importorskip("fsspec")  # in the dev extra; optional for users
    fs = fsspec.filesystem("memory")
    for f in Path(synthetic_ds).iterdir():
        fs.pipe(f"/specens-test/{f.name}", f.read_bytes())
    try:
        assert _same(_samples("memory://specens-test", "test"), _samples(synthetic_ds, "test"))
        with pytest.raises(DataError, match="memory://nothing-here/dataset.json: FileNotFoundError"):
            load_info("memory://nothing-here")
        with pytest.raises(DataError, match="nosuchproto://x/dataset.json: .*nosuchproto"):
            load_info("nosuchproto://x")
    finally:
        fs.rm("/specens-test", recursive=True)


def test_generalist_eval_on_url_data_equals_local(synthetic_run):
    from click.testing import CliRunner

    from specens.cli.main import cli

    def run(data):
        r = CliRunner().invoke(
            cli, ["generalist", "eval", "--run", synthetic_run["generalist"], "--data", data, "--split", "val"]
        )
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    with _Server(Path(synthetic_run["data"])) as srv:
        assert run(srv.url) == run(synthetic_run["data"])

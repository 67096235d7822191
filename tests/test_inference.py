"""The ensemble at inference time: routing, sparse execution, loading checks, batch inference
(resumable, byte-identical) and the evaluation's arithmetic."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from specens.cli.main import cli
from specens.core.errors import CheckpointError
from specens.data.shards import iter_split
from specens.inference import Ensemble, combine_distributions, route
from specens.inference.evaluate import EnsembleTally
from specens.specialists.model import apply_correction
from specens.specialists.record import specialist_fingerprint

SPECENS = str(Path(sys.executable).with_name("specens"))


@pytest.fixture(scope="module")
def multi_shard_ds(tmp_path_factory) -> str:
    """The synthetic dataset's classes again, with the 1,000 test samples in 4 shards."""
    from specens.data.synthetic import import_synthetic

    root = tmp_path_factory.mktemp("synthetic_shards")
    import_synthetic(
        str(root), n_classes=20, n_groups=4, dim=16, n_train=20, n_val=5, n_test=50, noise=1.0, seed=0, shard_size=300
    )
    return str(root)


def _test_inputs(data, n=400):
    batch = next(iter(iter_split(data, "test", n)))
    return batch.inputs, batch.labels


# ----------------------------------------------------------------------------- routing


def test_route_by_hand():
    membership = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 1, 0, 0, 1]], dtype=torch.bool)
    p = torch.tensor(
        [
            [0.5, 0.3, 0.1, 0.05, 0.05],  # top-1 class 0: group 0; top-2 adds 1: groups 0, 2
            [0.1, 0.1, 0.1, 0.1, 0.6],  # top-1 class 4: group 2; top-2 adds a class of 0-3 (ties)
            [0.05, 0.05, 0.08, 0.7, 0.12],
        ]
    )  # top-1 class 3: group 1; top-2 adds 4: group 2
    assert route(p, membership, 1).tolist() == [[True, False, False], [False, False, True], [False, True, False]]
    two = route(p, membership, 2)
    assert two[0].tolist() == [True, False, True] and two[2].tolist() == [False, True, True]


def test_each_specialist_sees_only_its_routed_examples(ensemble_run):
    ens = Ensemble.load(ensemble_run["root"], device="cpu")
    x, _ = _test_inputs(ensemble_run["data"])
    seen = [0] * len(ens.specialists)
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, i=i: seen.__setitem__(i, seen[i] + len(args[0])))
        for i, m in enumerate(ens.specialists)
    ]
    try:
        out = ens.forward(x)
    finally:
        for h in hooks:
            h.remove()
    p_g = F.softmax(ens.generalist.model(x).float(), 1)
    expected = route(p_g, ens.membership, 1).sum(0).tolist()
    assert seen == expected == out.active.sum(0).tolist()
    assert sum(seen) == len(x)  # disjoint groups, top-1 routing: one specialist per example, not M
    assert all(0 < s < len(x) for s in seen)


def test_sparse_execution_equals_dense_specialists_masked(ensemble_run):
    ens = Ensemble.load(ensemble_run["root"], device="cpu", top_n=6)  # several active each
    x, _ = _test_inputs(ensemble_run["data"])
    with torch.no_grad():
        p_g = F.softmax(ens.generalist.model(x).float(), 1)
        dense = [
            F.softmax(apply_correction(m(x).float(), c), 1)
            for m, c in zip(ens.specialists, ens.corrections, strict=True)
        ]
    active = route(p_g, ens.membership, 6)
    want = combine_distributions(p_g, dense, ens.groups, active)
    got = ens.forward(x)
    assert torch.equal(got.active, active) and got.active.sum(1).float().mean() > 1.3
    torch.testing.assert_close(got.q, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.p_general, p_g)
    assert torch.equal(ens.predict(x), got.q.argmax(1))


def test_a_bounded_specialist_store_computes_the_same_q(ensemble_run, multi_shard_ds, tmp_path):
    """Beyond ``specialist_memory`` the specialists load as batches route to them, each once per
    batch, least recently used dropped: memory of one specialist, the same q, the same files."""
    from specens.inference.ensemble import SpecialistStore
    from specens.inference.infer import infer

    full = Ensemble.load(ensemble_run["root"], device="cpu", top_n=2)
    small = Ensemble.load(ensemble_run["root"], device="cpu", top_n=2, specialist_memory=1)
    store = small.specialists
    assert isinstance(store, SpecialistStore) and store.loads == 0 and not isinstance(full.specialists, SpecialistStore)
    one = sum(t.numel() * t.element_size() for t in full.specialists[0].state_dict().values())
    x, _ = _test_inputs(ensemble_run["data"])
    for batch in (x[:150], x[150:]):
        got, want = small.forward(batch), full.forward(batch)
        assert torch.equal(got.q, want.q) and torch.equal(got.active, want.active)
    routed = [int(out.active.any(0).sum()) for out in (full.forward(x[:150]), full.forward(x[150:]))]
    assert store.loads == sum(routed) and min(routed) >= 2  # each routed-to specialist once per batch
    assert store.loaded_bytes == one  # only the last one used stays
    two = Ensemble.load(ensemble_run["root"], device="cpu", top_n=2, specialist_memory=2 * one + 1).specialists
    for m in (0, 1, 0, 2, 0, 1):
        two[m]
    assert two.loads == 4  # 0, 1, then 2 evicts 1 (0 was used more recently), then 1 again
    for mem, out in ((None, "eager"), (1, "lazy")):
        infer(
            ensemble_run["root"],
            multi_shard_ds,
            str(tmp_path / out),
            device="cpu",
            progress=False,
            **({} if mem is None else {"specialist_memory": mem}),
        )
    for f in sorted((tmp_path / "eager").glob("*.jsonl")):
        assert f.read_bytes() == (tmp_path / "lazy" / f.name).read_bytes()


def test_examples_with_no_active_specialist_keep_the_generalist(ensemble_run):
    full = Ensemble.load(ensemble_run["root"], device="cpu")
    part = Ensemble(full.generalist, full.groups[:1], full.specialists[:1], full.corrections[:1])
    x, _ = _test_inputs(ensemble_run["data"])
    out = part.forward(x)
    idle = ~out.active.any(1)
    assert 0 < int(idle.sum()) < len(x)
    assert torch.equal(out.q[idle], out.p_general[idle])
    assert not torch.equal(out.q[~idle], out.p_general[~idle])


def test_the_specialist_weight_reaches_the_solve(ensemble_run):
    x, _ = _test_inputs(ensemble_run["data"])
    ens = Ensemble.load(ensemble_run["root"], device="cpu", specialist_weight=3.0)
    p_g, active, p_specs = ens.experts(x)
    want = combine_distributions(p_g, p_specs, ens.groups, active, specialist_weight=3.0)
    torch.testing.assert_close(ens.forward(x).q, want, atol=0, rtol=0)
    paper = ens.combine(p_g, active, p_specs, specialist_weight=1.0)
    assert (ens.forward(x).q - paper).abs().max() > 1e-3
    ens.specialist_weight = 1
    torch.testing.assert_close(ens.forward(x).q, paper, atol=0, rtol=0)
    with pytest.raises(ValueError, match="specialist_weight"):
        ens.specialist_weight = 0.0


# ----------------------------------------------------------------------------- loading


def _copy_run(run, tmp_path) -> Path:
    dst = tmp_path / "run"
    for name in ("generalist", "clusters", "specialists"):
        shutil.copytree(Path(run["root"]) / name, dst / name)
    return dst


def _edit_json(path: Path, **changes) -> None:
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


def test_load_refuses_a_missing_specialist(ensemble_run, tmp_path):
    run = _copy_run(ensemble_run, tmp_path)
    shutil.rmtree(run / "specialists" / "s002")
    with pytest.raises(CheckpointError, match=r"s002/specialist.json: missing; group 2"):
        Ensemble.load(run, device="cpu")


def test_load_refuses_a_specialist_of_another_generalist(ensemble_run, tmp_path):
    run = _copy_run(ensemble_run, tmp_path)
    _edit_json(run / "specialists" / "s001" / "specialist.json", generalist_fingerprint="0123456789abcdef")
    with pytest.raises(CheckpointError, match=r"s001/specialist.json: 'fingerprint' is .* \(edited after training\?\)"):
        Ensemble.load(run, device="cpu")  # an edited record is caught first
    path = run / "specialists" / "s001" / "specialist.json"
    _edit_json(path, fingerprint=specialist_fingerprint(json.loads(path.read_text())))  # a record sealed as such
    with pytest.raises(CheckpointError, match=r"s001/specialist.json: trained from generalist 0123456789abcdef"):
        Ensemble.load(run, device="cpu")


def test_load_refuses_specialists_of_another_clustering(ensemble_run, tmp_path):
    run = _copy_run(ensemble_run, tmp_path)
    clusters = run / "clusters" / "clusters.json"
    d = json.loads(clusters.read_text())
    d["groups"] = [sorted(d["groups"][0] + d["groups"][1])] + d["groups"][2:]  # merge two groups: 3 left
    clusters.write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match=r"s000/specialist.json: trained for another clusters.json"):
        Ensemble.load(run, device="cpu")


def test_load_refuses_clusters_of_another_generalist(ensemble_run, tmp_path):
    run = _copy_run(ensemble_run, tmp_path)
    _edit_json(run / "clusters" / "clusters.json", generalist_fingerprint="fedcba9876543210")
    with pytest.raises(CheckpointError, match=r"clusters.json: made from generalist fedcba9876543210"):
        Ensemble.load(run, device="cpu")


def test_load_refuses_a_specialist_beyond_the_groups(ensemble_run, tmp_path):
    run = _copy_run(ensemble_run, tmp_path)
    shutil.copytree(run / "specialists" / "s000", run / "specialists" / "s009")
    with pytest.raises(CheckpointError, match=r"s009: no such group"):
        Ensemble.load(run, device="cpu")


# ----------------------------------------------------------------------------- batch inference


def _infer(run, data, out, *extra, env=None):
    return subprocess.run(
        [
            SPECENS,
            "infer",
            "--run",
            str(run),
            "--data",
            data,
            "--out",
            str(out),
            "--save-q",
            "--top-k",
            "3",
            "--batch-size",
            "64",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def _infer_here(run, data, out, *extra, threads=1):
    """``_infer`` in this process, through the root command, with torch on ``threads`` threads (as
    a process started with ``OMP_NUM_THREADS=threads``; float sums depend on the split), restored
    afterwards: the tests compare its files with other processes', not the start of a process."""
    args = ["infer", "--run", str(run), "--data", data, "--out", str(out), "--save-q", "--top-k", "3"]
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        r = CliRunner().invoke(cli, [*args, "--batch-size", "64", *map(str, extra)])
    finally:
        torch.set_num_threads(saved)
    assert r.exit_code == 0 and r.exception is None, (r.exception, r.output)
    return r


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_infer_resumes_after_a_kill_with_byte_identical_output(ensemble_run, multi_shard_ds, tmp_path):
    run = ensemble_run["root"]
    _infer_here(run, multi_shard_ds, tmp_path / "whole")  # one torch thread, as the processes below

    # SIGKILL in the middle of the third shard, through infer's on_batch callback
    script = (
        "import os, signal, sys\n"
        "from specens.inference.infer import infer\n"
        "def die(shard, done, n):\n"
        "    if shard == 2 and 2 * done >= n:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "infer(sys.argv[1], sys.argv[2], sys.argv[3], top_k=3, save_q=True, batch_size=64, progress=False, "
        "on_batch=die)\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script, str(run), multi_shard_ds, str(tmp_path / "resumed")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert killed.returncode == -9, killed.stderr
    names = sorted(p.name for p in (tmp_path / "resumed").iterdir())
    assert names == ["infer.json", "test-000000.jsonl", "test-000000.q.npy", "test-000001.jsonl", "test-000001.q.npy"]
    assert json.loads((tmp_path / "resumed" / "infer.json").read_text())["complete"] is False

    _infer_here(run, multi_shard_ds, tmp_path / "resumed")  # another process than the one killed
    assert _files(tmp_path / "resumed") == _files(tmp_path / "whole")

    # the content: keys in shard order, top-k of q, q on the simplex, specialists as routed
    manifest = json.loads((tmp_path / "whole" / "infer.json").read_text())
    assert manifest["complete"] and manifest["n_samples"] == 1000 and len(manifest["shards"]) == 4
    rows = [json.loads(line) for line in (tmp_path / "whole" / "test-000001.jsonl").read_text().splitlines()]
    q = np.load(tmp_path / "whole" / "test-000001.q.npy")
    keys = [k for b in iter_split(multi_shard_ds, "test", 64, shards=["test-000001.tar"]) for k in b.keys]
    assert [r["key"] for r in rows] == keys and q.shape == (len(keys), 20)
    np.testing.assert_allclose(q.sum(1), 1, atol=1e-5)
    assert [r["classes"][0] for r in rows] == q.argmax(1).tolist()
    assert all(
        len(r["classes"]) == 3 and r["probs"] == sorted(r["probs"], reverse=True) and len(r["specialists"]) == 1
        for r in rows
    )


@pytest.mark.slow
def test_infer_with_ray_workers_writes_what_one_process_writes(ensemble_run, multi_shard_ds, tmp_path):
    """Four shards over two Ray tasks (a local cluster on loopback, started and stopped by infer),
    one shard already finished beforehand: the same files, byte for byte, as one process with as
    many torch threads as a task (Ray gives a 1-CPU task one; float sums depend on the split)."""
    run = ensemble_run["root"]
    _infer_here(run, multi_shard_ds, tmp_path / "one", threads=1)
    (tmp_path / "two").mkdir()
    shutil.copy(tmp_path / "one" / "infer.json", tmp_path / "two" / "infer.json")
    for name in ("test-000002.jsonl", "test-000002.q.npy"):  # finished by an earlier attempt: kept, not rewritten
        shutil.copy(tmp_path / "one" / name, tmp_path / "two" / name)
    two = _infer(
        run, multi_shard_ds, tmp_path / "two", "--workers", "2", env={"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    )
    assert two.returncode == 0, two.stderr
    assert _files(tmp_path / "two") == _files(tmp_path / "one")


def test_infer_refuses_mismatched_inputs(ensemble_run, multi_shard_ds, glyph_ds, tmp_path):
    run = ensemble_run["root"]
    r = CliRunner().invoke(cli, ["infer", "--run", str(run), "--data", glyph_ds, "--out", str(tmp_path / "a")])
    assert r.exit_code == 1 and "the ensemble's generalist was trained on 20 classes, " in r.output
    assert "dataset.json has 30 that differ" in r.output

    out = tmp_path / "b"
    assert (
        CliRunner().invoke(cli, ["infer", "--run", str(run), "--data", multi_shard_ds, "--out", str(out)]).exit_code
        == 0
    )
    r = CliRunner().invoke(
        cli, ["infer", "--run", str(run), "--data", multi_shard_ds, "--out", str(out), "--top-k", "2"]
    )
    assert r.exit_code == 1 and "infer.json: these predictions were made with top_k = 5" in r.output
    from specens.core.errors import DataError
    from specens.inference.infer import infer

    manifest = json.loads((out / "infer.json").read_text())
    del manifest["specialist_weight"]  # written before the setting existed: it meant w = 1
    (out / "infer.json").write_text(json.dumps(manifest))
    assert infer(str(run), multi_shard_ds, str(out), progress=False)["complete"]
    weighted = Ensemble.load(run, device="cpu", specialist_weight=2.0)
    with pytest.raises(DataError, match="specialist_weight = 1.0"):
        infer(str(run), multi_shard_ds, str(out), ensemble=weighted, progress=False)

    broken = tmp_path / "broken"
    shutil.copytree(multi_shard_ds, broken)
    shard = broken / "test-000001.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    r = CliRunner().invoke(cli, ["infer", "--run", str(run), "--data", str(broken), "--out", str(tmp_path / "c")])
    assert r.exit_code == 1 and "test-000001.tar" in r.output
    assert (tmp_path / "c" / "test-000000.jsonl").is_file()  # what was finished is kept
    assert not (tmp_path / "c" / "test-000001.jsonl").exists()

    r = CliRunner().invoke(
        cli, ["infer", "--run", str(tmp_path / "nowhere"), "--data", multi_shard_ds, "--out", str(tmp_path / "d")]
    )
    assert r.exit_code == 1 and "nowhere/generalist/model.json: missing" in r.output


# ----------------------------------------------------------------------------- evaluation


def test_tally_by_hand():
    # 4 classes; group 0 = {0, 1}, group 1 = {1, 2}; class 3 is in no group (U = {0, 1, 2}).
    membership = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0]], dtype=torch.bool)
    p_g = torch.tensor(
        [
            [0.1, 0.5, 0.2, 0.2],  # y=0: wrong; conditional (over U) also 1: wrong
            [0.2, 0.1, 0.3, 0.4],  # y=2: wrong (3); conditional: 2 right
            [0.1, 0.1, 0.1, 0.7],  # y=3: right; not in U
            [0.1, 0.6, 0.1, 0.2],
        ]
    )  # y=1: right
    q = torch.tensor(
        [
            [0.6, 0.2, 0.1, 0.1],  # fixed
            [0.2, 0.1, 0.3, 0.4],  # still wrong
            [0.1, 0.1, 0.1, 0.7],
            [0.1, 0.2, 0.1, 0.6],
        ]
    )  # broken
    active = torch.tensor([[True, True], [False, False], [False, False], [True, True]])
    y = torch.tensor([0, 2, 3, 1])
    t = EnsembleTally(membership)
    t.update(p_g[:2], q[:2], active[:2], y[:2])  # in two batches
    t.update(p_g[2:], q[2:], active[2:], y[2:])
    r = t.result()
    assert r.generalist.top1 == 0.5 and r.ensemble.top1 == 0.5
    assert r.n_in_union == 3
    assert r.generalist.conditional == pytest.approx(2 / 3)  # examples 1 and 3
    assert r.ensemble.conditional == 1.0  # 0, 1, and 3 (its wrong top class 3 is outside U)
    assert r.routing.to_json() == {"covered": 3, "missed": 1, "missed_fraction": pytest.approx(1 / 3)}  # example 1
    assert r.mean_active_specialists == 1.0
    table = {row.covering: vars(row) for row in r.table4}
    assert table["0"]["count"] == 1 and table["0"]["delta_correct"] == 0
    assert (
        table["1"]["count"] == 2 and table["1"]["delta_correct"] == 1 and math.isnan(table["1"]["relative_improvement"])
    )
    assert table["2"]["count"] == 1 and table["2"]["delta_correct"] == -1 and table["2"]["relative_improvement"] == -1
    assert r.generalist.nll == pytest.approx(-np.log([0.1, 0.3, 0.7, 0.6]).mean())


def test_evaluate_cli_writes_json_and_plot(ensemble_run, tmp_path):
    from specens.generalist.evaluate import evaluate_generalist

    out = tmp_path / "ev"
    r = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--run",
            str(ensemble_run["root"]),
            "--data",
            ensemble_run["data"],
            "--out",
            str(out),
            "--top-n",
            "6",
        ],
    )
    assert r.exit_code == 0, r.output
    ev = json.loads((out / "evaluation.json").read_text())
    gen = evaluate_generalist(ensemble_run["generalist"], ensemble_run["data"], "test", progress=False)
    assert ev["n"] == gen["n"] == 1000 and ev["generalist"]["top1"] == pytest.approx(gen["top1"])
    assert ev["top_n"] == 6 and ev["mean_active_specialists"] > 1
    assert sum(row["count"] for row in ev["table4"]) == 1000
    assert (out / "table4.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Table 4" in r.output and "conditional accuracy" in r.output

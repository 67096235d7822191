"""Specialists on a real two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a
head and a worker node, each its own raylet with one CPU), reading their data from a URL: the
specialists are spread over both nodes, removing the worker node mid-run gets its tasks retried
on the head, and the final weights equal an uninterrupted run's."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import faults
import pytest
import torch
from httpserve import Server
from safetensors.torch import load_file
from test_specialists_ray import RAY_ENV

from specens.specialists.parallel import train_all
from specens.specialists.train import SpecialistConfig

ray = pytest.importorskip("ray")
ray.cloudpickle.register_pickle_by_value(faults)


@pytest.fixture
def two_nodes(monkeypatch):
    from ray.cluster_utils import Cluster

    for k, v in RAY_ENV.items():
        monkeypatch.setenv(k, v)
    loopback = dict(num_cpus=1, num_gpus=0, node_ip_address="127.0.0.1")
    cluster = Cluster(initialize_head=True, head_node_args=dict(include_dashboard=False, **loopback))
    try:
        worker = cluster.add_node(**loopback)
        ray.init(address=cluster.address, runtime_env={"env_vars": RAY_ENV})
        yield cluster, worker
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_a_node_removed_mid_run_loses_nothing(two_nodes, synthetic_run, tmp_path):
    cluster, worker = two_nodes
    head_id, worker_id = cluster.head_node.node_id, worker.node_id
    marks = tmp_path / "marks"
    marks.mkdir()
    with Server(Path(synthetic_run["data"])) as srv:

        def cfg(out):
            return SpecialistConfig(
                generalist=synthetic_run["generalist"],
                clusters=synthetic_run["clusters"],
                data=srv.url,
                out=str(out),
                epochs=2,  # the first on the worker, the second (resumed) on the head for one cut off
                batch_size=64,
                lr=3e-3,
                threads=1,
                checkpoint_every=0,
            )

        lines, result = [], {}
        run = threading.Thread(
            target=lambda: result.update(
                summary=train_all(
                    cfg(tmp_path / "run"),
                    max_retries=3,
                    on_epoch_end=faults.RecordNode(marks, delay=1.0),
                    echo=lines.append,
                )
            )
        )
        run.start()
        deadline = time.time() + 300  # a hang guard, not a speed check: generous for a loaded machine
        while not list(marks.glob(f"s*-e0-{worker_id}")):  # a specialist has done an epoch on the worker
            assert time.time() < deadline and run.is_alive(), lines
            time.sleep(0.1)
        cluster.remove_node(worker)
        removed_at = time.time()
        run.join(timeout=300)
        assert not run.is_alive()
        summary = result["summary"]
        assert sorted(summary.trained) == [0, 1, 2, 3] and not summary.failed, lines

        ran = {}  # specialist -> [(epoch, node, mtime)]
        for p in marks.iterdir():
            s, e, node = p.name.split("-", 2)
            ran.setdefault(int(s[1:]), []).append((int(e[1:]), node, p.stat().st_mtime))
        assert {node for r in ran.values() for _, node, _ in r} == {head_id, worker_id}  # spread over both
        moved = [m for m, r in ran.items() if {n for _, n, _ in r} == {head_id, worker_id}]
        assert moved, ran  # at least one specialist was cut off on the worker and finished on the head
        for m in moved:
            assert all(node == head_id for _, node, t in ran[m] if t > removed_at)
            history = json.loads((tmp_path / "run" / "specialists" / f"s{m:03d}" / "specialist.json").read_text())
            assert [h["epoch"] for h in history["metrics"]["history"]] == [1, 2]

        reference = train_all(cfg(tmp_path / "ref"), local=True, echo=lambda _: None)  # uninterrupted
        assert sorted(reference.trained) == [0, 1, 2, 3]
    for m in range(4):
        a = load_file(tmp_path / "run" / "specialists" / f"s{m:03d}" / "model.safetensors")
        b = load_file(tmp_path / "ref" / "specialists" / f"s{m:03d}" / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), m

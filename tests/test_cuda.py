"""The stages on a CUDA device: training, the KL solve and batch inference compute what they
compute on the CPU. Skipped where torch sees no GPU (CI has none); run on a GPU machine with
``pytest tests/test_cuda.py``."""

import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from specens.cli.main import cli
from specens.data.shards import iter_split
from specens.inference import Ensemble, combine_distributions

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_the_kl_solve_on_cuda_gives_the_cpus_q():
    rng = np.random.default_rng(0)
    c, b = 40, 256
    groups = [torch.tensor(np.sort(rng.choice(c, 8, replace=False))) for _ in range(5)]
    pg = torch.tensor(rng.dirichlet(np.full(c, 0.3), b))
    ps = [torch.tensor(rng.dirichlet(np.full(len(g) + 1, 0.3), b)) for g in groups]
    active = torch.tensor(rng.random((b, len(groups))) < 0.6)
    want = combine_distributions(pg, ps, groups, active)  # float64 on the CPU
    got = combine_distributions(
        pg.float().cuda(), [p.float().cuda() for p in ps], [g.cuda() for g in groups], active.cuda()
    )
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu().double(), want, atol=2e-5, rtol=0)


def test_the_ensemble_on_cuda_gives_the_cpus_q(ensemble_run):
    batch = next(iter(iter_split(ensemble_run["data"], "test", 400)))
    cpu = Ensemble.load(ensemble_run["root"], device="cpu", top_n=3)
    gpu = Ensemble.load(ensemble_run["root"], device="cuda", top_n=3)
    with torch.no_grad():
        want, got = cpu.forward(batch.inputs), gpu.forward(batch.inputs.cuda())
    assert torch.equal(got.active.cpu(), want.active)
    torch.testing.assert_close(got.q.cpu(), want.q, atol=1e-4, rtol=0)


def test_generalist_and_specialists_train_on_cuda_and_load_on_the_cpu(synthetic_run, tmp_path):
    from specens.generalist.checkpoint import load_generalist, read_record
    from specens.generalist.config import TrainConfig
    from specens.generalist.train import train_generalist
    from specens.specialists.parallel import train_all
    from specens.specialists.record import read_specialist, specialist_dir
    from specens.specialists.train import SpecialistConfig

    data = synthetic_run["data"]
    cfg = TrainConfig(data=data, out=str(tmp_path / "g"), epochs=2, model_kwargs={"hidden": [64]}, device="cuda")
    train_generalist(cfg, progress=False)
    assert read_record(tmp_path / "g").metrics.history[-1].train_top1 > 0.2  # it learned, on the GPU
    assert next(load_generalist(tmp_path / "g").model.parameters()).device.type == "cpu"
    run = tmp_path / "run"  # specialists of the shared generalist, whose groups are clustered
    for part in ("generalist", "clusters"):
        shutil.copytree(synthetic_run["root"] / part, run / part)
    cfg = SpecialistConfig(
        generalist=str(run / "generalist"),
        clusters=str(run / "clusters" / "clusters.json"),
        data=data,
        out=str(run),
        epochs=1,
        batch_size=64,
        device="cuda",
    )
    train_all(cfg, local=True, echo=lambda *_: None)
    assert read_specialist(specialist_dir(run, 0)).lr > 0
    ens = Ensemble.load(str(run), device="cpu")  # weights written on the GPU, read on the CPU
    batch = next(iter(iter_split(data, "test", 64)))
    assert torch.isfinite(ens.forward(batch.inputs).q).all()


def test_batch_inference_on_cuda_writes_the_cpus_predictions(ensemble_run, tmp_path):
    for device in ("cpu", "cuda"):
        args = ["infer", "--run", str(ensemble_run["root"]), "--data", ensemble_run["data"], "--save-q"]
        result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / device), "--device", device, "--quiet"])
        assert result.exit_code == 0, result.output
    qs = sorted(p.name for p in (tmp_path / "cpu").glob("*.q.npy"))
    assert qs and qs == sorted(p.name for p in (tmp_path / "cuda").glob("*.q.npy"))
    for name in qs:
        a, b = np.load(tmp_path / "cpu" / name), np.load(tmp_path / "cuda" / name)
        np.testing.assert_allclose(b, a, atol=1e-4)
        assert (a.argmax(1) == b.argmax(1)).mean() > 0.99  # near-ties may swap

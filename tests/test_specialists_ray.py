"""Many specialists through Ray: retries resume exactly, reruns skip, bad inputs stop early."""

import json

import faults
import pytest
import torch
from safetensors.torch import load_file

from specens.core.errors import CheckpointError
from specens.specialists.parallel import train_all
from specens.specialists.train import SpecialistConfig, train_specialist

ray = pytest.importorskip("ray")
ray.cloudpickle.register_pickle_by_value(faults)  # Ray workers cannot import the tests folder


# A loopback test cluster: no token authentication (Ray 2.5x turns it on whenever ~/.ray/auth_token
# exists, and ray.init writes the mode into os.environ, where it would leak into later tests).
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def ray_local():
    with pytest.MonkeyPatch.context() as env:  # restored afterwards, even after a failure
        for k, v in RAY_ENV.items():
            env.setenv(k, v)
        ray.init(
            num_cpus=2,
            num_gpus=0,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            runtime_env={"env_vars": RAY_ENV},
        )
        try:
            yield
        finally:
            ray.shutdown()


def _cfg(run, out, **kw):
    return SpecialistConfig(
        **{
            **dict(
                generalist=run["generalist"],
                clusters=run["clusters"],
                data=run["data"],
                out=str(out),
                epochs=2,
                batch_size=64,
                lr=3e-3,
                threads=1,
                checkpoint_every=0,
            ),
            **kw,
        }
    )


@pytest.mark.slow
def test_failed_specialist_is_retried_resumes_and_matches_an_uninterrupted_run(ray_local, synthetic_run, tmp_path):
    cfg = _cfg(synthetic_run, tmp_path / "ray")
    lines = []
    fail = faults.FailOnce(index=1, epoch=0, marker=tmp_path / "failed-once")
    summary = train_all(cfg, max_retries=2, on_epoch_end=fail, echo=lines.append)
    assert sorted(summary.trained) == [0, 1, 2, 3] and not summary.failed
    assert any("[4/4] done 4" in line for line in lines)
    # every epoch line reaches the driver (through its queue, not Ray's log streaming) before the
    # summary of its specialist: two epochs each, specialist 1's first from the attempt that failed
    for m in range(4):
        epochs = [i for i, line in enumerate(lines) if line.startswith(f"specialist {m}: epoch ")]
        done = next(i for i, line in enumerate(lines) if line.startswith(f"specialist {m:3d}: "))
        assert len(epochs) == 2 and max(epochs) < done, (m, lines)
    assert (tmp_path / "failed-once").is_file()
    # Specialist 1 failed once after its first epoch and was retried:
    history = json.loads((tmp_path / "ray" / "specialists" / "s001" / "specialist.json").read_text())["metrics"][
        "history"
    ]
    assert [h["epoch"] for h in history] == [1, 2]
    # ... and resumed from its checkpoint to exactly what an uninterrupted run computes.
    ref = _cfg(synthetic_run, tmp_path / "ref")
    train_specialist(ref, 1)
    a = load_file(tmp_path / "ray" / "specialists" / "s001" / "model.safetensors")
    b = load_file(tmp_path / "ref" / "specialists" / "s001" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

    again = train_all(cfg, echo=lines.append)  # a resubmitted finished job trains nothing
    assert again.trained == [] and sorted(again.skipped) == [0, 1, 2, 3]
    # another config is refused, naming what differs, unless restart retrains
    with pytest.raises(CheckpointError, match=r"s002 \(epochs: 2 -> 3\); rerun with --restart"):
        train_all(_cfg(synthetic_run, tmp_path / "ray", epochs=3), indices=[2], local=True, echo=lines.append)
    changed = train_all(
        _cfg(synthetic_run, tmp_path / "ray", epochs=3), indices=[2], local=True, restart=True, echo=lines.append
    )
    assert changed.trained == [2]


def test_bad_inputs_stop_before_training(synthetic_run, tmp_path):
    d = json.loads(open(synthetic_run["clusters"]).read())
    cases = {
        "other generalist": (
            {**d, "generalist_fingerprint": "0123456789abcdef"},
            "made from generalist 0123456789abcdef",
        ),
        "out of range": ({**d, "groups": [[0, 1], [5, 20]]}, r"group 1 has classes outside \[0, 20\)"),
        "empty": ({**d, "groups": [[0, 1], []]}, "group 1 is empty"),
        "every class": ({**d, "groups": [list(range(20))]}, "needs examples both in and outside its group"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(content))
        with pytest.raises(CheckpointError, match=message):
            train_all(_cfg({**synthetic_run, "clusters": str(path)}, tmp_path / name), echo=lambda s: None)
        assert not (tmp_path / name / "specialists").exists()

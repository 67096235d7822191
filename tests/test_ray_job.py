"""End to end: `ray job submit` of `specens specialists train` to a loopback Ray head."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def ray_head(tmp_path):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    start = [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
             "--disable-usage-stats", "--num-cpus", "2", "--num-gpus", "0"]
    r = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
    try:
        assert r.returncode == 0, r.stderr[-2000:]
        yield env
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_ray_job_submit_trains_every_specialist(ray_head, synthetic_run, tmp_path):
    out = tmp_path / "run"
    runtime_env = json.dumps({"excludes": [".git", ".venv", "runs", "*.tar"]})
    cmd = [str(BIN / "ray"), "job", "submit", "--address", "http://127.0.0.1:8265", "--working-dir", str(REPO),
           "--runtime-env-json", runtime_env, "--",
           "specens", "specialists", "train", "--generalist", synthetic_run["generalist"],
           "--clusters", synthetic_run["clusters"], "--data", synthetic_run["data"], "--out", str(out),
           "--epochs", "2", "--set", "threads=1"]
    for _ in range(3):  # a head just started may not have its job agent yet: Ray says to try again
        r = subprocess.run(cmd, env=ray_head, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in r.stderr:
            break
        time.sleep(10)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "succeeded" in r.stdout
    n = len(json.loads(open(synthetic_run["clusters"]).read())["groups"])
    assert n >= 3
    for m in range(n):
        meta = json.loads((out / "specialists" / f"s{m:03d}" / "specialist.json").read_text())
        assert meta["index"] == m and (out / "specialists" / f"s{m:03d}" / "model.safetensors").is_file()
        assert meta["metrics"]["best_epoch"] >= 1
    assert not list((out / "specialists").glob(".*"))  # no work or temporary directories left behind

"""End to end: `ray job submit` of `specens specialists train` to a loopback Ray head."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports: every socket stays bound until all are chosen (binding
    one at a time, the kernel may hand out the same port twice, and Ray refuses two components on
    one port)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


@pytest.fixture
def ray_head():
    """A loopback Ray head of this test's own: its own ports and temp dir, started with ``--block``
    in a new process group, and stopped by signalling that group, so that no other Ray process on
    the machine (``ray stop`` would stop them all) is touched. Yields (env, dashboard address)."""
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "disabled",
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    dashboard, gcs, client, agent = _free_ports(4)
    start = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(gcs),
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dashboard),
        "--ray-client-server-port",
        str(client),
        "--dashboard-agent-listen-port",
        str(agent),
        "--disable-usage-stats",
        "--num-cpus",
        "2",
        "--num-gpus",
        "0",
        "--temp-dir",
        temp_dir,
    ]
    log = open(Path(temp_dir) / "head.log", "w+")
    head = subprocess.Popen(start, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert head.poll() is None, open(log.name).read()[-3000:]
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the Ray head did not come up in 180 s"
                time.sleep(1)
        yield env, address
    finally:
        # `ray start --block` does not exit on SIGTERM within 30 s (measured: the whole 30 s went by
        # on every run), so the group gets 5 s before SIGKILL, which it got after 30 s anyway
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 30)):
            try:
                os.killpg(head.pid, sig)  # the head and every process it started, and nothing else
                head.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_trains_every_specialist(ray_head, synthetic_run, tmp_path):
    out = tmp_path / "run"
    runtime_env = json.dumps({"excludes": [".git", ".venv", "runs", "*.tar"]})
    env, address = ray_head
    cmd = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(REPO),
        "--runtime-env-json",
        runtime_env,
        "--",
        "specens",
        "specialists",
        "train",
        "--generalist",
        synthetic_run["generalist"],
        "--clusters",
        synthetic_run["clusters"],
        "--data",
        synthetic_run["data"],
        "--out",
        str(out),
        "--epochs",
        "1",  # what is tested is the job and its outputs, not the training: one epoch each
        "--set",
        "threads=1",
    ]
    for _ in range(3):  # a head just started may not have its job agent yet: Ray says to try again
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
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

"""The README's two commands are the ones CI and users run, and the main job works as written."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _command(marker: str) -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(rf"<!-- {marker} -->\n```bash\n(.+?)\n```", text)
    assert m, f"README has no command under <!-- {marker} -->"
    return m.group(1)


def test_ci_runs_the_readme_test_command():
    assert _command("test-command") in (REPO / ".ci" / "run").read_text()


def test_install_steps_use_the_constraints_file():
    for marker in ("main-command", "test-command"):
        cmd = _command(marker)
        assert "-c configs/constraints.txt" in cmd
    assert (REPO / "configs" / "constraints.txt").read_text().split() == ["torch==2.13.0"]


def test_main_job_runs_as_written(tmp_path):
    """Runs the main command's job (the part after the install) in this environment, on a smaller
    dataset so that the suite stays fast; the defaults are exercised by the README's own command."""
    job = _command("main-command").split("&&")[-1].strip()
    argv = shlex.split(job)
    assert argv[0] == "specens"
    exe = Path(sys.executable).with_name("specens")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    r = subprocess.run([str(exe), *argv[1:], "--run", str(tmp_path / "demo"), "--classes", "30", "--epochs", "8",
                        "--specialist-epochs", "2"], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r"generalist test top-1 ([0-9.]+)", r.stdout)
    assert m and float(m.group(1)) > 0.3, r.stdout  # 30 classes: chance is 0.033
    run = tmp_path / "demo"
    assert len(list((run / "specialists").glob("s*/model.safetensors"))) == 3  # one per 10 classes, via Ray
    assert "submitted 3 Ray tasks" in r.stdout
    ev = json.loads((run / "evaluation" / "evaluation.json").read_text())
    assert ev["n"] == 30 * 8 and abs(ev["generalist"]["top1"] - float(m.group(1))) <= 5e-5  # printed to 4 places
    assert re.search(r"top-1 accuracy\s+[0-9.]+\s+[0-9.]+", r.stdout) and "Table 4" in r.stdout
    assert len(list((run / "predictions").glob("*.jsonl"))) == 1 and (run / "evaluation" / "table4.png").is_file()

"""The README's two commands are the ones CI and users run, and the main job works as written."""

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
    r = subprocess.run([str(exe), *argv[1:], "--run", str(tmp_path / "demo"), "--classes", "30", "--epochs", "8"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r"generalist test top-1 ([0-9.]+)", r.stdout)
    assert m and float(m.group(1)) > 0.3, r.stdout  # 30 classes: chance is 0.033
    assert (tmp_path / "demo" / "generalist" / "model.safetensors").is_file()

"""launch.sh, the README's first command: usage errors, paths relative to where it is run,
and a .venv whose setup was cut short. Run from a copy of the launcher beside a .venv whose
python is this interpreter, except that its `-m pip` only records the call (a real install
here would reinstall the project being tested)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo(tmp_path) -> Path:
    """A folder with launch.sh, pyproject.toml, configs/ and an installed .venv."""
    root = tmp_path / "repo"
    (root / ".venv" / "bin").mkdir(parents=True)
    for name in ("launch.sh", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "configs", root / "configs")
    python = root / ".venv" / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'if [ "$1 $2" = "-m pip" ]; then echo "$@" >> "{root}/pip.log"; exit 0; fi\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    stamp = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()
    (root / ".venv" / ".installed").write_text(stamp + "\n")
    return root


def launch(repo: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MYNA_RPE_DEBUG": ""}
    env.pop("RUNS", None)
    return subprocess.run(
        ["bash", str(repo / "launch.sh"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (("train",), "usage: bash launch.sh train CONFIG [FLAGS]"),
        (("slurm",), "usage: bash launch.sh slurm CONFIG [FLAGS]"),
        (("probe",), "usage: bash launch.sh probe WORKDIR [FLAGS]"),
        (("tarin", "configs/tiny.py"), "got 'tarin'"),
    ],
)
def test_usage_errors_exit_2_before_any_work(repo, tmp_path, args, message):
    proc = launch(repo, tmp_path, *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not (repo / "runs").exists() and not (repo / "pip.log").exists()


def test_a_workdir_is_read_where_the_user_runs_from(repo, tmp_path):
    """`bash ~/myna/launch.sh probe myrun` from ~/work means ~/work/myrun, not ~/myna/myrun;
    one that is not there is the repository's (runs/x written by `launch.sh train`)."""
    here = tmp_path / "elsewhere"
    (here / "myrun").mkdir(parents=True)
    proc = launch(repo, here, "probe", "myrun", "--tasks", "demo")
    assert proc.returncode == 1, proc.stderr
    assert f"{here / 'myrun'} is not a training workdir" in proc.stderr
    proc = launch(repo, here, "probe", "runs/none", "--tasks", "demo")
    assert f"{repo / 'runs/none'} is not a training workdir" in proc.stderr


def test_a_config_is_read_where_the_user_runs_from_else_from_the_repository(repo, tmp_path):
    here = tmp_path / "elsewhere"
    (here / "configs").mkdir(parents=True)
    (here / "configs" / "mine.py").write_text("def get_config(:\n")  # names which file is read
    proc = launch(repo, here, "train", "configs/mine.py")
    assert proc.returncode == 2
    assert f"--config={here / 'configs/mine.py'}: line 1: invalid syntax" in proc.stderr
    proc = launch(repo, here, "train", "configs/nope.py")
    assert f"--config={repo / 'configs/nope.py'}: cannot load" in proc.stderr
    assert not (repo / "runs").exists()


def test_a_setup_cut_short_is_finished_on_the_next_run(repo, tmp_path):
    """A .venv with python but no finished install (Ctrl-C during pip) installs again, and
    so does one installed for another pyproject.toml; a finished one does not."""
    (repo / ".venv" / ".installed").unlink()
    proc = launch(repo, tmp_path, "probe")  # a usage error, after the setup
    assert "setting up .venv" in proc.stdout and proc.returncode == 2
    assert (repo / "pip.log").read_text() == "-m pip install -q -e .[test]\n"
    launch(repo, tmp_path, "probe")
    assert (repo / "pip.log").read_text().count("install") == 1  # installed: not again
    with open(repo / "pyproject.toml", "a") as f:
        f.write("\n# a new dependency\n")
    assert "setting up .venv" in launch(repo, tmp_path, "probe").stdout
    assert (repo / "pip.log").read_text().count("install") == 2

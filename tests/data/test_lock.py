"""The build lock: the module alone, then real processes building the demo set at once, one
of them killed half way."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from myna_rpe_jax.data import locations
from myna_rpe_jax.data.lock import build_lock, lock_path, read_holder

REPO = Path(__file__).resolve().parents[2]
HOST = socket.gethostname()
TINY_DEMO = (6, 2.0, 0)  # tracks, seconds, seed: 6 tracks fill train, valid and test

HOLD = """
import pathlib, sys, time
from myna_rpe_jax.data.lock import build_lock
path, release = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with build_lock(path):
    print("locked", flush=True)
    while not release.exists():
        time.sleep(0.02)
"""

BUILD = """
import hashlib, pathlib, sys, time
import numpy as np
from absl import logging
from myna_rpe_jax.data import datasets, locations
logging.set_verbosity(logging.INFO)
root, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
tracks, seconds, seed = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.01)
data_dir = locations.ensure_demo(root, tracks, seconds, seed, workers=1)
digest = hashlib.sha1()
for split in ("train", "valid", "test"):
    for example in datasets.open_split("demo", data_dir, split):
        digest.update(example["track_id"].encode())
        digest.update(np.ascontiguousarray(example["mel"]).tobytes())
print("digest", digest.hexdigest(), flush=True)
"""


def _python(code: str, *args, stderr=subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


@contextlib.contextmanager
def held_by_another_process(path: Path, tmp_path: Path):
    """A process that holds the build lock of `path` until the block ends (or it is killed)."""
    release = tmp_path / f"release-{path.name}"
    proc = _python(HOLD, path, release)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        release.touch()
        proc.wait(timeout=30)


def _wait_for(condition, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_the_holder_is_named_while_held_and_cleared_on_release(tmp_path):
    path = tmp_path / "sub" / "result"
    assert read_holder(path) == ""
    with build_lock(path):
        assert lock_path(path) == tmp_path / "sub" / "result.lock"
        assert read_holder(path) == f"pid {os.getpid()} ({HOST})"
    assert read_holder(path) == "" and lock_path(path).exists()  # never removed
    with build_lock(path):  # free again
        pass


def test_an_error_releases_cleanly_and_an_interrupt_leaves_the_name(tmp_path, caplog):
    path = tmp_path / "result"
    with pytest.raises(ValueError), build_lock(path):  # a failed build that said why
        raise ValueError("no file decodes")
    assert read_holder(path) == ""
    with pytest.raises(KeyboardInterrupt), build_lock(path):  # Ctrl-C: stopped half way
        raise KeyboardInterrupt
    assert read_holder(path) == f"pid {os.getpid()} ({HOST})"
    assert "taking over" not in caplog.text
    with build_lock(path):
        pass
    assert f"taking over {path} from pid {os.getpid()} ({HOST})" in caplog.text


def test_a_second_process_waits_saying_for_whom_once(tmp_path, caplog):
    path = tmp_path / "result"
    acquired = threading.Event()

    def take() -> None:
        with build_lock(path):
            acquired.set()

    with held_by_another_process(path, tmp_path) as holder:
        waiter = threading.Thread(target=take)
        waiter.start()
        expected = f"waiting for {path}, being prepared by pid {holder.pid} ({HOST})"
        _wait_for(lambda: expected in caplog.text, 10, "the waiting message")
        time.sleep(0.5)  # several polls
        assert not acquired.is_set()
        assert caplog.text.count("waiting for") == 1
    waiter.join(timeout=10)
    assert acquired.is_set() and "taking over" not in caplog.text


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, caplog):
    path = tmp_path / "result"
    with held_by_another_process(path, tmp_path) as holder:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        start = time.monotonic()
        with build_lock(path):
            assert read_holder(path) == f"pid {os.getpid()} ({HOST})"
        assert time.monotonic() - start < 2
    assert f"taking over {path} from pid {holder.pid} ({HOST})" in caplog.text
    assert "waiting for" not in caplog.text


def _builder(root: Path, go: Path, log: Path) -> subprocess.Popen:
    """A process that builds (or waits for) the tiny demo set in root once `go` exists;
    its stderr goes to `log`."""
    with open(log, "w") as stderr:
        return _python(BUILD, root, go, *TINY_DEMO, stderr=stderr)


def _digest(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    [line] = [line for line in out.splitlines() if line.startswith("digest ")]
    return line.split()[1]


def _demo_dir(root: Path) -> Path:
    return locations.demo_data_dir(root, *TINY_DEMO)


@pytest.fixture(scope="module")
def clean_build(tmp_path_factory):
    """Two processes started together on an empty cache: (their digests, their stderr)."""
    root = tmp_path_factory.mktemp("together")
    go, logs = root.parent / "go-together", [root.parent / f"together-{i}.log" for i in (0, 1)]
    procs = [_builder(root, go, log) for log in logs]
    for proc in procs:  # both imported everything; now they race for the build
        assert proc.stdout.readline().strip() == "ready"
    go.touch()
    digests = [_digest(proc) for proc in procs]
    return digests, [log.read_text() for log in logs]


def test_two_processes_started_together_both_succeed_with_the_same_data(clean_build):
    (first, second), stderr = clean_build
    assert first == second
    assert sum("building the demo set" in text for text in stderr) == 1, stderr


def test_a_waiting_process_says_so_then_uses_the_finished_build(tmp_path, clean_build):
    root, go = tmp_path / "cache", tmp_path / "go"
    go.touch()
    log = tmp_path / "builder.log"
    with build_lock(_demo_dir(root)):
        proc = _builder(root, go, log)
        expected = f"being prepared by pid {os.getpid()} ({HOST})"
        _wait_for(lambda: expected in log.read_text(), 120, "the waiting message")
        assert f"waiting for {_demo_dir(root)}" in log.read_text()
        assert proc.poll() is None  # it waits
    assert _digest(proc) == clean_build[0][0]


@pytest.mark.parametrize("stage", ["generating", "preparing"])
def test_a_build_killed_half_way_is_redone_on_the_next_run(tmp_path, clean_build, stage):
    root, go = tmp_path / "cache", tmp_path / "go"
    go.touch()
    data_dir = _demo_dir(root)
    marker = {"generating": data_dir / "audio_source.partial", "preparing": data_dir / "_cache"}
    proc = _builder(root, go, tmp_path / "killed.log")
    _wait_for(lambda: marker[stage].exists() or proc.poll() is not None, 120, stage)
    assert read_holder(data_dir) == f"pid {proc.pid} ({HOST})"  # still building
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not locations.is_prepared("demo", data_dir)

    log = tmp_path / "rerun.log"
    assert _digest(_builder(root, go, log)) == clean_build[0][0]
    assert f"taking over {data_dir} from pid {proc.pid}" in log.read_text()
    assert not marker["generating"].exists() and not marker["preparing"].exists()
    assert not list((data_dir / "myna_demo").glob("*/incomplete.*"))

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from myna_rpe_jax import files


def test_the_file_appears_whole_and_nothing_else_is_left(tmp_path):
    path = tmp_path / "out" / "results.json"  # the folder is made
    with files.atomic_path(path) as partial:
        assert partial.parent == path.parent and partial.suffix == ".json"  # format by suffix
        assert partial != path
        partial.write_text("{}")
        assert not path.exists()  # only once the block ends
    assert path.read_text() == "{}"
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path):
    path = files.write_text(tmp_path / "results.md", "old")
    with pytest.raises(RuntimeError), files.atomic_path(path) as partial:
        partial.write_text("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"]


def test_a_reader_racing_two_writers_only_ever_sees_a_whole_file(tmp_path):
    """Two probes writing results.md into one --output while a third process reads it: with a
    plain write_text the reader caught truncated files in every one of 3 tries."""
    path = files.write_text(tmp_path / "results.md", "a" * 200_000)
    texts = ["a" * 200_000, "b" * 300_000]
    stop, seen, errors = threading.Event(), [], []

    def write(text):
        try:
            for _ in range(150):
                files.write_text(path, text)
        except Exception as err:  # reported below: an exception in a thread would be lost
            errors.append(err)

    def read():
        while not stop.is_set():
            seen.append(path.read_text())

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(text,)) for text in texts]
    reader.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join()
    assert not errors, errors
    assert seen and all(text in texts for text in seen), {len(text) for text in seen}
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"]


def test_output_problems_are_found_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_folder").mkdir()
    assert files.output_problem(tmp_path / "new" / "deeper" / "out.npz") is None
    assert files.output_problem(tmp_path / "a_folder", "folder") is None
    assert files.output_problem("", "folder") == "the path is empty; name the folder to write"
    assert files.output_problem(" ") == "the path is empty; name the file to write"
    assert "is a folder" in files.output_problem(tmp_path / "a_folder")
    assert "is a file" in files.output_problem(tmp_path / "a_file", "folder")
    problem = files.output_problem(tmp_path / "a_file" / "x" / "out.npz")
    assert (
        problem
        == f"cannot write {tmp_path}/a_file/x/out.npz: {tmp_path}/a_file is a file, not a folder"
    )


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_place_that_takes_no_new_files_is_found_before_any_work(tmp_path):
    """/proc refuses new entries even to root, who passes every permission check: the check
    tries a file there. It leaves nothing behind where writing works."""
    assert files.output_problem("/proc/x/out.npz") == (
        "cannot write /proc/x/out.npz: /proc takes no new files (No such file or directory);"
        " name a place you can write"
    )
    assert files.output_problem("/proc", "folder").startswith("cannot write into /proc (")
    assert files.output_problem(tmp_path, "folder") is None
    assert files.output_problem(tmp_path / "new" / "out.npz") is None
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_next_writer_deletes_what_a_killed_writer_left_and_nothing_else(tmp_path):
    """A writer killed outright (SIGKILL, out of memory) cannot delete its partial file; the
    next writer of the same path does, unless that writer still runs or is on another host."""
    path = tmp_path / "music.npz"
    host = files._host()
    dead = tmp_path / f"music.{host}-{_dead_pid()}-0123456789ab.partial.npz"
    running = tmp_path / f"music.{host}-{os.getpid()}-0123456789ab.partial.npz"
    elsewhere = tmp_path / f"music.other-host-{_dead_pid()}-0123456789ab.partial.npz"
    other_output = tmp_path / f"songs.{host}-{_dead_pid()}-0123456789ab.partial.npz"
    for leftover in (dead, running, elsewhere, other_output):
        leftover.write_bytes(b"half of a result")
    files.write_text(path, "whole")
    assert not dead.exists()
    assert running.exists() and elsewhere.exists() and other_output.exists()
    assert path.read_text() == "whole"


def test_a_partial_of_another_pid_namespace_with_this_hostname_is_kept(tmp_path):
    """Containers that share a hostname and a volume see none of each other's pids: the name
    of a partial says whose pids it counts in, and only this namespace's dead ones go."""
    unshared = subprocess.run(
        [
            "unshare",
            "--pid",
            "--fork",
            sys.executable,
            "-c",
            "from myna_rpe_jax import files\nprint(files._host())",
        ],
        capture_output=True,
        text=True,
    )
    if unshared.returncode != 0:
        pytest.skip(f"cannot make a pid namespace here: {unshared.stderr.strip()[-200:]}")
    other, host = unshared.stdout.strip(), files._host()
    assert other != host and other.rsplit("-", 1)[0] == host.rsplit("-", 1)[0]  # one hostname
    pid = _dead_pid()  # dead here, maybe alive there
    theirs = tmp_path / f"music.{other}-{pid}-0123456789ab.partial.npz"
    ours = tmp_path / f"music.{host}-{pid}-0123456789ab.partial.npz"
    theirs.write_bytes(b"half"), ours.write_bytes(b"half")
    assert files.sweep_dead_partials(tmp_path / "music.npz") == [ours]
    assert theirs.exists()


def test_a_killed_writer_process_leaves_a_partial_that_the_next_write_removes(tmp_path):
    """The real thing: a child writing through atomic_path, SIGKILLed mid-write."""
    path = tmp_path / "results.json"
    code = (
        "import sys, time; from myna_rpe_jax import files\n"
        f"with files.atomic_path({str(path)!r}) as tmp:\n"
        "    tmp.write_text('half'); print(tmp, flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    partial = Path(child.stdout.readline().strip())
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert partial.exists() and not path.exists()  # what SIGKILL leaves
    files.write_text(path, "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]

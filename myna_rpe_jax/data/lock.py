"""An exclusive build lock on a path, shared by every process that sees the same folder.

`build_lock(path)` holds `fcntl.flock` on `<path>.lock` while the result at `path` (a demo
set, a prepared dataset, a frame store) is built. The kernel drops the lock when its holder
exits, however it exits, so a lock left by a killed process (SIGKILL, the OOM killer) is
simply taken by the next one: nothing stale to detect or delete. The holder writes
"<pid> <host>" into the lock file and empties it on a clean release, so a waiter can say who
it waits for, and a next holder that finds the text still there knows the build before it was
killed (or interrupted) and says so. A block that raises an error releases cleanly too: the
error already said why that build stopped. The lock file itself is never removed: removing it
while another process waits on it would let a third one lock a new file of the same name.

The caller re-checks, inside the lock, whether the result is already complete (another
process may have built it while this one waited), and writes it so that a half-written
result never looks complete (a temporary name renamed into place, or a marker written last).
flock works between processes of one machine and, on Linux, over NFS (as a POSIX lock); the
hosts of a multi-host run coordinate with jax instead (process 0 builds, the others wait).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("myna_rpe_jax.lock")

LOCK_SUFFIX = ".lock"
_POLL_S = 0.1
# A holder writes its name right after locking; a waiter that finds the file empty (a build
# just starting) waits this long for the name before it says "another process".
_NAME_WAIT_S = 1.0


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of `path`: `<path>.lock` beside it."""
    path = Path(path)
    return path.with_name(path.name + LOCK_SUFFIX)


def read_holder(path: str | os.PathLike) -> str:
    """ "pid N (host)" of the process that holds (or, if it was killed, held) the lock of
    `path`; "" when no one does."""
    try:
        text = lock_path(path).read_text(encoding="utf-8").split()
    except OSError:
        return ""
    return f"pid {text[0]} ({text[1]})" if len(text) == 2 else ""


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait(fd: int, path: Path, doing: str) -> None:
    """Blocks until `fd` is locked, saying once whom it waits for."""
    said, start = False, time.monotonic()
    while not _try_lock(fd):
        holder = read_holder(path)
        if not said and (holder or time.monotonic() - start > _NAME_WAIT_S):
            log.warning("waiting for %s, %s by %s", path, doing, holder or "another process")
            said = True
        time.sleep(_POLL_S)


@contextlib.contextmanager
def build_lock(path: str | os.PathLike, doing: str = "being prepared") -> Iterator[None]:
    """Holds the exclusive build lock of `path` for the `with` block (waiting for it first).

    A waiter says "waiting for PATH, <doing> by pid N (host)". Creates the parent folder.
    Not re-entrant: a process that locks the same path twice waits for itself.
    """
    path = Path(path)
    file = lock_path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if not _try_lock(fd):
            _wait(fd, path, doing)
        previous = read_holder(path)
        if previous:
            log.warning("taking over %s from %s, which stopped before finishing", path, previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        try:
            yield
        except Exception:
            # A build that failed and says why (no file decodes, a full disk) is no stopped
            # build to take over; Ctrl-C (KeyboardInterrupt) and a kill still leave the name.
            os.ftruncate(fd, 0)
            raise
        os.ftruncate(fd, 0)  # a clean release: the next holder finds no one to take over from
    finally:
        os.close(fd)  # releases the lock

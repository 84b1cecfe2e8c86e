"""Writing a result file whole or not at all, whoever else writes the same path."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


@functools.cache
def _host() -> str:
    """Who can see this process's pid, as it can stand in a file name: the machine's name
    and, on Linux, a digest of this boot and this pid namespace. Two containers given one
    hostname on one shared volume cannot see each other's pids; the digest tells them apart,
    so that neither takes the other's running writer for dead."""
    name = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()) or "host"
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # not Linux: the hostname alone
        return name
    return f"{name}-{hashlib.sha256(f'{boot}/{namespace}'.encode()).hexdigest()[:8]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_dead_partials(path: str | Path) -> list[Path]:
    """Deletes the temporary files that writers of `path` on this machine left when they were
    killed outright (SIGKILL, out of memory, a power cut), which `atomic_path` cannot clean up
    itself: a killed embed of a large collection leaves a file as large as its result. A
    partial of a writer that is still running, or of another machine (a shared disk), is
    kept. Returns what was deleted."""
    path = Path(path)
    pattern = re.compile(
        rf"{re.escape(path.stem)}\.{re.escape(_host())}-(\d+)-[0-9a-f]+\.partial"
        rf"{re.escape(path.suffix)}"
    )
    swept = []
    for candidate in path.parent.iterdir():
        found = pattern.fullmatch(candidate.name)
        if found and not _alive(int(found.group(1))):
            candidate.unlink(missing_ok=True)
            swept.append(candidate)
    return swept


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block ends,
    deleted if it raises.

    A reader of `path` sees the old file or the new one, never half of one; a killed writer
    leaves no truncated result; two processes writing one path (two probes into one
    --output) cannot write into each other's file, and the last to finish wins, whole. The
    temporary name is unique and keeps the suffix
    (`results.<host>-<pid>-<id>.partial.png`), so writers that choose a format by extension
    (matplotlib, numpy) still do; the host and pid let the next writer of the path delete
    what a writer killed outright left (`sweep_dead_partials`).

        with atomic_path(out / "results.json") as tmp:
            tmp.write_text(text)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_dead_partials(path)
    unique = f"{_host()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    partial = path.with_name(f"{path.stem}.{unique}.partial{path.suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """`Path(path).write_text(text)` (UTF-8), through `atomic_path`."""
    with atomic_path(path) as partial:
        partial.write_text(text, encoding="utf-8")
    return Path(path)


def output_problem(path: str | Path, kind: str = "file") -> str | None:
    """Why `path` cannot be written as an output `kind` ("file" or "folder"), or None: it
    exists as the other kind, one of its parents is a file, or the folder that would take
    the output's first new entry refuses one (read-only, not yours, or /proc). Checked before
    the work, so that a long job does not end on `[Errno 17] File exists`."""
    if not str(path).strip():  # Path("") is the current folder: never what was meant
        return f"the path is empty; name the {kind} to write"
    path = Path(path)
    if kind == "file" and path.is_dir():
        return f"{path} is a folder; name the file to write"
    if kind == "folder" and path.exists() and not path.is_dir():
        return f"{path} is a file; name a folder to write into"
    # The folder that would take the first new entry: the output folder itself, else the
    # nearest existing parent.
    host = path if kind == "folder" and path.is_dir() else None
    if host is None:
        host = next((parent for parent in path.parents if parent.exists()), None)
        if host is not None and not host.is_dir():
            return f"cannot write {path}: {host} is a file, not a folder"
    if host is not None and (refusal := _refuses_new_files(host)):
        where = f"into {path}" if host == path else f"{path}: {host} takes no new files"
        return f"cannot write {where} ({refusal}); name a place you can write"
    return None


def _refuses_new_files(folder: Path) -> str | None:
    """Why a new file cannot be made in `folder` (the OS's reason), or None. Tried, not
    inferred from permissions: root passes every permission check yet cannot write /proc or
    a read-only mount."""
    try:
        handle, name = tempfile.mkstemp(dir=folder, prefix=".write-check-")
    except OSError as error:
        return error.strerror or str(error)
    os.close(handle)
    os.unlink(name)
    return None


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether `a` and `b` name one file: the same path once resolved, or (both existing)
    one file reached by two names (a link, a bind mount, a case-insensitive disk)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def overwrite_problem(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> str | None:
    """`--out: why` when an output flag names the file an input flag reads, or None. The
    result is renamed onto its path only after the input was read, so no error would ever
    tell; the input would simply be gone."""
    for out_flag, out_path in outputs.items():
        for in_flag, in_path in inputs.items():
            if out_path and in_path and os.path.isfile(in_path) and same_file(out_path, in_path):
                return (
                    f"{out_flag} {out_path} is the {in_flag} file: writing it would replace the"
                    f" input; name another {out_flag}"
                )
    return None

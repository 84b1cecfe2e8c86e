"""Writing a result file whole or not at all, whoever else writes the same path."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block ends,
    deleted if it raises.

    A reader of `path` sees the old file or the new one, never half of one; a killed writer
    leaves no truncated result; two processes writing one path (two probes into one
    --output) cannot write into each other's file, and the last to finish wins, whole. The
    temporary name is unique and keeps the suffix (`results.<id>.partial.png`), so writers
    that choose a format by extension (matplotlib, numpy) still do.

        with atomic_path(out / "results.json") as tmp:
            tmp.write_text(text)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{uuid.uuid4().hex[:12]}.partial{path.suffix}")
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
    exists as the other kind, or one of its parents is a file. Checked before the work, so
    that a long job does not end on `[Errno 17] File exists`."""
    path = Path(path)
    if kind == "file" and path.is_dir():
        return f"{path} is a folder; name the file to write"
    if kind == "folder" and path.exists() and not path.is_dir():
        return f"{path} is a file; name a folder to write into"
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"cannot write {path}: {parent} is a file, not a folder"
            break
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

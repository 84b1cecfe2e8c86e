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

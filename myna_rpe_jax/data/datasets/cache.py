"""Stage 1 of a build: decode + log-mel of every track, cached one file per track.

Each result is written under a temporary name and renamed into place (os.replace is atomic),
so a killed build leaves finished tracks whole and never a half-written file under a final
name; a re-run reuses them. Cache names hash the file's absolute path, size and mtime, so a
replaced or edited file is decoded again. Failures (AudioError) are cached too, with their
reason, so a re-run does not retry a file known to be bad. Any other exception while decoding
(MemoryError, a library bug) is not the file's fault: it is not cached, and `check_unexpected`
stops the build so that no track silently goes missing from a split. A failure to write the
cache (a full disk) stops the build at once.

Workers are separate processes started with "spawn": forking a process that has loaded
TensorFlow or JAX threads can deadlock. A worker that dies (a decoder crash, the OOM killer)
breaks the whole pool; the tracks it was working on are then retried one per fresh process,
so only the file that kills its process is skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tqdm
from threadpoolctl import threadpool_limits

from myna_rpe_jax.data.audio import AudioError, MelConfig, audio_to_mel, install_plans, mel_plans

MEL_SUFFIX, ERROR_SUFFIX, TMP_SUFFIX = ".npz", ".err", ".tmp"
CRASH_REASON = "the decoding process crashed on this file (decoder crash or out of memory)"
MelFn = Callable[[str, MelConfig, float], tuple[np.ndarray, float]]


@dataclasses.dataclass(frozen=True)
class MelEntry:
    """The cached outcome for one file: ok with the .npz path, or the reason it failed.

    unexpected: it failed for a reason that is not the file's (not cached, retried next run).
    """

    ok: bool
    file: str = ""
    reason: str = ""
    unexpected: bool = False


def cache_key(path: Path) -> str:
    """A file name for `path`'s cache entry: hash of (absolute path, size, mtime) + stem."""
    stat = path.stat()
    identity = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha1(identity.encode("utf-8")).hexdigest()[:20]
    return f"{digest}-{re.sub(r'[^A-Za-z0-9_-]+', '_', path.stem)[:40]}"


def read_entry(cache_dir: Path, key: str) -> MelEntry | None:
    """The cached entry for `key`, or None when the file has not been processed yet."""
    mel_file = cache_dir / f"{key}{MEL_SUFFIX}"
    if mel_file.is_file():
        return MelEntry(True, str(mel_file))
    error_file = cache_dir / f"{key}{ERROR_SUFFIX}"
    if error_file.is_file():
        return MelEntry(False, reason=error_file.read_text(encoding="utf-8"))
    return None


def load_mel(file: str | Path) -> tuple[np.ndarray, float]:
    """(mel float16 [n_mels, frames], duration in seconds) from a cache .npz."""
    with np.load(file) as data:
        return data["mel"], float(data["duration_s"])


def _write_atomic(final: Path, write: Callable[[BinaryIO], object]) -> None:
    tmp = final.with_name(f"{final.name}.{os.getpid()}{TMP_SUFFIX}")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, final)


def _cache_error(cache_dir: Path, key: str, reason: str) -> MelEntry:
    _write_atomic(cache_dir / f"{key}{ERROR_SUFFIX}", lambda f: f.write(reason.encode("utf-8")))
    return MelEntry(False, reason=reason)


def compute_entry(
    path: str, key: str, *, cache_dir: str, mel: MelConfig, min_seconds: float, mel_fn: MelFn
) -> MelEntry:
    """Decodes one file into the cache and returns its entry; never raises for bad input."""
    try:
        spectrogram, duration = mel_fn(path, mel, min_seconds)
    except AudioError as err:
        return _cache_error(Path(cache_dir), key, err.reason)
    except Exception as err:  # not a property of the file (a bug, a full disk): retry next run
        return MelEntry(False, reason=f"unexpected {type(err).__name__}: {err}", unexpected=True)
    final = Path(cache_dir) / f"{key}{MEL_SUFFIX}"
    _write_atomic(final, lambda f: np.savez(f, mel=spectrogram, duration_s=np.float64(duration)))
    return MelEntry(True, str(final))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a SLURM or container limit):
    the default number of decoding workers."""
    if hasattr(os, "sched_getaffinity"):  # Linux
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_BLAS_LIMIT = []  # keeps a worker's threadpool limit alive for the life of the process


def _one_blas_thread() -> None:
    """One BLAS/OpenMP thread per decoding process: a track's log-mel matmuls are small, and
    threads cost more than they save (48 clips of 30 s on 2 cores: 4.2 s with numpy's default
    threads, 3.2 s with one), and worker processes already use every core."""
    _BLAS_LIMIT.append(threadpool_limits(limits=1))


def _start_worker(plans: dict) -> None:
    """A decoding process: one BLAS thread, and the parent's mel filterbanks, so it does not
    import librosa's filters to build them again (audio.mel_plans)."""
    _one_blas_thread()
    install_plans(plans)


def _pool_pass(queue: deque, workers: int, job: Callable, record: Callable, plans: dict) -> list:
    """Runs queued (key, path) jobs until the queue is empty or a worker dies.

    Returns the jobs that were unfinished when the pool broke (empty if it did not).
    """
    context = multiprocessing.get_context("spawn")
    start = dict(mp_context=context, initializer=_start_worker, initargs=(plans,))
    with ProcessPoolExecutor(workers, **start) as pool:
        running = {}
        while queue or running:
            # A short queue per worker keeps the set to retry after a crash small.
            while queue and len(running) < 2 * workers:
                key, path = queue.popleft()
                running[pool.submit(job, path, key)] = (key, path)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                key, path = running.pop(future)
                try:
                    record(key, future.result())
                except BrokenProcessPool:
                    return [(key, path), *running.values()]
    return []


def _run_pool(
    jobs: list, workers: int, job: Callable, cache_dir: Path, record: Callable, plans: dict
) -> None:
    queue = deque(jobs)
    while queue:
        for key, path in _pool_pass(queue, workers, job, record, plans):
            entry = read_entry(cache_dir, key)
            if entry is not None:
                record(key, entry)
            elif _pool_pass(deque([(key, path)]), 1, job, record, plans):
                record(key, _cache_error(cache_dir, key, CRASH_REASON))


def _unreadable_reason(err: OSError) -> str:
    """The reason of a file that cannot even be looked at (its cache key needs a stat)."""
    if isinstance(err, FileNotFoundError):
        return "file does not exist"
    return f"cannot read: {err.strerror or err}"


def ensure_mels(
    paths: Sequence[Path],
    cache_dir: Path,
    mel: MelConfig,
    min_seconds: float,
    *,
    workers: int = 1,
    progress: bool = False,
    desc: str = "log-mel",
    mel_fn: MelFn = audio_to_mel,
) -> list[MelEntry]:
    """One MelEntry per path (same order): cached ones read, the others computed and cached.

    workers <= 1 computes in this process; more uses that many spawned processes.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stray in cache_dir.glob(f"*{TMP_SUFFIX}"):  # left by a killed run; never read
        stray.unlink(missing_ok=True)
    entries: dict[str, MelEntry] = {}
    keys, todo = [], {}
    for path in paths:
        try:
            key = cache_key(path)
        except OSError as err:
            key = f"unreadable:{path}"
            entries[key] = MelEntry(False, reason=_unreadable_reason(err))
        keys.append(key)
        if key not in entries and key not in todo:
            cached = read_entry(cache_dir, key)
            if cached is None:
                todo[key] = str(path)
            else:
                entries[key] = cached
    job = functools.partial(
        compute_entry, cache_dir=str(cache_dir), mel=mel, min_seconds=min_seconds, mel_fn=mel_fn
    )
    with tqdm.tqdm(total=len(todo), desc=desc, unit="track", disable=not progress) as bar:

        def record(key: str, entry: MelEntry) -> None:
            entries[key] = entry
            bar.update(1)

        if workers <= 1:
            with threadpool_limits(limits=1):  # see `_one_blas_thread`
                for key, path in todo.items():
                    record(key, job(path, key))
        else:
            _run_pool(list(todo.items()), workers, job, cache_dir, record, mel_plans([mel]))
    return [entries[key] for key in keys]


class UnexpectedDecodeError(RuntimeError):
    """Tracks failed for reasons that are not the files' own: the build must not go on."""


def check_unexpected(paths: Sequence[Path], entries: Sequence[MelEntry]) -> None:
    """Raises UnexpectedDecodeError listing the tracks whose entries are `unexpected`."""
    failed = [(path, e.reason) for path, e in zip(paths, entries, strict=True) if e.unexpected]
    if failed:
        listed = "\n".join(f"  {path}: {reason}" for path, reason in failed[:10])
        more = f"\n  ... and {len(failed) - 10} more" if len(failed) > 10 else ""
        raise UnexpectedDecodeError(
            f"{len(failed)} track(s) failed for a reason that is not a bad file, so the"
            f" dataset was not written (it would silently lack them):\n{listed}{more}\n"
            "Fix the cause (memory, disk space, a library bug) and run the build again: the"
            " tracks decoded so far are cached and not decoded again."
        )

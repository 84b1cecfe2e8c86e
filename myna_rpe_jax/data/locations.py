"""Where prepared data lives: the cache folder, the demo set (built on demand), a run's data_dir."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import jax
import ml_collections
from absl import logging

from myna_rpe_jax import failures
from myna_rpe_jax.data import datasets
from myna_rpe_jax.data.demo import music
from myna_rpe_jax.data.lock import build_lock

CACHE_ENV = "MYNA_RPE_CACHE"


def cache_dir() -> Path:
    """$MYNA_RPE_CACHE, else ~/.cache/myna_rpe_jax."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "myna_rpe_jax")


def is_prepared(name: str, data_dir: Path) -> bool:
    try:
        datasets.prepared_dir(name, data_dir)
    except datasets.DatasetNotPreparedError:
        return False
    return True


def demo_data_dir(root: Path, tracks: int, seconds: float, seed: int) -> Path:
    """One prepared demo set per (tracks, seconds, seed), so configs never share a wrong size."""
    return root / f"demo-{tracks}x{seconds:g}s-seed{seed}"


def ensure_demo(root: Path, tracks: int, seconds: float, seed: int, workers: int = 2) -> Path:
    """Generates and prepares the demo set under `root` unless it is already there.

    Returns the data_dir to open it from. Processes sharing `root` build it once: the first
    holds its build lock (lock.py), the others wait, then find it prepared. In a multi-host
    run process 0 builds it while the others wait; a host whose `root` is not shared with
    process 0 (a local disk) then finds none and builds its own, the same tracks (the demo
    is a function of its seed). A build that fails on one host stops them all.
    """
    data_dir = demo_data_dir(root, tracks, seconds, seed)
    with failures.all_or_none("building the demo set on process 0"):
        if jax.process_index() == 0:
            _build_unless_prepared(data_dir, tracks, seconds, seed, workers)
    if jax.process_count() > 1:
        with failures.all_or_none("building the demo set on hosts that do not see it"):
            _build_unless_prepared(data_dir, tracks, seconds, seed, workers)
    return data_dir


def _build_unless_prepared(
    data_dir: Path, tracks: int, seconds: float, seed: int, workers: int
) -> None:
    if not is_prepared("demo", data_dir):
        with build_lock(data_dir):
            if not is_prepared("demo", data_dir):  # or another process built it meanwhile
                _build_demo(data_dir, tracks, seconds, seed, workers)


def _build_demo(data_dir: Path, tracks: int, seconds: float, seed: int, workers: int) -> None:
    logging.info("building the demo set (%d tracks x %g s) in %s", tracks, seconds, data_dir)
    audio_dir = data_dir / "audio_source"
    # metadata.csv is written last, and the folder is renamed into place only when whole:
    # audio left by a killed generation is never prepared.
    if not (audio_dir / "metadata.csv").is_file():
        partial = data_dir / "audio_source.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(audio_dir, ignore_errors=True)
        music.generate_demo(partial, num_tracks=tracks, seconds=seconds, seed=seed)
        os.replace(partial, audio_dir)
    datasets.prepare("demo", audio_dir, data_dir, workers=workers)


def data_root(data: ml_collections.ConfigDict) -> Path:
    """`data.data_dir`, or the cache folder when it is empty."""
    return Path(data.data_dir) if data.data_dir else cache_dir()


def run_demo_dir(data: ml_collections.ConfigDict, *, build: bool = False) -> Path:
    """The data_dir of the run's demo set (`data.demo_*`); generated and prepared if `build`."""
    args = (data_root(data), data.demo_tracks, data.demo_seconds, data.demo_seed)
    return ensure_demo(*args) if build else demo_data_dir(*args)


def training_dir(data: ml_collections.ConfigDict, *, build: bool = False) -> Path:
    """The data_dir the run's training data is prepared in (the demo is built if `build`)."""
    return run_demo_dir(data, build=build) if data.dataset == "demo" else data_root(data)

"""Where prepared data lives: the cache folder, the demo set (built on demand), a run's data_dir."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import ml_collections
from absl import logging
from jax.experimental import multihost_utils

from myna_rpe_jax.data import datasets
from myna_rpe_jax.data.demo import music

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

    Returns the data_dir to open it from. In a multi-process run process 0 builds it while the
    others wait.
    """
    data_dir = demo_data_dir(root, tracks, seconds, seed)
    if jax.process_index() == 0 and not is_prepared("demo", data_dir):
        logging.info("building the demo set (%d tracks x %g s) in %s", tracks, seconds, data_dir)
        audio_dir = data_dir / "audio_source"
        music.generate_demo(audio_dir, num_tracks=tracks, seconds=seconds, seed=seed)
        datasets.prepare("demo", audio_dir, data_dir, workers=workers)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("demo dataset ready")
    return data_dir


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

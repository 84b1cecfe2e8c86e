"""Where the training tracks come from: a prepared dataset, or the demo set built on demand."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import ml_collections
from absl import logging
from jax.experimental import multihost_utils

from myna_rpe_jax import datasets, demo_music

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
        demo_music.generate_demo(audio_dir, num_tracks=tracks, seconds=seconds, seed=seed)
        datasets.prepare("demo", audio_dir, data_dir, workers=workers)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("demo dataset ready")
    return data_dir


def open_training_split(data: ml_collections.ConfigDict):
    """The random-access source of `data.split` of `data.dataset` (see `datasets.open_split`)."""
    root = Path(data.data_dir) if data.data_dir else cache_dir()
    if data.dataset == "demo":
        data_dir = ensure_demo(root, data.demo_tracks, data.demo_seconds, data.demo_seed)
    else:
        data_dir = root
    return datasets.open_split(data.dataset, data_dir, data.split)

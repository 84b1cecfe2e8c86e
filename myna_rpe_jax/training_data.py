"""Where the training tracks come from: a prepared dataset, or the demo set built on demand."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from myna_rpe_jax import datasets, demo_music, frame_store

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


def training_splits(data: ml_collections.ConfigDict) -> list[str]:
    """`data.split` as a list: "train", or several joined with "+" ("train+valid+test")."""
    from myna_rpe_jax.datasets.common import canonical_split

    splits = [canonical_split(part.strip()) for part in data.split.split("+")]
    if not all(splits) or len(set(splits)) != len(splits):
        raise ValueError(
            f"config.data.split={data.split!r}: name each split once, joined with '+'"
            " (e.g. 'train' or 'train+valid+test')"
        )
    return splits


def open_training_split(data: ml_collections.ConfigDict):
    """Random access to the training tracks: `data.split` of `data.dataset` (several splits
    joined with "+" are concatenated in that order).

    With `data.frame_store` (the default) a `FrameStore`: the splits copied once into one
    memory-mapped file, so a step reads only its chunks. Otherwise the tfds records, read
    whole. In a multi-process run process 0 copies first while the others wait; then each
    process opens the copy, or makes its own where its data_dir is not on shared storage.
    """
    splits = training_splits(data)
    data_dir = training_dir(data, build=True)
    if data.frame_store:
        if jax.process_index() == 0:
            frame_store.open_frame_store(data.dataset, data_dir, splits)  # copies if needed
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("frame store ready")
        return frame_store.open_frame_store(data.dataset, data_dir, splits)
    sources = [datasets.open_split(data.dataset, data_dir, split) for split in splits]
    return sources[0] if len(sources) == 1 else ConcatSource(sources)


class ConcatSource(Sequence):
    """Several dataset splits read as one: index i runs through them in order."""

    def __init__(self, sources: Sequence[Sequence]):
        self.sources = list(sources)
        self._ends = np.cumsum([len(source) for source in self.sources])

    def __len__(self) -> int:
        return int(self._ends[-1])

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} tracks")
        part = int(np.searchsorted(self._ends, index, side="right"))
        start = int(self._ends[part - 1]) if part else 0
        return self.sources[part][index - start]

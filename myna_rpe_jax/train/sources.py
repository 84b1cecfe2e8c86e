"""The training tracks of a run: its splits, as a frame store or as tfds records."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from myna_rpe_jax.data import datasets
from myna_rpe_jax.data.locations import training_dir
from myna_rpe_jax.train import frame_store


def training_splits(data: ml_collections.ConfigDict) -> list[str]:
    """`data.split` as a list: "train", or several joined with "+" ("train+valid+test")."""
    from myna_rpe_jax.data.datasets.common import canonical_split

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

"""The training tracks of a run: its splits, as a frame store or as tfds records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from myna_rpe_jax import failures
from myna_rpe_jax.data import datasets
from myna_rpe_jax.data.locations import training_dir
from myna_rpe_jax.errors import UserError
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
    process opens the copy, or makes its own where its data_dir is not on shared storage,
    and all check that they read the same tracks (`check_same_tracks`). A step that fails
    on one process stops them all (`failures.all_or_none`).
    """
    splits = training_splits(data)
    data_dir = training_dir(data, build=True)
    with failures.all_or_none("copying the training split into the frame store"):
        if data.frame_store and jax.process_index() == 0:
            frame_store.open_frame_store(data.dataset, data_dir, splits)  # copies if needed
    with failures.all_or_none("opening the training split"):
        if data.frame_store:
            source = frame_store.open_frame_store(data.dataset, data_dir, splits)
        else:
            parts = [datasets.open_split(data.dataset, data_dir, split) for split in splits]
            source = parts[0] if len(parts) == 1 else ConcatSource(parts)
    if jax.process_count() > 1:
        check_same_tracks(source, f"{data.dataset} {'+'.join(splits)} in {data_dir}")
    return source


def fingerprint(source) -> tuple[int, bytes]:
    """(number of tracks, SHA-1 digest of their identity): a frame store's track ids and
    lengths; a tfds split's size and shard lengths, as tfds recorded them. Cheap (no mel is
    read), and equal for the same prepared tracks on any host, wherever it is mounted."""
    digest = hashlib.sha1()
    if isinstance(source, frame_store.FrameStore):
        digest.update(np.asarray([source.num_frames(i) for i in range(len(source))]).tobytes())
        digest.update("\n".join(source.track_ids).encode())
    elif isinstance(source, ConcatSource):
        for part in source.sources:
            digest.update(fingerprint(part)[1])
    else:
        split = tfds.builder_from_directory(str(source.path)).info.splits[source.split]
        digest.update(json.dumps([source.name, source.split, split.num_bytes]).encode())
        digest.update(np.asarray(split.shard_lengths, np.int64).tobytes())
    return len(source), digest.digest()


def check_same_tracks(source, where: str) -> None:
    """Raises UserError on every process unless all processes read the same tracks.

    A host with its own data_dir (not shared storage) and a dataset prepared differently, or
    launched with another config.data, would otherwise train on batches that do not match
    the other hosts' indices, silently."""
    count, digest = fingerprint(source)
    row = np.concatenate(
        [np.asarray([count], np.int64).view(np.uint8), np.frombuffer(digest, np.uint8)]
    )
    rows = np.asarray(multihost_utils.process_allgather(row))  # [processes, 8 + 20]
    message = tracks_mismatch(rows)
    if message:
        raise failures.raised_everywhere(
            UserError(
                f"the processes do not read the same training data ({message}); this process"
                f" ({jax.process_index()}) reads {where}. Give every host the same config.data"
                " and the same prepared dataset: a data_dir on storage all hosts share, or"
                " prepared from the same source with the same flags on each."
            )
        )


def tracks_mismatch(rows: np.ndarray) -> str:
    """'' when every process's fingerprint row [8 + 20 uint8] equals process 0's, else which
    processes differ and their track counts (rows [processes, 28] as `check_same_tracks`
    gathers them)."""
    differ = [i for i in range(len(rows)) if not np.array_equal(rows[i], rows[0])]
    if not differ:
        return ""
    counts = rows[:, :8].copy().view(np.int64)[:, 0]
    same_count = lambda i: ", but not the same ones" if counts[i] == counts[0] else ""  # noqa: E731
    return "; ".join(
        [f"process 0: {counts[0]} tracks"]
        + [f"process {i}: {counts[i]} tracks{same_count(i)}" for i in differ]
    )


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

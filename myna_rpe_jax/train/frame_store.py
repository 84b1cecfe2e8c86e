"""Training reads: every track's mel in one memory-mapped file, so a chunk is one small read.

A tfds record holds a whole track, and reading one means reading all of it: for two 2.56 s
chunks of a full MTG-Jamendo track (~5.7 MB of mel) that is ~40x the bytes used, per track,
per step. The frame store copies the training split(s) once into

    <data_dir>/_frames/myna_<name>/<config>/<version>/<split[+split...]>/
        mels.f16     float16 [total_frames, n_mels], the tracks one after another, time-major
                     so a chunk is one contiguous read (256 frames x 128 mels = 64 KB)
        index.npz    offsets int64 [N + 1] (track i = rows offsets[i]:offsets[i + 1]),
                     track_ids str [N]
        meta.json    what it was copied from (dataset, splits, and the name, size and mtime of
                     every file of the prepared dataset), checked on open: a rebuilt dataset
                     means a new copy

It is written under `<name>.partial` and renamed when complete, so a killed copy is never
used; processes sharing data_dir copy it once (lock.py: the others wait, then open it).
Track i is example i of the splits in the order given, so dataset indices (the per-example
SogCLR state) are the same as reading the splits directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tqdm

from myna_rpe_jax.data.lock import build_lock

log = logging.getLogger("myna_rpe_jax.frame_store")

FOLDER = "_frames"
VERSION = 1
_READ_BATCH = 32  # records per tfds read while copying


class FrameStore(Sequence):
    """Random access to the tracks of a frame store (see the module docstring).

    len(store); store.num_frames(i); store.read(i, start, length) -> [n_mels, length]
    float16; store[i] -> dict(mel=[n_mels, T] float16, track_id=str), as a dataset split.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text(encoding="utf-8"))
        with np.load(self.path / "index.npz") as index:
            self._offsets = index["offsets"]
            self.track_ids = [str(t) for t in index["track_ids"]]
        self.n_mels = int(self.meta["n_mels"])
        shape = (int(self._offsets[-1]), self.n_mels)
        self._mels = np.memmap(self.path / "mels.f16", np.float16, "r", shape=shape)

    def __len__(self) -> int:
        return len(self.track_ids)

    def num_frames(self, index: int) -> int:
        return int(self._offsets[index + 1] - self._offsets[index])

    def read(self, index: int, start: int, length: int) -> np.ndarray:
        """Frames [start, start + length) of track `index`: [n_mels, length] float16."""
        frames = self.num_frames(index)
        if not (start >= 0 and length >= 0 and start + length <= frames):
            raise IndexError(
                f"frames [{start}, {start + length}) are outside track {index}"
                f" ({self.track_ids[index]}, {frames} frames) of {self.path}"
            )
        first = int(self._offsets[index]) + start
        return np.ascontiguousarray(self._mels[first : first + length].T)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} tracks in {self.path}")
        index %= len(self)
        return {
            "mel": self.read(index, 0, self.num_frames(index)),
            "track_id": self.track_ids[index],
        }

    def __repr__(self) -> str:
        return f"FrameStore({len(self)} tracks, {self._offsets[-1]} frames, {self.path})"


def store_dir(data_dir: str | Path, prepared: Path, splits: Sequence[str]) -> Path:
    """Where the frame store of `splits` of the dataset prepared in `prepared` lives.

    prepared is <data_dir>/myna_<name>/<config>/<version>; its last three parts are reused
    as they are (not resolved), so "~" and symlinked dataset folders work.
    """
    return Path(data_dir).expanduser() / FOLDER / Path(*prepared.parts[-3:]) / "+".join(splits)


def source_identity(name: str, prepared: Path, splits: Sequence[str]) -> dict:
    """What a frame store is a copy of; a store whose meta differs is out of date.

    The name, size and mtime of every file of the prepared dataset: a rebuild rewrites them
    even when dataset_info.json comes out the same. No absolute path, so hosts that mount
    the data at different places agree.
    """
    files = sorted(path for path in prepared.iterdir() if path.is_file())
    listing = "\n".join(f"{p.name} {p.stat().st_size} {p.stat().st_mtime_ns}" for p in files)
    return {
        "version": VERSION,
        "dataset": name,
        "splits": list(splits),
        "files_sha1": hashlib.sha1(listing.encode()).hexdigest(),
    }


def is_current(path: Path, identity: dict) -> bool:
    """Whether `path` holds a complete frame store of exactly `identity`."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return {key: meta.get(key) for key in identity} == identity


def write_store(
    sources: Sequence, path: Path, identity: dict, n_mels: int, progress: bool = True
) -> FrameStore:
    """Copies every track of `sources` (dataset splits, in order) into a frame store at path."""
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by a killed copy
    partial.mkdir(parents=True)
    offsets, track_ids = [0], []
    total = sum(len(source) for source in sources)
    with (
        open(partial / "mels.f16", "wb") as out,
        tqdm.tqdm(total=total, desc="frame store", unit="track", disable=not progress) as bar,
    ):
        for source in sources:
            for start in range(0, len(source), _READ_BATCH):
                indices = range(start, min(start + _READ_BATCH, len(source)))
                for example in source.__getitems__(indices):
                    mel = np.asarray(example["mel"], np.float16)
                    if mel.ndim != 2 or mel.shape[0] != n_mels:
                        raise ValueError(
                            f"{example['track_id']} in {source!r}: mel of shape {mel.shape},"
                            f" expected [{n_mels}, frames]"
                        )
                    out.write(np.ascontiguousarray(mel.T).tobytes())
                    offsets.append(offsets[-1] + mel.shape[1])
                    track_ids.append(example["track_id"])
                bar.update(len(indices))
    np.savez(partial / "index.npz", offsets=np.asarray(offsets, np.int64), track_ids=track_ids)
    meta = {**identity, "n_mels": n_mels, "num_tracks": len(track_ids), "frames": offsets[-1]}
    (partial / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    shutil.rmtree(path, ignore_errors=True)  # an out-of-date copy
    partial.rename(path)
    return FrameStore(path)


def open_frame_store(
    name: str, data_dir: str | Path, splits: Sequence[str], *, build: bool = True, progress=True
) -> FrameStore:
    """The frame store of `splits` of prepared dataset `name`, copied first when missing or
    out of date (if `build`; otherwise that is a FileNotFoundError)."""
    from myna_rpe_jax.data import datasets  # TensorFlow Datasets, only when a dataset is read

    prepared = datasets.prepared_dir(name, data_dir)
    path = store_dir(data_dir, prepared, splits)
    identity = source_identity(name, prepared, splits)
    if is_current(path, identity):
        return FrameStore(path)
    if not build:
        raise FileNotFoundError(f"no up-to-date frame store of {name} {splits} at {path}")
    with build_lock(path):  # another process sharing data_dir may be copying it
        if is_current(path, identity):
            return FrameStore(path)
        return _copy(name, data_dir, splits, path, identity, progress)


def _copy(name, data_dir, splits, path, identity, progress) -> FrameStore:
    from myna_rpe_jax.data import datasets

    sources = [datasets.open_split(name, data_dir, split) for split in splits]
    size = sum(source_num_bytes(source) for source in sources)
    size_text = f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"
    log.info(
        "copying %s %s into a frame store at %s (once; ~%s): training then reads only the"
        " chunks it uses",
        name,
        "+".join(splits),
        path,
        size_text,
    )
    return write_store(sources, path, identity, sources[0].mel_config.n_mels, progress)


def source_num_bytes(source) -> int:
    """The stored size of a dataset split, from its tfds info (0 if unknown)."""
    import tensorflow_datasets as tfds

    try:
        info = tfds.builder_from_directory(str(source.path)).info
        return int(info.splits[source.split].num_bytes)
    except (KeyError, ValueError, OSError):
        return 0

"""The one chunking rule, shared by training, embedding, probing and the benchmarks.

A chunk is `length` consecutive frames of a log-mel spectrogram [n_mels, frames].

- Training (`crop`) takes a chunk at any start frame.
- Embedding in chunks (`chunk_mel`) cuts a track into non-overlapping chunks from frame 0,
  K = frames // length of them: a tail shorter than a chunk is dropped.
- A track shorter than one chunk is looped (tiled from its first frame) to one chunk, in
  training and in embedding alike: it gives exactly one chunk.
- A whole track (`crop_to_patches`) keeps its whole 16-frame patch columns: the frames past
  the last one are dropped (patchify drops them anyway).
"""

from __future__ import annotations

import numpy as np


def crop(mel: np.ndarray, start: int, length: int) -> np.ndarray:
    """mel [F, T] -> [F, length] = mel[:, start:start + length], looping the track from its
    first frame when it is shorter than `length` (then `start` is ignored)."""
    frames = mel.shape[1]
    if frames >= length:
        return mel[:, start : start + length]
    return np.tile(mel, (1, -(-length // frames)))[:, :length]


def num_chunks(frames: int, length: int) -> int:
    """How many chunks `chunk_mel` cuts a `frames`-frame track into: max(1, frames // length)."""
    return max(1, frames // length)


def chunk_mel(mel: np.ndarray, length: int) -> np.ndarray:
    """Non-overlapping chunks [K, F, length] of mel [F, T], K = `num_chunks(T, length)`.

    The tail shorter than a chunk is dropped; a track shorter than one chunk is looped to one
    chunk (`crop`).
    """
    count = mel.shape[1] // length
    if count == 0:
        return crop(mel, 0, length)[None]
    chunks = mel[:, : count * length].reshape(mel.shape[0], count, length)
    return chunks.transpose(1, 0, 2)


def crop_to_patches(mel: np.ndarray, patch_size: int) -> np.ndarray:
    """mel [F, T] -> [F, T // p * p]: the frames patchify keeps."""
    return mel[:, : mel.shape[1] // patch_size * patch_size]

"""The one chunking rule (data/chunks.py), against plain numpy slicing."""

import numpy as np
import pytest

from myna_rpe_jax.data import chunks


def random_mel(frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-80, 0, (128, frames)).astype(np.float16)


def test_chunk_mel_drops_the_tail_and_loops_short_tracks():
    mel = random_mel(700, 0)
    cut = chunks.chunk_mel(mel, 256)
    np.testing.assert_array_equal(cut, np.stack([mel[:, :256], mel[:, 256:512]]))
    short = random_mel(100, 1)
    np.testing.assert_array_equal(chunks.chunk_mel(short, 256)[0], np.tile(short, 3)[:, :256])


def test_short_tracks_are_looped():
    mel = np.arange(6, dtype=np.float16).reshape(1, 6)
    np.testing.assert_array_equal(chunks.crop(mel, 0, 10), [[0, 1, 2, 3, 4, 5, 0, 1, 2, 3]])


@pytest.mark.parametrize("frames", [1, 63, 64, 65, 127, 128, 200, 640])
def test_chunks_are_the_crops_at_multiples_of_the_length(frames):
    """Every chunk is training's crop at k * length; as many as num_chunks says."""
    mel = random_mel(frames, frames)
    cut = chunks.chunk_mel(mel, 64)
    assert cut.shape == (chunks.num_chunks(frames, 64), 128, 64)
    assert len(cut) == max(1, frames // 64)
    for k, chunk in enumerate(cut):
        np.testing.assert_array_equal(chunk, chunks.crop(mel, k * 64, 64))


def test_crop_to_patches_keeps_whole_patch_columns():
    mel = random_mel(350, 2)
    np.testing.assert_array_equal(chunks.crop_to_patches(mel, 16), mel[:, :336])
    assert chunks.crop_to_patches(mel[:, :336], 16).shape == (128, 336)

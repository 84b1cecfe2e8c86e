import numpy as np
import pytest

from myna_rpe_jax.data import datasets, locations
from myna_rpe_jax.train import pairs
from tests.conftest import DEMO


@pytest.fixture(scope="module")
def source(demo_root):
    data_dir = locations.demo_data_dir(demo_root, DEMO["tracks"], DEMO["seconds"], DEMO["seed"])
    return datasets.open_split("demo", data_dir, "train")


def find_window(mel: np.ndarray, chunk: np.ndarray) -> list[int]:
    """Every start frame at which `chunk` appears in `mel`."""
    length = chunk.shape[1]
    return [
        s for s in range(mel.shape[1] - length + 1) if np.array_equal(mel[:, s : s + length], chunk)
    ]


def test_pairs_are_two_different_chunks_of_the_same_track(source):
    sampler = pairs.PairSampler(source, global_batch=8, chunk_frames=(64,), seed=0)
    batch = sampler.batch(0)
    assert batch["view_a"].shape == (8, 128, 64) and batch["view_a"].dtype == np.float16
    assert len(set(batch["index"].tolist())) == 8, "a track appeared twice in one batch"
    for i, index in enumerate(batch["index"]):
        mel = source[int(index)]["mel"]
        starts_a, starts_b = (
            find_window(mel, batch["view_a"][i]),
            find_window(mel, batch["view_b"][i]),
        )
        assert starts_a and starts_b, "a view is not a chunk of its track"
        assert not np.array_equal(batch["view_a"][i], batch["view_b"][i])


def test_batches_are_a_pure_function_of_seed_and_step(source):
    make = lambda seed: pairs.PairSampler(source, 8, (64,), seed=seed)
    a, b = make(0).batch(5), make(0).batch(5)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(make(1).batch(5)["view_a"], a["view_a"])
    assert not np.array_equal(make(0).batch(6)["view_a"], a["view_a"])
    iterated = next(make(0).iterate(5, prefetch=2, threads=2))
    np.testing.assert_array_equal(iterated["view_b"], a["view_b"])


def test_an_epoch_visits_every_track_once_at_most(source):
    sampler = pairs.PairSampler(source, 4, (64,), seed=0)
    seen = np.concatenate([sampler.global_indices(s) for s in range(sampler.steps_per_epoch)])
    assert len(seen) == len(set(seen)) == 4 * (len(source) // 4)


def test_process_slices_make_up_the_global_batch(source):
    whole = pairs.PairSampler(source, 8, (64,), seed=3).batch(2)
    parts = [
        pairs.PairSampler(source, 8, (64,), seed=3, process_index=p, process_count=2).batch(2)
        for p in range(2)
    ]
    for key in whole:
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_buckets_pick_one_length_per_step(source):
    sampler = pairs.PairSampler(source, 4, (32, 64, 128), seed=0)
    lengths = {sampler.batch(s)["view_a"].shape[2] for s in range(12)}
    assert lengths == {32, 64, 128}


def test_short_tracks_get_one_offset_and_longer_ones_two_distinct():
    # Looping a short track to a chunk is data.chunks.crop (tests/data/test_chunks.py).
    assert pairs.pair_offsets(np.random.default_rng(0), 6, 10) == (0, 0)
    offsets = {pairs.pair_offsets(np.random.default_rng(s), 12, 10) for s in range(50)}
    assert all(a != b for a, b in offsets) and all(0 <= a <= 2 and 0 <= b <= 2 for a, b in offsets)


def test_a_batch_larger_than_the_dataset_is_refused(source):
    with pytest.raises(ValueError, match="larger than the dataset"):
        pairs.PairSampler(source, len(source) + 1, (64,))
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        pairs.PairSampler(source, 8, (64,), process_count=3)

"""The frame store: an exact copy of the training split(s), read chunk by chunk."""

import json

import numpy as np
import pytest

from myna_rpe_jax import datasets, frame_store, input_pipeline, training_data
from tests.conftest import DEMO


@pytest.fixture(scope="module")
def data_dir(demo_root):
    return training_data.demo_data_dir(demo_root, DEMO["tracks"], DEMO["seconds"], DEMO["seed"])


@pytest.fixture(scope="module")
def store(data_dir):
    return frame_store.open_frame_store("demo", data_dir, ["train"], progress=False)


def test_every_track_is_copied_exactly_and_any_chunk_reads_back(store, data_dir):
    split = datasets.open_split("demo", data_dir, "train")
    assert len(store) == len(split)
    rng = np.random.default_rng(0)
    for i in range(len(split)):
        mel = split[i]["mel"]
        assert store.track_ids[i] == split[i]["track_id"]
        assert store.num_frames(i) == mel.shape[1]
        np.testing.assert_array_equal(store[i]["mel"], mel)
        start = int(rng.integers(mel.shape[1] - 64))
        chunk = store.read(i, start, 64)
        assert chunk.dtype == np.float16 and chunk.flags.c_contiguous
        np.testing.assert_array_equal(chunk, mel[:, start : start + 64])


def test_reads_outside_a_track_fail_with_the_track_named(store):
    frames = store.num_frames(0)
    with pytest.raises(IndexError, match=f"outside track 0 .*{frames} frames"):
        store.read(0, frames - 10, 64)
    with pytest.raises(IndexError, match="out of range"):
        store[len(store)]


def test_pair_batches_are_the_same_as_from_the_dataset_records(store, data_dir):
    split = datasets.open_split("demo", data_dir, "train")
    for chunk in (64, 1000):  # 1000 frames is longer than the 4 s tracks: looped
        a = input_pipeline.PairSampler(store, 8, (chunk,), seed=4)
        b = input_pipeline.PairSampler(split, 8, (chunk,), seed=4)
        for step in (0, 3):
            got, expected = a.batch(step), b.batch(step)
            for key in expected:
                np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_several_splits_are_concatenated_in_order(data_dir, tiny_config):
    tiny_config.data.split = "train+validation"
    store = training_data.open_training_split(tiny_config.data)
    parts = [datasets.open_split("demo", data_dir, split) for split in ("train", "valid")]
    assert len(store) == sum(map(len, parts))
    expected_ids = [example["track_id"] for part in parts for example in part]
    assert store.track_ids == expected_ids
    assert store.path.name == "train+valid"
    tiny_config.data.frame_store = False  # the same tracks, read from the records
    concat = training_data.open_training_split(tiny_config.data)
    assert [concat[i]["track_id"] for i in range(len(concat))] == expected_ids
    np.testing.assert_array_equal(concat[len(store) - 1]["mel"], store[len(store) - 1]["mel"])


@pytest.mark.parametrize("split", ["train+train", "train++test", ""])
def test_bad_split_lists_are_refused(tiny_config, split):
    tiny_config.data.split = split
    with pytest.raises(ValueError, match="name each split once"):
        training_data.training_splits(tiny_config.data)


def test_an_out_of_date_or_unfinished_copy_is_redone(data_dir):
    prepared = datasets.prepared_dir("demo", data_dir)
    path = frame_store.store_dir(data_dir, prepared, ["test"])
    store = frame_store.open_frame_store("demo", data_dir, ["test"], progress=False)
    stamp = (path / "mels.f16").stat().st_mtime_ns
    frame_store.open_frame_store("demo", data_dir, ["test"], progress=False)
    assert (path / "mels.f16").stat().st_mtime_ns == stamp  # current: reused
    meta = json.loads((path / "meta.json").read_text())
    # As if the dataset had been rebuilt since the copy (its dataset_info.json changed).
    (path / "meta.json").write_text(json.dumps({**meta, "dataset_info_sha1": "0" * 40}))
    (path.with_name(path.name + ".partial")).mkdir()  # as if a copy had been killed
    again = frame_store.open_frame_store("demo", data_dir, ["test"], progress=False)
    assert json.loads((path / "meta.json").read_text()) == meta
    assert not path.with_name(path.name + ".partial").exists()
    assert again.track_ids == store.track_ids
    with pytest.raises(FileNotFoundError, match="no up-to-date frame store"):
        frame_store.open_frame_store("demo", data_dir, ["valid"], build=False)

"""The frame store: an exact copy of the training split(s), read chunk by chunk."""

import threading
import time

import numpy as np
import pytest

from myna_rpe_jax.data import datasets, locations
from myna_rpe_jax.data.demo.music import generate_demo
from myna_rpe_jax.train import frame_store, pairs, sources
from tests.conftest import DEMO
from tests.data.test_lock import held_by_another_process


@pytest.fixture(scope="module")
def data_dir(demo_root):
    return locations.demo_data_dir(demo_root, DEMO["tracks"], DEMO["seconds"], DEMO["seed"])


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
        a = pairs.PairSampler(store, 8, (chunk,), seed=4)
        b = pairs.PairSampler(split, 8, (chunk,), seed=4)
        for step in (0, 3):
            got, expected = a.batch(step), b.batch(step)
            for key in expected:
                np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_several_splits_are_concatenated_in_order(data_dir, tiny_config):
    tiny_config.data.split = "train+validation"
    store = sources.open_training_split(tiny_config.data)
    parts = [datasets.open_split("demo", data_dir, split) for split in ("train", "valid")]
    assert len(store) == sum(map(len, parts))
    expected_ids = [example["track_id"] for part in parts for example in part]
    assert store.track_ids == expected_ids
    assert store.path.name == "train+valid"
    tiny_config.data.frame_store = False  # the same tracks, read from the records
    concat = sources.open_training_split(tiny_config.data)
    assert [concat[i]["track_id"] for i in range(len(concat))] == expected_ids
    np.testing.assert_array_equal(concat[len(store) - 1]["mel"], store[len(store) - 1]["mel"])


@pytest.mark.parametrize("split", ["train+train", "train++test", ""])
def test_bad_split_lists_are_refused(tiny_config, split):
    tiny_config.data.split = split
    with pytest.raises(ValueError, match="name each split once"):
        sources.training_splits(tiny_config.data)


def test_an_unchanged_copy_is_reused_and_an_unfinished_one_is_redone(data_dir):
    path = frame_store.store_dir(data_dir, datasets.prepared_dir("demo", data_dir), ["test"])
    store = frame_store.open_frame_store("demo", data_dir, ["test"], progress=False)
    stamp = (path / "mels.f16").stat().st_mtime_ns
    frame_store.open_frame_store("demo", data_dir, ["test"], progress=False)
    assert (path / "mels.f16").stat().st_mtime_ns == stamp  # current: reused
    (path / "meta.json").unlink()  # as if a copy had been killed before its last file
    (path.with_name(path.name + ".partial")).mkdir()  # and another one earlier
    again = frame_store.open_frame_store("demo", data_dir, ["test"], progress=False)
    assert not path.with_name(path.name + ".partial").exists()
    assert again.track_ids == store.track_ids
    with pytest.raises(FileNotFoundError, match="no up-to-date frame store"):
        frame_store.open_frame_store("demo", data_dir, ["valid"], build=False)


def test_a_rebuilt_dataset_is_copied_again(tmp_path):
    """Other audio of the same length, prepared again with --overwrite: dataset_info.json
    comes out the same, but the store must serve the new mels. Opened through a symlink."""
    audio, data_dir = tmp_path / "audio", tmp_path / "data"
    generate_demo(audio, num_tracks=8, seconds=2.0, seed=0, progress=False)
    datasets.prepare("demo", audio, data_dir, progress=False)
    (tmp_path / "link").symlink_to(data_dir)
    before = frame_store.open_frame_store("demo", tmp_path / "link", ["train"], progress=False)
    old = before[0]["mel"]
    generate_demo(audio, num_tracks=8, seconds=2.0, seed=1, progress=False)
    datasets.prepare("demo", audio, data_dir, overwrite=True, progress=False)
    after = frame_store.open_frame_store("demo", tmp_path / "link", ["train"], progress=False)
    new = datasets.open_split("demo", data_dir, "train")[0]["mel"]
    assert not np.array_equal(old, new)
    np.testing.assert_array_equal(after[0]["mel"], new)


def test_a_copy_another_process_is_making_is_waited_for_then_used(tmp_path, caplog):
    audio, data_dir = tmp_path / "audio", tmp_path / "data"
    generate_demo(audio, num_tracks=6, seconds=2.0, seed=0, progress=False)
    datasets.prepare("demo", audio, data_dir, progress=False)
    path = frame_store.store_dir(data_dir, datasets.prepared_dir("demo", data_dir), ["train"])
    opened = []
    with held_by_another_process(path, tmp_path) as holder:
        waiter = threading.Thread(
            target=lambda: opened.append(
                frame_store.open_frame_store("demo", data_dir, ["train"], progress=False)
            )
        )
        waiter.start()
        expected = f"waiting for {path}, being prepared by pid {holder.pid}"
        deadline = time.monotonic() + 30
        while expected not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
        assert not opened and not path.exists()
    waiter.join(timeout=60)
    [store] = opened
    split = datasets.open_split("demo", data_dir, "train")
    assert store.track_ids == [example["track_id"] for example in split]
    np.testing.assert_array_equal(store[0]["mel"], split[0]["mel"])

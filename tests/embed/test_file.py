"""The embedding .npz format: save/load round trip, the lenient read, errors naming the field."""

import re
import threading

import numpy as np
import pytest

from myna_rpe_jax.embed.file import Embeddings, load_npz, save_npz


def example() -> Embeddings:
    return Embeddings(
        track_ids=["a", "sub/b", "c"],
        embeddings=np.arange(12, dtype=np.float32).reshape(3, 4),
        split=["train", "valid", "test"],
        labels={"genre": np.array([0, 2, 1]), "tags": np.eye(3, dtype=np.float32)},
        skipped=["broken.wav: cannot decode"],
        meta={"mode": "full", "step": 7},
    )


def test_round_trip(tmp_path):
    path = save_npz(tmp_path / "deep" / "emb.npz", example())
    assert sorted(p.name for p in path.parent.iterdir()) == ["emb.npz"]  # no .partial left
    got = load_npz(path)
    want = example()
    assert (got.track_ids, got.split, got.skipped, got.meta) == (
        want.track_ids,
        want.split,
        want.skipped,
        want.meta,
    )
    np.testing.assert_array_equal(got.embeddings, want.embeddings)
    assert got.embeddings.dtype == np.float32
    assert set(got.labels) == {"genre", "tags"}
    np.testing.assert_array_equal(got.labels["tags"], want.labels["tags"])


def test_writers_racing_on_one_path_leave_one_whole_file(tmp_path):
    """Two probes into one --output save the same embedding file at once: the last to finish
    wins, and the file is always one writer's whole result."""
    path = tmp_path / "emb.npz"
    results = [
        Embeddings(
            track_ids=[f"t{i}" for i in range(2000)],
            embeddings=np.full((2000, 256), value, np.float32),
            split=["test"] * 2000,
            labels={},
            skipped=[],
            meta={},
        )
        for value in (1.0, 2.0)
    ]
    barrier, errors = threading.Barrier(2), []

    def write(result):
        try:
            for _ in range(10):
                barrier.wait(timeout=60)
                save_npz(path, result)
        except Exception as err:  # reported below: an exception in a thread would be lost
            errors.append(err)
            barrier.abort()  # the other writer stops too instead of waiting for this one

    threads = [threading.Thread(target=write, args=(result,)) for result in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    values = np.unique(load_npz(path).embeddings)
    assert len(values) == 1 and values[0] in (1.0, 2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npz"]


def test_lenient_read_needs_only_track_ids_and_embeddings(tmp_path):
    path = tmp_path / "other_tool.npz"
    np.savez(path, track_ids=np.array(["x", "y"]), embeddings=np.ones((2, 3), np.float64))
    got = load_npz(path, strict=False)
    assert got.track_ids == ["x", "y"] and got.split == ["", ""]
    assert got.embeddings.dtype == np.float32 and got.embeddings.shape == (2, 3)
    assert (got.labels, got.skipped, got.meta) == ({}, [], {})
    with pytest.raises(ValueError, match=r"lacks \['meta', 'split'\].*strict=False"):
        load_npz(path)


def test_errors_name_the_file_and_the_missing_field(tmp_path):
    path = tmp_path / "vectors.npz"
    np.savez(path, track_ids=np.array(["x"]), vectors=np.zeros((1, 3)))
    with pytest.raises(
        ValueError, match=re.escape(f"{path} lacks ['embeddings']: expected an .npz")
    ):
        load_npz(path, strict=False)
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"embeddings file {tmp_path / 'no.npz'} does")
    ):
        load_npz(tmp_path / "no.npz", strict=False)
    (tmp_path / "tracks.csv").write_text("track_id\nx\n")
    with pytest.raises(ValueError, match="not an embedding file .*tracks.csv"):
        load_npz(tmp_path / "tracks.csv", strict=False)
    np.savez(path, track_ids=np.array(["x", "y"]), embeddings=np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"embeddings \(3, 4\) .* do not match 2 track_ids"):
        load_npz(path, strict=False)


def test_a_name_without_npz_is_written_as_given_and_a_truncated_file_is_named(tmp_path):
    """np.savez appends ".npz" to a name without it: the result must land on the name given,
    with nothing left beside it; a truncated copy is "not an embedding file", not a zip error."""
    path = save_npz(tmp_path / "embeddings", example())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embeddings"]
    assert load_npz(path).track_ids == example().track_ids
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="not an embedding file .*truncated.npz"):
        load_npz(truncated)
    (tmp_path / "empty.npz").write_bytes(b"")  # a copy that never started: numpy's EOFError
    with pytest.raises(ValueError, match="not an embedding file .*empty.npz"):
        load_npz(tmp_path / "empty.npz")


def test_save_parquet_replaces_the_file_whole(tmp_path):
    # A reader that opened the old file keeps reading it whole: the new one is written beside
    # it and renamed over it, never into it (two embeds on one --output, a reader mid-write).
    import pyarrow.parquet as pq

    from myna_rpe_jax.embed.collection import save_parquet

    def result(value):
        return Embeddings(["a", "b"], np.full((2, 4), value, np.float32), ["", ""], {}, [], {})

    path = tmp_path / "e.parquet"
    save_parquet(path, result(1.0))
    with open(path, "rb") as old:
        save_parquet(path, result(2.0))
        assert pq.read_table(old).column("embedding").to_pylist() == [[1.0] * 4] * 2
    assert pq.read_table(path).column("embedding").to_pylist() == [[2.0] * 4] * 2
    assert [p.name for p in tmp_path.iterdir()] == ["e.parquet"]


def test_a_flipped_byte_inside_a_field_is_named_not_a_bare_zip_error(tmp_path):
    """np.load opens such a file; the CRC check fails only when the field is read."""
    path = save_npz(tmp_path / "emb.npz", example())
    data = bytearray(path.read_bytes())
    where = data.index(b"embeddings.npy") + 200  # inside the stored (uncompressed) array
    data[where] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"emb.npz: field '\w+' cannot be read, the file is"):
        load_npz(path)

"""Dataset parsers on the full published split/annotation files, splits and layout checks.

No audio is decoded here: layouts are checked with empty placeholder files, which is all the
parsers look at (existence), and the published files come from /work/shared/datasets.
"""

import collections
import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest

from myna_rpe_jax.data.datasets import DATASET_NAMES, LayoutError, common, dataset_tasks
from myna_rpe_jax.data.datasets.parsers import emomusic, giantsteps_key, gtzan, mtg_jamendo
from myna_rpe_jax.data.datasets.registry import DATASETS
from myna_rpe_jax.data.keys import KEY_NAMES
from tests.conftest import SHARED_DATASETS

SHARED = SHARED_DATASETS
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="published files not available")
# Enharmonic spellings the published annotations use, mapped by hand (not via keys.py).
FLATS = {"C#": "Db", "D#": "Eb", "F#": "Gb", "G#": "Ab", "A#": "Bb"}


def test_mtg_jamendo_full_split_files():
    splits = mtg_jamendo.read_splits(SHARED / "mtg-jamendo" / "split-0")
    assert {s: len(rows) for s, rows in splits.items()} == {
        "train": 32136,
        "valid": 10888,
        "test": 11356,
    }
    ids = [set(track_id for track_id, _, _ in rows) for rows in splits.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    vocabulary = {tag for rows in splits.values() for _, _, tags in rows for tag in tags}
    assert len(vocabulary) == 50 and tuple(sorted(vocabulary)) == mtg_jamendo.TOP50_TAGS
    assert all(tags for rows in splits.values() for _, _, tags in rows)
    track_id, path, tags = splits["test"][0]
    assert (track_id, path, tags) == ("track_0000215", "15/215.mp3", ["genre---metal"])


def test_mtg_jamendo_rejects_a_non_top50_file(tmp_path):
    split_dir = tmp_path / "split-0"
    split_dir.mkdir()
    header = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
    for name in mtg_jamendo.SPLIT_FILES.values():
        (split_dir / name).write_text(header + "track_1\ta\tb\t01/1.mp3\t30.0\tgenre---rock\n")
    with pytest.raises(ValueError, match="differ from the published top-50"):
        mtg_jamendo.read_splits(split_dir)


def test_gtzan_full_filtered_lists():
    lists = {s: gtzan.read_split_list(SHARED / "gtzan" / n) for s, n in gtzan.LIST_FILES.items()}
    assert {split: len(ids) for split, ids in lists.items()} == {
        "train": 443,
        "valid": 197,
        "test": 290,
    }
    all_ids = [track_id for ids in lists.values() for track_id in ids]
    assert len(set(all_ids)) == 930
    assert {track_id.split(".")[0] for track_id in all_ids} == set(gtzan.GENRES)
    assert lists["test"][0] == "blues.00012"


def _published_mtg_key_rows():
    path = SHARED / "giantsteps-mtg-key" / "annotations" / "annotations.txt"
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_giantsteps_mtg_key_keeps_confidence_2_single_keys():
    path = SHARED / "giantsteps-mtg-key" / "annotations" / "annotations.txt"
    kept = giantsteps_key.read_mtg_annotations(path)
    # The protocol's own rule, applied independently: C == 2 and no "/" between keys.
    expected = [
        (row["ID"], row["MANUAL KEY"])
        for row in _published_mtg_key_rows()
        if row["C"] == "2" and "/" not in row["MANUAL KEY"]
    ]
    assert len(kept) == len(expected) == 1159
    assert len(_published_mtg_key_rows()) == 1486
    for (track_id, key), (expected_id, text) in zip(kept, expected, strict=True):
        tonic, mode = text.split()
        assert track_id == expected_id
        assert KEY_NAMES[key] == f"{FLATS.get(tonic, tonic)} {mode}"


def test_giantsteps_key_all_604_labels_parse():
    key_dir = SHARED / "giantsteps-key" / "annotations" / "key"
    keys, skipped = giantsteps_key.read_test_keys(key_dir)
    assert len(keys) == 604 and skipped == []
    for track_id, key in keys:
        tonic, mode = (key_dir / f"{track_id}.LOFI.key").read_text().split()
        assert KEY_NAMES[key] == f"{FLATS.get(tonic, tonic)} {mode}"
    counts = collections.Counter(KEY_NAMES[key].split()[1] for _, key in keys)
    assert counts["minor"] > counts["major"] > 0  # EDM: mostly minor keys


def test_giantsteps_artist_split_keeps_collaborators_together():
    artists = {str(i): [f"artist {i % 40}"] for i in range(400)}
    artists.update({"1000": ["artist 1", "artist 2"], "1001": ["artist 2", "artist 3"]})
    split = giantsteps_key.artist_split(sorted(artists), artists)
    assert set(split.values()) == {"train", "valid"}
    split_of_artist = collections.defaultdict(set)
    for track_id, names in artists.items():
        for name in names:
            split_of_artist[name].add(split[track_id])
    assert all(len(splits) == 1 for splits in split_of_artist.values())
    # The documented rule, computed here with hashlib: bucket of the lower-cased name.
    # "artist 7" has no co-artists, so its own bucket decides.
    bucket = int(hashlib.sha1(b"artist 7").hexdigest(), 16) % 116
    assert split["7"] == ("train" if bucket < 100 else "valid")


def test_emomusic_artist_rule():
    assert emomusic.normalize_artist("  The\tBeatles! 2 ") == "the beatles"
    bucket = int(hashlib.sha1(b"the beatles").hexdigest(), 16) % 10
    assert emomusic.development_split("The  Beatles") == ("train" if bucket < 8 else "valid")


def test_stratified_split_fractions_and_seed():
    keys = [f"{g}.{i:05d}" for g in "abc" for i in range(20)]
    strata = [key[0] for key in keys]
    fractions = {"train": 0.7, "valid": 0.15, "test": 0.15}
    first = common.stratified_split(keys, strata, fractions, seed=0)
    for stratum in "abc":
        counts = collections.Counter(v for k, v in first.items() if k[0] == stratum)
        assert counts == {"train": 14, "valid": 3, "test": 3}
    assert common.stratified_split(keys[::-1], strata[::-1], fractions, seed=0) == first
    assert common.stratified_split(keys, strata, fractions, seed=1) != first


def test_listing_rejects_duplicate_ids_and_bad_splits(tmp_path):
    track = common.Track("train", "a", tmp_path / "a.wav")
    with pytest.raises(ValueError, match="appears twice"):
        common.Listing([track, common.Track("train", "a", tmp_path / "b.wav")])
    with pytest.raises(ValueError, match="not one of"):
        common.Listing([common.Track("training", "a", tmp_path / "a.wav")])


def test_multi_hot_names_unknown_tags():
    np.testing.assert_array_equal(common.multi_hot(["b"], ["a", "b", "c"], "x"), [0, 1, 0])
    with pytest.raises(ValueError, match="file.tsv, row 3: unknown tag 'd'"):
        common.multi_hot(["d"], ["a", "b"], "file.tsv, row 3")


def test_tasks_are_consistent():
    assert DATASET_NAMES == ("folder", "demo", "mtg_jamendo", "gtzan", "giantsteps_key", "emomusic")
    assert dataset_tasks("folder") == {}
    for name in DATASET_NAMES:
        for task in dataset_tasks(name).values():
            assert task.kind in common.TASK_KINDS
            if task.class_names is not None:
                assert len(task.class_names) == task.num_outputs
    assert dataset_tasks("giantsteps_key")["key"].num_outputs == 24
    assert dataset_tasks("gtzan")["genre"].class_names[0] == "blues"
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        dataset_tasks("mnist")


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_wrong_layout_shows_the_expected_tree(name, tmp_path):
    (tmp_path / ".hidden").write_text("not a dataset")
    spec = DATASETS[name]
    with pytest.raises(LayoutError) as error:
        spec.list_tracks(tmp_path, spec.split_modes[0], 0)
    assert spec.layout in str(error.value) and str(tmp_path) in str(error.value)


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def test_mtg_jamendo_low_quality_layout(tmp_path):
    split_dir = tmp_path / "splits" / "split-0"
    split_dir.mkdir(parents=True)
    published = SHARED / "mtg-jamendo" / "split-0"
    for name in mtg_jamendo.SPLIT_FILES.values():
        (split_dir / name).write_bytes((published / name).read_bytes())
    _touch(tmp_path / "15" / "215.low.mp3")  # the low-quality download, no audio/ folder
    listing = mtg_jamendo.list_tracks(tmp_path, "split-0", 0)
    assert [(t.split, t.track_id, t.path) for t in listing.tracks] == [
        ("test", "track_0000215", tmp_path / "15" / "215.low.mp3")
    ]
    assert len(listing.skipped) == 32136 + 10888 + 11356 - 1
    assert listing.skipped[0][1].startswith("missing: named in the split-0 split files")


def test_gtzan_random_split_when_lists_are_absent(tmp_path):
    root = tmp_path / "Data" / "genres_original"
    for genre in gtzan.GENRES[:4]:
        for i in range(20):
            _touch(root / genre / f"{genre}.{i:05d}.{'au' if i % 2 else 'wav'}")
    _touch(root / "blues" / "blues.00000.wav.bak")  # not a GTZAN file name: ignored
    listing = gtzan.list_tracks(tmp_path, "auto", seed=3)
    assert len(listing.tracks) == 80 and listing.skipped == []
    assert "not found" in listing.notes[0] and "seed 3" in listing.notes[0]
    for genre_index in range(4):
        counts = collections.Counter(
            t.split for t in listing.tracks if t.labels["genre"] == genre_index
        )
        assert counts == {"train": 14, "valid": 3, "test": 3}
    assert {t.path.suffix for t in listing.tracks} == {".wav", ".au"}
    with pytest.raises(LayoutError, match="needs the lists"):
        gtzan.list_tracks(tmp_path, "filtered", seed=0)

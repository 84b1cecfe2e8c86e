"""Dataset parsers on the full published split/annotation files, splits and layout checks.

No audio is decoded here: layouts are checked with empty placeholder files, which is all the
parsers look at (existence), and the published files come from /work/shared/datasets.
"""

import codecs
import collections
import csv
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from myna_rpe_jax.data.datasets import DATASET_NAMES, LayoutError, common, dataset_tasks
from myna_rpe_jax.data.datasets.parsers import emomusic, giantsteps_key, gtzan, mtg_jamendo
from myna_rpe_jax.data.datasets.registry import DATASETS
from myna_rpe_jax.data.demo.music import METADATA_COLUMNS
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


# ---- GiantSteps MTG-key artist split and EmoMusic split on the published metadata ----

MTG_KEY = SHARED / "giantsteps-mtg-key" / "annotations"
EMO = SHARED / "emomusic"


def _jukemir_giantsteps_split(passes: int) -> dict[str, str]:
    """JukeMIR's GiantSteps train/valid rule, written out here from its description: SHA-1 of
    each lower-cased artist into 116 buckets (100 train), then `passes` passes over every
    track in file order making all co-artists of a valid artist valid."""
    with open(MTG_KEY / "beatport_metadata.txt", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    artists_of = {row["ID"]: [a.strip() for a in row["ARTIST"].split(",")] for row in rows}

    def side(artist: str) -> str:
        bucket = int(hashlib.sha1(artist.lower().encode()).hexdigest(), 16) % 116
        return "train" if bucket < 100 else "valid"

    split_of = {artist: side(artist) for names in artists_of.values() for artist in names}
    for _ in range(passes):
        for names in artists_of.values():
            if any(split_of[a] == "valid" for a in names):
                split_of.update({a: "valid" for a in names})
    kept = {
        row["ID"]
        for row in _published_mtg_key_rows()
        if row["C"] == "2" and "/" not in row["MANUAL KEY"]
    }
    return {
        track_id: "valid" if any(split_of[a] == "valid" for a in names) else "train"
        for track_id, names in artists_of.items()
        if track_id in kept
    }


def test_giantsteps_artist_split_reproduces_jukemir_on_the_published_metadata():
    labelled = giantsteps_key.read_mtg_annotations(MTG_KEY / "annotations.txt")
    artists = giantsteps_key.read_beatport_artists(MTG_KEY / "beatport_metadata.txt")
    assert len(artists) == 1486 and {track_id for track_id, _ in labelled} <= set(artists)
    split = giantsteps_key.artist_split([track_id for track_id, _ in labelled], artists)
    assert collections.Counter(split.values()) == {"train": 923, "valid": 236}
    # Track for track the same as JukeMIR's rule; its two passes reach the closure (a third
    # changes nothing), and before any pass the hash alone gives 948 / 211.
    assert split == _jukemir_giantsteps_split(passes=2) == _jukemir_giantsteps_split(passes=3)
    assert collections.Counter(_jukemir_giantsteps_split(passes=0).values()) == {
        "train": 948,
        "valid": 211,
    }
    # Artist-disjoint: no artist has kept tracks on both sides.
    splits_of_artist = collections.defaultdict(set)
    for track_id, value in split.items():
        for name in artists[track_id]:
            splits_of_artist[name].add(value)
    assert all(len(values) == 1 for values in splits_of_artist.values())


def test_giantsteps_listing_on_the_published_layout(tmp_path):
    train_root = tmp_path / "giantsteps-mtg-key-dataset"
    test_root = tmp_path / "giantsteps-key-dataset"
    (train_root / "annotations").mkdir(parents=True)
    for name in ("annotations.txt", "beatport_metadata.txt"):
        (train_root / "annotations" / name).write_bytes((MTG_KEY / name).read_bytes())
    for row in _published_mtg_key_rows():
        _touch(train_root / "audio" / f"{row['ID']}.LOFI.mp3")
    published_keys = SHARED / "giantsteps-key" / "annotations" / "key"
    (test_root / "annotations" / "key").mkdir(parents=True)
    for path in published_keys.glob("*.key"):
        (test_root / "annotations" / "key" / path.name).write_bytes(path.read_bytes())
        _touch(test_root / "audio" / f"{path.name.split('.')[0]}.LOFI.mp3")
    for mode in ("auto", "artist"):
        listing = giantsteps_key.list_tracks(tmp_path, mode, seed=0)
        counts = collections.Counter(track.split for track in listing.tracks)
        assert counts == {"train": 923, "valid": 236, "test": 604}
        assert listing.skipped == [] and listing.notes == []
        assert listing.info["train_valid_split"] == "by artist (beatport_metadata.txt)"
    random = giantsteps_key.list_tracks(tmp_path, "random", seed=0)
    assert collections.Counter(t.split for t in random.tracks) == {
        "train": 927,
        "valid": 232,
        "test": 604,
    }


def _published_split_tsv() -> dict[str, str]:
    with open(EMO / "jukemir_split.tsv", newline="") as f:
        return {row["song_id"]: row["jukemir_split"] for row in csv.DictReader(f, delimiter="\t")}


def _jukemir_emomusic_json() -> dict:
    with gzip.open(EMO / "jukemir" / "emomusic.json.gz", "rt", encoding="utf-8") as f:
        return json.load(f)


def test_emomusic_shipped_split_is_the_published_one():
    shipped = emomusic.jukemir_split()
    clips = _jukemir_emomusic_json()
    assert shipped == _published_split_tsv()
    assert shipped == {str(int(uid)): clip["split"] for uid, clip in clips.items()}
    assert collections.Counter(shipped.values()) == {"train": 504, "valid": 115, "test": 125}
    evaluation = {
        clip["extra"]["songs_info"]["song_id"]
        for clip in clips.values()
        if clip["extra"]["songs_info"]["Mediaeval 2013 set"] == "evaluation"
    }
    assert {song for song, split in shipped.items() if split == "test"} == evaluation


def test_emomusic_csvs_agree_with_the_jukemir_json():
    annotations = emomusic.read_static_annotations(EMO / "static_annotations_reconstructed.csv")
    songs = emomusic.read_songs_info(EMO / "songs_info_reconstructed.csv")
    clips = {str(int(uid)): clip for uid, clip in _jukemir_emomusic_json().items()}
    assert len(clips) == 744 and set(annotations) == set(songs) == set(clips)
    for song_id, clip in clips.items():
        static, info = clip["extra"]["static_annotations"], clip["extra"]["songs_info"]
        assert annotations[song_id] == (
            float(static["mean_arousal"]),
            float(static["mean_valence"]),
        )
        assert songs[song_id] == (info["Artist"], info["Mediaeval 2013 set"])
    arousal, valence = np.array(list(annotations.values())).T
    assert (arousal.min(), arousal.max(), valence.min(), valence.max()) == (1.6, 8.4, 1.6, 8.1)
    # JukeMIR's targets "y" are the means z-scored with the statistics of the whole development
    # set (train + valid, 619 clips; population std): an affine map of the raw labels we store.
    development = [s for s, clip in clips.items() if clip["split"] != "test"]
    assert len(development) == 619
    for column, values in enumerate((arousal, valence)):
        by_id = dict(zip(annotations, values, strict=True))
        dev = np.array([by_id[s] for s in development])
        expected = [(by_id[s] - dev.mean()) / dev.std() for s in clips]
        np.testing.assert_allclose([clip["y"][column] for clip in clips.values()], expected)


def _emomusic_source(tmp_path: Path) -> Path:
    (tmp_path / "annotations").mkdir()
    for name in ("static_annotations", "songs_info"):
        text = (EMO / f"{name}_reconstructed.csv").read_bytes()
        (tmp_path / "annotations" / f"{name}.csv").write_bytes(text)
    for song_id in _published_split_tsv():
        _touch(tmp_path / "clips_45seconds" / f"{song_id}.mp3")
    return tmp_path


@pytest.mark.parametrize("split_mode", emomusic.SPLIT_MODES)
def test_emomusic_listing_on_the_published_csvs(tmp_path, split_mode):
    listing = emomusic.list_tracks(_emomusic_source(tmp_path), split_mode, seed=0)
    assert listing.skipped == []
    # Both modes give the published split: the artist rule is JukeMIR's, and it yields the
    # shipped table clip for clip.
    assert {t.track_id: t.split for t in listing.tracks} == _published_split_tsv()
    annotations = emomusic.read_static_annotations(EMO / "static_annotations_reconstructed.csv")
    for track in listing.tracks:
        assert (track.labels["arousal"], track.labels["valence"]) == annotations[track.track_id]
        assert track.path == tmp_path / "clips_45seconds" / f"{track.track_id}.mp3"
    assert ("JukeMIR" in listing.info["split"]) == (split_mode == "jukemir")


def test_emomusic_jukemir_split_checks_the_csvs(tmp_path):
    source = _emomusic_source(tmp_path)
    songs_info = source / "annotations" / "songs_info.csv"
    lines = songs_info.read_text(encoding="utf-8").splitlines()
    song_3 = next(i for i, line in enumerate(lines) if line.startswith("3,"))
    assert lines[song_3].endswith(",evaluation")
    extra = "9999,9999.mp3,Nobody,Nothing,0.00,0.45,Pop,development"
    songs_info.write_text("\n".join([*lines, extra]) + "\n", encoding="utf-8")
    with open(source / "annotations" / "static_annotations.csv", "a") as f:
        f.write("9999,5,1,5,1\n")
    _touch(source / "clips_45seconds" / "9999.mp3")
    listing = emomusic.list_tracks(source, "jukemir", seed=0)
    assert len(listing.tracks) == 744
    assert listing.skipped == [
        (
            str(source / "clips_45seconds" / "9999.mp3"),
            "not in the JukeMIR split (emomusic_jukemir.tsv)",
        )
    ]
    assert "9999" in {t.track_id for t in emomusic.list_tracks(source, "artist", 0).tracks}
    lines[song_3] = lines[song_3].replace(",evaluation", ",development")
    songs_info.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="song 3 in the MediaEval 2013 'development' set"):
        emomusic.list_tracks(source, "jukemir", seed=0)


def test_emomusic_split_table_format_errors():
    assert emomusic.parse_split_table("# note\nsong_id\tsplit\n07\ttest\n", "t.tsv") == {
        "7": "test"
    }
    with pytest.raises(ValueError, match="t.tsv: expected a header row"):
        emomusic.parse_split_table("id\tsplit\n7\ttest\n", "t.tsv")
    with pytest.raises(ValueError, match="t.tsv, data row 1: expected song_id"):
        emomusic.parse_split_table("song_id\tsplit\n7\tdev\n", "t.tsv")


def test_emomusic_split_modes():
    assert DATASETS["emomusic"].split_modes == ("jukemir", "artist")  # jukemir: the default


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


# Each dataset's annotation files (published path -> path in <source>), read in this order,
# and the folders its layout check wants; the last file is the one made Latin-1.
_ANNOTATIONS = {
    "gtzan": (
        {f"gtzan/{s}_filtered.txt": f"{s}_filtered.txt" for s in ("valid", "test", "train")},
        ["genres/blues"],
    ),
    "mtg_jamendo": (
        {
            f"mtg-jamendo/split-0/{n}": f"data/splits/split-0/{n}"
            for n in mtg_jamendo.SPLIT_FILES.values()
        },
        ["audio/00"],
    ),
    "giantsteps_key": (
        {
            f"giantsteps-mtg-key/annotations/{n}": f"giantsteps-mtg-key/annotations/{n}"
            for n in ("annotations.txt", "beatport_metadata.txt")
        },
        ["giantsteps-mtg-key/audio", "giantsteps-key/audio", "giantsteps-key/annotations/key"],
    ),
    "emomusic": (
        {
            f"emomusic/{n}_reconstructed.csv": f"annotations/{n}.csv"
            for n in ("static_annotations", "songs_info")
        },
        ["clips_45seconds"],
    ),
}


def _append_to_line(path: Path, line: int, extra: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] += extra
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize("name", sorted(_ANNOTATIONS))
def test_an_annotation_file_that_is_not_utf8_is_named_with_its_line(name, tmp_path):
    """The published files, one with a Latin-1 "é" (an artist's name re-saved by an older
    editor) on line 3: the error names the file and line, and says to re-save it as UTF-8."""
    files, folders = _ANNOTATIONS[name]
    for folder in folders:
        (tmp_path / folder).mkdir(parents=True)
    for published, copy in files.items():
        (tmp_path / copy).parent.mkdir(parents=True, exist_ok=True)
        head = b"\n".join((SHARED / published).read_bytes().split(b"\n")[:2000])  # fast
        (tmp_path / copy).write_bytes(codecs.BOM_UTF8 + head)
    spec = DATASETS[name]
    spec.list_tracks(tmp_path, spec.split_modes[0], 0)  # a byte-order mark is fine
    _append_to_line(tmp_path / copy, 3, "é".encode("latin-1"))
    with pytest.raises(common.NotUtf8Error) as error:
        spec.list_tracks(tmp_path, spec.split_modes[0], 0)
    assert str(error.value).startswith(
        f"{tmp_path / copy}, line 3: not UTF-8 text (byte 0xe9; Latin-1 from an older Excel"
    )
    assert "re-save it as UTF-8" in str(error.value)


def test_the_demo_metadata_and_a_giantsteps_key_file_that_are_not_utf8(tmp_path):
    """The demo's metadata.csv stops the listing; one track's .key file is skipped with the
    reason, like a key label that does not parse."""
    (tmp_path / "metadata.csv").write_bytes(
        ",".join(METADATA_COLUMNS).encode() + b"\ndemo0,audio/demo0.wav,train,Beyonc\xe9\n"
    )
    with pytest.raises(common.NotUtf8Error, match=r"metadata.csv, line 2: not UTF-8 text"):
        DATASETS["demo"].list_tracks(tmp_path, "metadata", 0)
    key_dir = tmp_path / "key"
    key_dir.mkdir()
    (key_dir / "1.LOFI.key").write_text("C minor")
    (key_dir / "2.LOFI.key").write_bytes(b"C minor \xe9")
    keys, skipped = giantsteps_key.read_test_keys(key_dir)
    assert keys == [("1", KEY_NAMES.index("C minor"))]
    assert skipped == [
        (
            str(key_dir / "2.LOFI.key"),
            "line 1: not UTF-8 text (byte 0xe9; Latin-1 from an older Excel or editor?): re-save"
            " it as UTF-8 (Excel: CSV UTF-8), then run the build again",
        )
    ]


def _empty_split_message(spec, source: Path, listing: common.Listing) -> str | None:
    """What a build of `listing` says after listing (preparation._build's first check)."""
    counts = collections.Counter(track.split for track in listing.tracks)
    dropped = {"": listing.skipped}
    problem = common.empty_split_error(spec, source, counts, dropped, "listed", listing.split_hints)
    return problem and str(problem)


def test_gtzan_random_split_of_too_few_tracks_says_how_many_it_needs(tmp_path):
    """3 tracks a genre give no test track (2/1/0 each): a probe could not run on it."""
    for genre in gtzan.GENRES:
        for i in range(3):
            _touch(tmp_path / "genres" / genre / f"{genre}.{i:05d}.wav")
    listing = gtzan.list_tracks(tmp_path, "random", seed=0)
    assert _empty_split_message(gtzan.SPEC, tmp_path, listing) == (
        f"--source {tmp_path}: no test track listed (train 20, valid 10, test 0). A gtzan probe"
        " needs tracks in each of train, valid, test, so nothing was prepared: its random"
        " 70/15/15 split (--seed 0) gives each split a track of a genre from 6 tracks of it on"
        " (the largest genre here has 3; GTZAN has 100 each): add tracks, or put"
        f" train_filtered.txt, valid_filtered.txt, test_filtered.txt in {tmp_path} for the"
        " fault-filtered split"
    )
    for i in range(3, 6):  # one genre of 6 is enough
        _touch(tmp_path / "genres" / "rock" / f"rock.{i:05d}.wav")
    listing = gtzan.list_tracks(tmp_path, "auto", 0)
    assert collections.Counter(t.split for t in listing.tracks) == {
        "train": 22,
        "valid": 10,
        "test": 1,
    }
    assert _empty_split_message(gtzan.SPEC, tmp_path, listing) is None


def test_giantsteps_split_of_a_cut_down_annotations_file_says_what_it_needs(tmp_path):
    """The published annotations.txt cut to its first usable tracks: too few for valid under
    either split, and the message says why, in the terms of the split used."""
    train_root = tmp_path / "giantsteps-mtg-key-dataset"
    (train_root / "annotations").mkdir(parents=True)
    (train_root / "audio").mkdir()
    for path in (MTG_KEY / "annotations.txt", MTG_KEY / "beatport_metadata.txt"):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        (train_root / "annotations" / path.name).write_text("".join(lines[:3]))  # 2 tracks
    test_root = tmp_path / "giantsteps-key-dataset"
    key_file = sorted((SHARED / "giantsteps-key" / "annotations" / "key").glob("*.key"))[0]
    (test_root / "annotations" / "key").mkdir(parents=True)
    (test_root / "annotations" / "key" / key_file.name).write_bytes(key_file.read_bytes())
    _touch(test_root / "audio" / f"{key_file.name.split('.')[0]}.LOFI.mp3")  # one test track
    ids = [
        track_id
        for track_id, _ in giantsteps_key.read_mtg_annotations(
            train_root / "annotations" / "annotations.txt"
        )
    ]
    for track_id in ids:
        _touch(train_root / "audio" / f"{track_id}.LOFI.mp3")
    assert len(ids) == 2
    random = giantsteps_key.list_tracks(tmp_path, "random", seed=0)
    message = _empty_split_message(giantsteps_key.SPEC, tmp_path, random)
    assert message.startswith(f"--source {tmp_path}: no valid track listed (train 2, valid 0")
    assert message.endswith(
        "so nothing was prepared: the random 80/20 split (--seed 0) fills both from"
        f" {common.min_stratum_size(giantsteps_key.RANDOM_FRACTIONS)} usable tracks on, and"
        " annotations.txt has 2 (the MTG-key set: 1,159): add tracks"
    )
    by_artist = giantsteps_key.list_tracks(tmp_path, "artist", seed=0)
    message = _empty_split_message(giantsteps_key.SPEC, tmp_path, by_artist)
    assert message.startswith(f"--source {tmp_path}: no valid track listed (train 2, valid 0")
    assert message.endswith(
        "the artist split sends each artist to valid with odds of 16 in 116, so the 2 usable"
        " tracks of annotations.txt (the MTG-key set: 1,159) can fill one split alone: add"
        " tracks, or pass --split-mode random"
    )


@pytest.mark.parametrize(
    "fractions", [gtzan.RANDOM_FRACTIONS, giantsteps_key.RANDOM_FRACTIONS, {"a": 0.5, "b": 0.5}]
)
def test_min_stratum_size_is_where_every_split_starts_getting_a_key(fractions):
    def all_filled(size: int) -> bool:
        keys = [str(i) for i in range(size)]
        return set(common.stratified_split(keys, [""] * size, fractions, 0).values()) == set(
            fractions
        )

    smallest = common.min_stratum_size(fractions)
    assert not any(all_filled(size) for size in range(1, smallest))
    assert all(all_filled(size) for size in range(smallest, 120))

"""GiantSteps key estimation: train/valid from giantsteps-mtg-key, test from giantsteps-key.

The usual protocol (Korzeniowski & Widmer 2018; Castellon et al. 2021): keep the MTG-key
tracks annotated with confidence 2 and a single key (1,159 of 1,486), split them by artist
into train and valid (923 / 236), and test on the 604 GiantSteps key tracks. 24 classes,
sharps mapped to flats (keys.parse_key).

Artist split (JukeMIR's rule): every artist name (beatport_metadata.txt, comma-separated) is
hashed (SHA-1 of the lower-cased name) into 116 buckets, 100 train and 16 valid; then, twice
over all 1,486 tracks, every co-artist of a valid artist becomes valid, and a track is valid
when any of its artists is. On the published beatport_metadata.txt this gives JukeMIR's
923 / 236 track for track, and the two passes already reach the closure, so no artist has
tracks in both splits (docs/protocols.md).
Without beatport_metadata.txt the split falls back to a seeded random 80/20 (with a warning).
"""

from __future__ import annotations

from pathlib import Path

from myna_rpe_jax.data.datasets.common import (
    SPLITS,
    DatasetSpec,
    Listing,
    NotUtf8Error,
    Track,
    hash_bucket,
    layout_error,
    min_stratum_size,
    multiclass,
    present_or_missing,
    read_table,
    read_text,
    stratified_split,
)
from myna_rpe_jax.data.keys import KEY_NAMES, parse_key

TRAIN_FOLDERS = ("giantsteps-mtg-key-dataset", "giantsteps-mtg-key")
TEST_FOLDERS = ("giantsteps-key-dataset", "giantsteps-key")
# auto: by artist when beatport_metadata.txt is there, else random with a warning.
SPLIT_MODES = ("auto", "artist", "random")
ARTIST_BUCKETS, TRAIN_BUCKETS = 116, 100
RANDOM_FRACTIONS = {"train": 0.8, "valid": 0.2}

LAYOUT = """\
<source>/
├── giantsteps-mtg-key-dataset/          train + valid (or giantsteps-mtg-key/)
│   ├── annotations/annotations.txt      TSV: ID, MANUAL KEY, C (confidence)
│   ├── annotations/beatport_metadata.txt  TSV with ID, ARTIST (for the artist split)
│   └── audio/<ID>.LOFI.mp3
└── giantsteps-key-dataset/              test (or giantsteps-key/)
    ├── annotations/key/<ID>.LOFI.key    one key, e.g. "C minor"
    └── audio/<ID>.LOFI.mp3"""


def read_mtg_annotations(path: Path) -> list[tuple[str, int]]:
    """(ID, key class) of the confidence-2, single-key tracks of annotations.txt."""
    kept = []
    for row in read_table(path, ("ID", "MANUAL KEY", "C"), delimiter="\t"):
        if row["C"] != "2":
            continue
        try:
            kept.append((row["ID"], parse_key(row["MANUAL KEY"])))
        except ValueError:  # "F minor / G# major" and the like: several keys, not used
            continue
    return kept


def read_test_keys(key_dir: Path) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """(ID, key class) per <ID>.LOFI.key file, and (path, reason) for unreadable labels."""
    keys, skipped = [], []
    for path in sorted(key_dir.glob("*.key")):
        try:
            text = read_text(path).strip()
        except NotUtf8Error as err:  # one track's label: skipped, like one that does not parse
            skipped.append((str(path), str(err).removeprefix(f"{path}, ")))
            continue
        try:
            keys.append((path.name.split(".")[0], parse_key(text)))
        except ValueError:
            skipped.append((str(path), f"cannot parse key label {text!r}"))
    return keys, skipped


def read_beatport_artists(path: Path) -> dict[str, list[str]]:
    """ID -> artist names (the ARTIST column, split at commas)."""
    return {
        row["ID"]: [name.strip() for name in row["ARTIST"].split(",") if name.strip()]
        for row in read_table(path, ("ID", "ARTIST"), delimiter="\t")
    }


def artist_split(track_ids: list[str], artists: dict[str, list[str]]) -> dict[str, str]:
    """train/valid per track id by hashed artist, closed over collaborations (module doc)."""

    def names(track_id: str) -> list[str]:
        return artists.get(track_id) or [f"id:{track_id}"]

    every_track = sorted(set(artists) | set(track_ids))
    split_of = {
        name: "train" if hash_bucket(name.lower(), ARTIST_BUCKETS) < TRAIN_BUCKETS else "valid"
        for track_id in every_track
        for name in names(track_id)
    }
    for _ in range(2):
        for track_id in every_track:
            if any(split_of[name] == "valid" for name in names(track_id)):
                split_of.update({name: "valid" for name in names(track_id)})
    return {
        track_id: "valid" if any(split_of[n] == "valid" for n in names(track_id)) else "train"
        for track_id in track_ids
    }


def _find(source: Path, folders: tuple[str, ...], required: str) -> Path | None:
    return next((source / f for f in folders if (source / f / required).exists()), None)


def list_tracks(source: Path, split_mode: str, seed: int) -> Listing:
    train_root = _find(source, TRAIN_FOLDERS, "annotations/annotations.txt")
    test_root = _find(source, TEST_FOLDERS, "annotations/key")
    for root, what in ((train_root, TRAIN_FOLDERS[0]), (test_root, TEST_FOLDERS[0])):
        if root is None or not (root / "audio").is_dir():
            raise layout_error(
                "giantsteps_key", source, f"{what}/ is missing or incomplete", LAYOUT
            )
    metadata = train_root / "annotations" / "beatport_metadata.txt"
    if split_mode == "artist" and not metadata.is_file():
        raise layout_error("giantsteps_key", source, f"{metadata} is missing", LAYOUT)
    labelled = read_mtg_annotations(train_root / "annotations" / "annotations.txt")
    track_ids = [track_id for track_id, _ in labelled]
    notes = []
    if split_mode != "random" and metadata.is_file():
        assignment = artist_split(track_ids, read_beatport_artists(metadata))
        how = "by artist (beatport_metadata.txt)"
        hint = (
            f"the artist split sends each artist to valid with odds of"
            f" {ARTIST_BUCKETS - TRAIN_BUCKETS} in {ARTIST_BUCKETS}, so the {len(track_ids)}"
            " usable tracks of annotations.txt (the MTG-key set: 1,159) can fill one split"
            " alone: add tracks, or pass --split-mode random"
        )
    else:
        assignment = stratified_split(track_ids, [""] * len(track_ids), RANDOM_FRACTIONS, seed)
        how = f"random 80/20, seed {seed}"
        hint = (
            f"the random 80/20 split (--seed {seed}) fills both from"
            f" {min_stratum_size(RANDOM_FRACTIONS)} usable tracks on, and annotations.txt has"
            f" {len(track_ids)} (the MTG-key set: 1,159): add tracks"
        )
        if split_mode == "auto":
            notes.append(
                f"GiantSteps: {metadata} not found; train/valid split is random (80/20, seed "
                f"{seed}), so one artist may appear in both. Add beatport_metadata.txt from the "
                "giantsteps-mtg-key dataset for the usual artist split."
            )
    tracks = [
        Track(assignment[tid], tid, train_root / "audio" / f"{tid}.LOFI.mp3", {"key": key})
        for tid, key in labelled
    ]
    test_keys, skipped = read_test_keys(test_root / "annotations" / "key")
    tracks += [
        Track("test", tid, test_root / "audio" / f"{tid}.LOFI.mp3", {"key": key})
        for tid, key in test_keys
    ]
    present, missing = present_or_missing(tracks, "the key annotations")
    info = {"train_root": str(train_root), "test_root": str(test_root), "train_valid_split": how}
    hints = dict.fromkeys(("train", "valid"), hint)
    return Listing(present, skipped + missing, notes, info, split_hints=hints)


SPEC = DatasetSpec(
    name="giantsteps_key",
    description="GiantSteps key estimation (24 keys): MTG-key train/valid, GiantSteps test.",
    layout=LAYOUT,
    tasks={"key": multiclass("key", KEY_NAMES)},
    split_modes=SPLIT_MODES,
    list_tracks=list_tracks,
    required_splits=SPLITS,
)

"""GTZAN genre classification: the fault-filtered split, or a seeded stratified random split."""

from __future__ import annotations

import collections
import re
from pathlib import Path

from myna_rpe_jax.data.datasets.common import (
    SPLITS,
    DatasetSpec,
    Listing,
    Track,
    first_existing,
    layout_error,
    min_stratum_size,
    multiclass,
    present_or_missing,
    read_text,
    stratified_split,
)

GENRES = tuple(
    ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
)
LIST_FILES = {
    "train": "train_filtered.txt",
    "valid": "valid_filtered.txt",
    "test": "test_filtered.txt",
}
# auto: the filtered lists when <source> holds them, else the random split with a warning.
SPLIT_MODES = ("auto", "filtered", "random")
RANDOM_FRACTIONS = {"train": 0.7, "valid": 0.15, "test": 0.15}
_ENTRY = re.compile(r"^(?P<genre>[a-z]+)/(?P=genre)\.(?P<number>\d{5})\.(wav|au)$")
_FILE = re.compile(r"^(?P<genre>[a-z]+)\.(?P<number>\d{5})\.(wav|au)$")

LAYOUT = """\
<source>/
├── genres/                       (or Data/genres_original/, the Kaggle copy)
│   ├── blues/blues.00000.wav     (.wav or .au), 100 per genre
│   └── ... 10 genre folders: blues classical country disco hiphop jazz metal pop reggae rock
├── train_filtered.txt            the fault-filtered split (Kereliuk, Sturm & Larsen),
├── valid_filtered.txt            lines like blues/blues.00012.wav; without them: a
└── test_filtered.txt             stratified random split (70/15/15 per genre, --seed)"""


def read_split_list(path: Path) -> list[str]:
    """Track ids ("blues.00012") of a *_filtered.txt list (lines "blues/blues.00012.wav")."""
    track_ids = []
    for line_number, line in enumerate(read_text(path).splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        match = _ENTRY.match(entry)
        if match is None or match["genre"] not in GENRES:
            raise ValueError(
                f"{path}, line {line_number}: {entry!r} is not like blues/blues.00012.wav"
            )
        track_ids.append(f"{match['genre']}.{match['number']}")
    return track_ids


def _genre_root(source: Path) -> Path | None:
    candidates = (source / "genres", source / "Data" / "genres_original", source)
    return next(
        (root for root in candidates if any((root / genre).is_dir() for genre in GENRES)), None
    )


def _audio_path(root: Path, track_id: str) -> Path:
    genre = track_id.split(".")[0]
    candidates = [root / genre / f"{track_id}{ext}" for ext in (".wav", ".au")]
    return first_existing(candidates) or candidates[0]


def _track(split: str, root: Path, track_id: str) -> Track:
    genre = GENRES.index(track_id.split(".")[0])
    return Track(split, track_id, _audio_path(root, track_id), {"genre": genre})


def _all_track_ids(root: Path) -> list[str]:
    """Ids of every genre/<genre>.NNNNN.{wav,au} file under the genre root."""
    found = set()
    for genre in GENRES:
        folder = root / genre
        if folder.is_dir():
            for path in folder.iterdir():
                match = _FILE.match(path.name)
                if match and match["genre"] == genre:
                    found.add(f"{genre}.{match['number']}")
    return sorted(found)


def random_split_hint(source: Path, genres: list[str], seed: int) -> str:
    """What fills every split of the random split of a source this small (a probe needs
    all three): how many tracks a genre needs, how many the largest has."""
    largest = max(collections.Counter(genres).values(), default=0)
    return (
        f"its random 70/15/15 split (--seed {seed}) gives each split a track of a genre from"
        f" {min_stratum_size(RANDOM_FRACTIONS)} tracks of it on (the largest genre here has"
        f" {largest}; GTZAN has 100 each): add tracks, or put {', '.join(LIST_FILES.values())}"
        f" in {source} for the fault-filtered split"
    )


def list_tracks(source: Path, split_mode: str, seed: int) -> Listing:
    root = _genre_root(source)
    if root is None:
        raise layout_error("gtzan", source, "no genre folders (blues/, rock/, ...) found", LAYOUT)
    lists_present = [(source / name).is_file() for name in LIST_FILES.values()]
    if any(lists_present) and not all(lists_present):
        raise layout_error("gtzan", source, "only some of the three *_filtered.txt lists", LAYOUT)
    if split_mode == "filtered" and not all(lists_present):
        raise layout_error("gtzan", source, "--split-mode filtered needs the lists", LAYOUT)
    info = {"genre_root": str(root)}
    if split_mode != "random" and all(lists_present):
        tracks = [
            _track(split, root, track_id)
            for split, name in LIST_FILES.items()
            for track_id in read_split_list(source / name)
        ]
        present, missing = present_or_missing(tracks, "the *_filtered.txt lists")
        return Listing(present, missing, info={**info, "split": "fault-filtered"})
    track_ids = _all_track_ids(root)
    genres = [track_id.split(".")[0] for track_id in track_ids]
    assignment = stratified_split(track_ids, genres, RANDOM_FRACTIONS, seed)
    tracks = [_track(assignment[track_id], root, track_id) for track_id in track_ids]
    notes = []
    if split_mode == "auto":
        notes.append(
            f"GTZAN: {', '.join(LIST_FILES.values())} not found in {source}; using a stratified "
            f"random split (70/15/15 per genre, seed {seed}). Results are not comparable with "
            "published fault-filtered numbers: put the three lists in the source folder."
        )
    hints = dict.fromkeys(SPLITS, random_split_hint(source, genres, seed))
    return Listing(
        tracks, notes=notes, info={**info, "split": f"random, seed {seed}"}, split_hints=hints
    )


SPEC = DatasetSpec(
    name="gtzan",
    description="GTZAN genre classification (10 genres), fault-filtered split.",
    layout=LAYOUT,
    tasks={"genre": multiclass("genre", GENRES)},
    split_modes=SPLIT_MODES,
    list_tracks=list_tracks,
    required_splits=SPLITS,
)

"""EmoMusic (1000 Songs for Emotional Analysis of Music): static arousal and valence.

Protocol (JukeMIR, Castellon et al. 2021; MARBLE; Myna): the 744 annotated clips; the MediaEval
2013 "evaluation" set is test (125), the "development" set is split by artist 8:2 into train
(504) and valid (115). Split modes:
- "jukemir" (default): the split JukeMIR publishes, shipped as splits/emomusic_jukemir.tsv
  (song_id -> split; MIT, see splits/README.md).
- "artist": the same rule computed from songs_info.csv: the artist name, lower-cased with only
  ASCII letters and single spaces kept, is hashed (SHA-1) into 10 buckets, 8 train and 2 valid.
  On the published files it gives the JukeMIR split clip for clip (docs/protocols.md).
Labels are stored raw (the 1-9 scale means); the probe z-scores them with train statistics.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from myna_rpe_jax.data.datasets.common import (
    SPLITS,
    DatasetSpec,
    Listing,
    Track,
    hash_bucket,
    layout_error,
    present_or_missing,
    read_table,
    regression,
)

LAYOUT = """\
<source>/
├── clips_45seconds/<song_id>.mp3
└── annotations/                      (or the two CSVs directly in <source>)
    ├── static_annotations.csv        song_id,mean_arousal,std_arousal,mean_valence,std_valence
    └── songs_info.csv                song_id,file_name,Artist,...,Mediaeval 2013 set"""
SET_COLUMN = "Mediaeval 2013 set"
SPLIT_MODES = ("jukemir", "artist")
SPLIT_TABLE = "emomusic_jukemir.tsv"  # in myna_rpe_jax/data/datasets/splits/


def _song_id(text: str, where: str) -> str:
    try:
        return str(int(float(text)))
    except ValueError as err:
        raise ValueError(f"{where}: song_id {text!r} is not a number") from err


def read_static_annotations(path: Path) -> dict[str, tuple[float, float]]:
    """song_id -> (mean arousal, mean valence)."""
    annotations = {}
    for number, row in enumerate(read_table(path, ("song_id", "mean_arousal", "mean_valence")), 1):
        where = f"{path}, data row {number}"
        try:
            values = float(row["mean_arousal"]), float(row["mean_valence"])
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
        annotations[_song_id(row["song_id"], where)] = values
    return annotations


def read_songs_info(path: Path) -> dict[str, tuple[str, str]]:
    """song_id -> (artist, MediaEval 2013 set: "development" or "evaluation")."""
    rows = read_table(path, ("song_id", "Artist", SET_COLUMN))
    return {_song_id(row["song_id"], str(path)): (row["Artist"], row[SET_COLUMN]) for row in rows}


def normalize_artist(name: str) -> str:
    kept = "".join(c for c in name.lower() if ord(c) < 128 and (c.isalpha() or c.isspace()))
    return " ".join(kept.split())


def development_split(artist: str) -> str:
    """train or valid (8:2) for a development-set song, by its hashed artist."""
    return "train" if hash_bucket(normalize_artist(artist), 10) < 8 else "valid"


def parse_split_table(text: str, where: str) -> dict[str, str]:
    """song_id -> train/valid/test from a split table: "song_id<TAB>split" rows under a
    header row of that name; lines starting with "#" are comments."""
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    if not rows or [name.strip() for name in rows[0]] != ["song_id", "split"]:
        raise ValueError(f"{where}: expected a header row 'song_id<TAB>split' after the comments")
    table = {}
    for number, row in enumerate(rows[1:], 1):
        if len(row) != 2 or row[1].strip() not in ("train", "valid", "test"):
            raise ValueError(f"{where}, data row {number}: expected song_id<TAB>train|valid|test")
        table[_song_id(row[0].strip(), f"{where}, data row {number}")] = row[1].strip()
    return table


def jukemir_split() -> dict[str, str]:
    """song_id -> split of the JukeMIR split table shipped with the package (744 clips)."""
    table = importlib.resources.files("myna_rpe_jax.data.datasets").joinpath("splits", SPLIT_TABLE)
    return parse_split_table(table.read_text(encoding="utf-8"), str(table))


def _split_of(song_id: str, artist: str, mediaeval_set: str, table: dict | None) -> str | None:
    """The song's split (None: not in the table); ValueError if the table contradicts
    songs_info.csv about the test set, which the MediaEval 2013 set decides in every mode."""
    if table is None:
        return "test" if mediaeval_set == "evaluation" else development_split(artist)
    split = table.get(song_id)
    if split is not None and (split == "test") != (mediaeval_set == "evaluation"):
        raise ValueError(
            f"songs_info.csv puts song {song_id} in the MediaEval 2013 {mediaeval_set!r} set "
            f"but the JukeMIR split ({SPLIT_TABLE}) puts it in {split!r}: is songs_info.csv the "
            "published file? --split-mode artist splits from songs_info.csv alone."
        )
    return split


def list_tracks(source: Path, split_mode: str, seed: int) -> Listing:
    folder = next(
        (d for d in (source / "annotations", source) if (d / "static_annotations.csv").is_file()),
        None,
    )
    if folder is None or not (folder / "songs_info.csv").is_file():
        raise layout_error("emomusic", source, "annotation CSVs not found", LAYOUT)
    if not (source / "clips_45seconds").is_dir():
        raise layout_error("emomusic", source, "clips_45seconds/ is missing", LAYOUT)
    annotations = read_static_annotations(folder / "static_annotations.csv")
    songs = read_songs_info(folder / "songs_info.csv")
    table = jukemir_split() if split_mode == "jukemir" else None
    tracks, skipped = [], []
    for song_id, (arousal, valence) in annotations.items():
        path = source / "clips_45seconds" / f"{song_id}.mp3"
        if song_id not in songs:
            skipped.append((str(path), "no row in songs_info.csv (split unknown)"))
            continue
        split = _split_of(song_id, *songs[song_id], table)
        if split is None:
            skipped.append((str(path), f"not in the JukeMIR split ({SPLIT_TABLE})"))
            continue
        tracks.append(Track(split, song_id, path, {"arousal": arousal, "valence": valence}))
    present, missing = present_or_missing(tracks, "static_annotations.csv")
    how = (
        f"JukeMIR's published split ({SPLIT_TABLE})"
        if table is not None
        else "test = MediaEval 2013 evaluation set, train/valid 8:2 by hashed artist"
    )
    info = {"annotations": str(folder), "split": how}
    return Listing(present, skipped + missing, info=info)


SPEC = DatasetSpec(
    name="emomusic",
    description="EmoMusic static arousal/valence regression (raw 1-9 means).",
    layout=LAYOUT,
    tasks={"arousal": regression("arousal"), "valence": regression("valence")},
    split_modes=SPLIT_MODES,
    list_tracks=list_tracks,
    required_splits=SPLITS,
)

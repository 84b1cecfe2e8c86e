"""EmoMusic (1000 Songs for Emotional Analysis of Music): static arousal and valence.

Protocol (Castellon et al. 2021, used by Myna): the 744 annotated clips; the MediaEval 2013
"evaluation" set is test, the "development" set is split by artist 8:2 into train/valid:
the artist name, lower-cased with only ASCII letters and single spaces kept, is hashed
(SHA-1) into 10 buckets, 8 train and 2 valid. Labels are stored raw (the 1-9 scale means);
the probe z-scores them with train statistics.
"""

from __future__ import annotations

from pathlib import Path

from myna_rpe_jax.data.datasets.common import (
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
    tracks, skipped = [], []
    for song_id, (arousal, valence) in annotations.items():
        path = source / "clips_45seconds" / f"{song_id}.mp3"
        if song_id not in songs:
            skipped.append((str(path), "no row in songs_info.csv (split unknown)"))
            continue
        artist, mediaeval_set = songs[song_id]
        split = "test" if mediaeval_set == "evaluation" else development_split(artist)
        tracks.append(Track(split, song_id, path, {"arousal": arousal, "valence": valence}))
    present, missing = present_or_missing(tracks, "static_annotations.csv")
    return Listing(present, skipped + missing, info={"annotations": str(folder)})


SPEC = DatasetSpec(
    name="emomusic",
    description="EmoMusic static arousal/valence regression (raw 1-9 means).",
    layout=LAYOUT,
    tasks={"arousal": regression("arousal"), "valence": regression("valence")},
    split_modes=("artist",),
    list_tracks=list_tracks,
)

"""The generated demo music set (myna_rpe_jax.data.demo.music): genre, key, mood and tags."""

from __future__ import annotations

import itertools
from pathlib import Path

from myna_rpe_jax.data.datasets.common import (
    SPLITS,
    DatasetSpec,
    Listing,
    Track,
    layout_error,
    multi_hot,
    multiclass,
    multilabel,
    present_or_missing,
    read_table,
    regression,
)
from myna_rpe_jax.data.demo.music import DEMO_GENRES, DEMO_TAGS, METADATA_COLUMNS, track_spec
from myna_rpe_jax.data.keys import KEY_NAMES, parse_key

LAYOUT = """\
<source>/                 the out_dir of myna_rpe_jax.data.demo.music.generate_demo
├── metadata.csv          track_id,path,split,artist,genre,key,tempo_bpm,arousal,valence,tags
└── audio/<track_id>.wav"""

TASKS = {
    "genre": multiclass("genre", DEMO_GENRES),
    "key": multiclass("key", KEY_NAMES),
    "arousal": regression("arousal"),
    "valence": regression("valence"),
    "tags": multilabel("tags", DEMO_TAGS),
}


def _labels(row: dict[str, str], where: str) -> dict:
    if row["genre"] not in DEMO_GENRES:
        raise ValueError(f"{where}: genre {row['genre']!r} is not one of {DEMO_GENRES}")
    try:
        key, arousal, valence = parse_key(row["key"]), float(row["arousal"]), float(row["valence"])
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
    return {
        "genre": DEMO_GENRES.index(row["genre"]),
        "key": key,
        "arousal": arousal,
        "valence": valence,
        "tags": multi_hot([tag for tag in row["tags"].split("|") if tag], DEMO_TAGS, where),
    }


def _min_tracks_for_every_split() -> int:
    """The fewest generated tracks that hold train, valid and test (track i does not depend
    on the number generated)."""
    return next(
        count
        for count in itertools.count(1)
        if {track_spec(i).split for i in range(count)} >= set(SPLITS)
    )


def _missing_splits_note(tracks: list[Track], metadata: Path) -> list[str]:
    """A warning when a split has no track: training can use the set, a probe cannot."""
    empty = [split for split in SPLITS if not any(track.split == split for track in tracks)]
    if not empty:
        return []
    return [
        f"demo: no {' or '.join(empty)} track in {metadata} (or its audio is missing): training"
        " can use it, but a probe needs train, valid and test; generate at least"
        f" {_min_tracks_for_every_split()} tracks (python -m data_prep.make_demo --tracks)"
    ]


def list_tracks(source: Path, split_mode: str, seed: int) -> Listing:
    metadata = source / "metadata.csv"
    if not metadata.is_file():
        raise layout_error("demo", source, "metadata.csv is missing", LAYOUT)
    rows = read_table(metadata, METADATA_COLUMNS)
    tracks = []
    for number, row in enumerate(rows, start=1):
        where = f"{metadata}, data row {number}"
        if row["split"] not in SPLITS:
            raise ValueError(f"{where}: split {row['split']!r} is not one of {SPLITS}")
        tracks.append(
            Track(row["split"], row["track_id"], source / row["path"], _labels(row, where))
        )
    present, missing = present_or_missing(tracks, "metadata.csv")
    notes = _missing_splits_note(present, metadata)
    return Listing(present, missing, notes, info={"metadata": str(metadata)})


SPEC = DatasetSpec(
    name="demo",
    description="Generated demo music (myna_rpe_jax.data.demo.music): genre, key, mood, tags.",
    layout=LAYOUT,
    tasks=TASKS,
    split_modes=("metadata",),
    list_tracks=list_tracks,
)

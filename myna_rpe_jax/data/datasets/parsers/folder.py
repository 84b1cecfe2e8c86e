"""Any folder of audio files (your own music): no labels, one "train" split."""

from __future__ import annotations

from pathlib import Path

from myna_rpe_jax.data.datasets.common import (
    DatasetSpec,
    Listing,
    Track,
    layout_error,
    source_error,
)
from myna_rpe_jax.data.formats import is_audio, visible_files

LAYOUT = """\
<source>/                        any tree of audio files, e.g.
├── Artist/Album/01 Song.mp3     .wav .flac .ogg .opus .mp3 .aiff .au (.m4a/.aac need ffmpeg)
└── ...
Every file becomes one example of split "train"; its track_id is the path relative to
<source>. Hidden files and folders (names starting with ".") are ignored; other non-audio
files are listed in skipped.tsv."""


def list_tracks(source: Path, split_mode: str, seed: int) -> Listing:
    if problem := source_error("folder", source, LAYOUT):
        raise problem
    files = visible_files(source)
    if not files:
        raise layout_error("folder", source, "it holds no files", LAYOUT)
    tracks, skipped = [], []
    for path in files:
        if is_audio(path):
            tracks.append(Track("train", path.relative_to(source).as_posix(), path))
        else:
            skipped.append((str(path), f"not an audio file (extension {path.suffix or 'none'})"))
    return Listing(tracks, skipped, info={"audio_root": str(source)})


SPEC = DatasetSpec(
    name="folder",
    description="A folder of audio files without labels (e.g. your own music).",
    layout=LAYOUT,
    tasks={},
    split_modes=("all-train",),
    list_tracks=list_tracks,
)

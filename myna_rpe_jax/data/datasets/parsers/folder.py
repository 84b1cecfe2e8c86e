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
from myna_rpe_jax.data.formats import is_audio, track_ids, visible_files

LAYOUT = """\
<source>/                        any tree of audio files, e.g.
├── Artist/Album/01 Song.mp3     .wav .flac .ogg .opus .mp3 .aiff .au (.m4a/.aac need ffmpeg)
└── ...
Every file becomes one example of split "train"; its track_id is the path relative to
<source> without the extension ("Artist/Album/01 Song", as embed --audio and spotify match
name it; two files that differ only in extension keep it). Hidden files and folders (names
starting with ".") are ignored; other non-audio files are listed in skipped.tsv."""


def list_tracks(source: Path, split_mode: str, seed: int) -> Listing:
    if problem := source_error("folder", source, LAYOUT):
        raise problem
    files = visible_files(source)
    if not files:
        raise layout_error("folder", source, "it holds no files", LAYOUT)
    audio = [path for path in files if is_audio(path)]
    tracks = [
        Track("train", track_id, path)
        for track_id, path in zip(track_ids(source, audio), audio, strict=True)
    ]
    skipped = [
        (str(path), f"not an audio file (extension {path.suffix or 'none'})")
        for path in files
        if not is_audio(path)
    ]
    return Listing(tracks, skipped, info={"audio_root": str(source)})


SPEC = DatasetSpec(
    name="folder",
    description="A folder of audio files without labels (e.g. your own music).",
    layout=LAYOUT,
    tasks={},
    split_modes=("all-train",),
    list_tracks=list_tracks,
)

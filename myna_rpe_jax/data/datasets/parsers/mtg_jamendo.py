"""MTG-Jamendo auto-tagging, top-50 tags, with the published split files."""

from __future__ import annotations

import io
from pathlib import Path

from myna_rpe_jax.data.datasets.common import (
    SPLITS,
    DatasetSpec,
    Listing,
    Track,
    first_existing,
    layout_error,
    multi_hot,
    multilabel,
    present_or_missing,
    read_text,
)

# The published top-50 tags (data/tags_top50.txt), sorted; the train split file must carry
# exactly these, which the parser checks so a different file cannot silently shift labels.
TOP50_TAGS = (
    "genre---alternative",
    "genre---ambient",
    "genre---atmospheric",
    "genre---chillout",
    "genre---classical",
    "genre---dance",
    "genre---downtempo",
    "genre---easylistening",
    "genre---electronic",
    "genre---experimental",
    "genre---folk",
    "genre---funk",
    "genre---hiphop",
    "genre---house",
    "genre---indie",
    "genre---instrumentalpop",
    "genre---jazz",
    "genre---lounge",
    "genre---metal",
    "genre---newage",
    "genre---orchestral",
    "genre---pop",
    "genre---popfolk",
    "genre---poprock",
    "genre---reggae",
    "genre---rock",
    "genre---soundtrack",
    "genre---techno",
    "genre---trance",
    "genre---triphop",
    "genre---world",
    "instrument---acousticguitar",
    "instrument---bass",
    "instrument---computer",
    "instrument---drummachine",
    "instrument---drums",
    "instrument---electricguitar",
    "instrument---electricpiano",
    "instrument---guitar",
    "instrument---keyboard",
    "instrument---piano",
    "instrument---strings",
    "instrument---synthesizer",
    "instrument---violin",
    "instrument---voice",
    "mood/theme---emotional",
    "mood/theme---energetic",
    "mood/theme---film",
    "mood/theme---happy",
    "mood/theme---relaxing",
)
SPLIT_FILES = {
    "train": "autotagging_top50tags-train.tsv",
    "valid": "autotagging_top50tags-validation.tsv",
    "test": "autotagging_top50tags-test.tsv",
}
SPLIT_MODES = tuple(f"split-{i}" for i in range(5))
_COLUMNS = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")

LAYOUT = """\
<source>/                                      the MTG-Jamendo folder
├── data/splits/split-0/                       (or splits/split-0/, or split-0/)
│   ├── autotagging_top50tags-train.tsv
│   ├── autotagging_top50tags-validation.tsv
│   └── autotagging_top50tags-test.tsv
└── audio/00/ ... audio/99/                    audio/NN/ID.mp3 (or NN/ID.low.mp3 of the
                                               low-quality download, in audio/ or <source>)"""


def read_split_file(path: Path) -> list[tuple[str, str, list[str]]]:
    """(TRACK_ID, PATH, tags) per row of an autotagging TSV (tags are columns 6 onwards)."""
    rows = []
    lines = io.StringIO(read_text(path), newline=None)  # newline=None: as open() reads it
    header = lines.readline().rstrip("\n").split("\t")
    if tuple(header[: len(_COLUMNS)]) != _COLUMNS:
        raise ValueError(f"{path}: header {header} is not {list(_COLUMNS)}")
    for line_number, line in enumerate(lines, start=2):
        fields = line.rstrip("\n").split("\t")
        if len(fields) < len(_COLUMNS):
            if line.strip():
                raise ValueError(f"{path}, line {line_number}: expected >= 6 tab fields")
            continue
        rows.append((fields[0], fields[3], fields[5:]))
    return rows


def read_splits(split_dir: Path) -> dict[str, list[tuple[str, str, list[str]]]]:
    """All three split files of one split folder, checking the tag vocabulary."""
    splits = {split: read_split_file(split_dir / name) for split, name in SPLIT_FILES.items()}
    vocabulary = sorted({tag for _, _, tags in splits["train"] for tag in tags})
    if tuple(vocabulary) != TOP50_TAGS:
        raise ValueError(
            f"{split_dir / SPLIT_FILES['train']}: tags differ from the published top-50 "
            f"(extra {sorted(set(vocabulary) - set(TOP50_TAGS))}, "
            f"absent {sorted(set(TOP50_TAGS) - set(vocabulary))}); use the autotagging_top50tags "
            "split files"
        )
    return splits


def _find_split_dir(source: Path, split_mode: str) -> Path | None:
    for folder in (source / "data" / "splits", source / "splits", source):
        if (folder / split_mode / SPLIT_FILES["train"]).is_file():
            return folder / split_mode
    return None


def _audio_roots(source: Path) -> list[Path]:
    """Folders holding the NN/ sub-folders of the audio download."""
    return [
        root
        for root in (source / "audio", source)
        if root.is_dir() and any((root / f"{i:02d}").is_dir() for i in range(100))
    ]


def _resolve(roots: list[Path], relative: str) -> Path:
    """audio/NN/ID.mp3, or the low-quality NN/ID.low.mp3; the first root's .mp3 if neither."""
    low = relative[: -len(".mp3")] + ".low.mp3" if relative.endswith(".mp3") else relative
    candidates = [root / name for root in roots for name in (relative, low)]
    return first_existing(candidates) or candidates[0]


def list_tracks(source: Path, split_mode: str, seed: int) -> Listing:
    split_dir = _find_split_dir(source, split_mode)
    if split_dir is None:
        raise layout_error(
            "mtg_jamendo", source, f"no {split_mode}/{SPLIT_FILES['train']} found", LAYOUT
        )
    missing_files = [name for name in SPLIT_FILES.values() if not (split_dir / name).is_file()]
    if missing_files:
        raise layout_error("mtg_jamendo", source, f"{split_dir} lacks {missing_files}", LAYOUT)
    roots = _audio_roots(source)
    if not roots:
        raise layout_error("mtg_jamendo", source, "no audio/NN/ folders found", LAYOUT)
    tracks = []
    for split, rows in read_splits(split_dir).items():
        where = str(split_dir / SPLIT_FILES[split])
        for track_id, relative, tags in rows:
            labels = {"tags": multi_hot(tags, TOP50_TAGS, f"{where}, {track_id}")}
            tracks.append(Track(split, track_id, _resolve(roots, relative), labels))
    present, missing = present_or_missing(tracks, f"the {split_mode} split files")
    info = {"split_dir": str(split_dir), "audio_roots": [str(root) for root in roots]}
    return Listing(present, missing, info=info)


SPEC = DatasetSpec(
    name="mtg_jamendo",
    description="MTG-Jamendo auto-tagging, top-50 tags (multi-label), published splits.",
    layout=LAYOUT,
    tasks={"tags": multilabel("tags", TOP50_TAGS)},
    split_modes=SPLIT_MODES,
    list_tracks=list_tracks,
    required_splits=SPLITS,
)

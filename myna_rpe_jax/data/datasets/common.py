"""Pieces shared by the dataset parsers: task specs, track listings, layout errors, splits.

Nothing here imports TensorFlow: the parsers run in the build's worker processes and in tests
on the full published annotation files, so they stay plain Python.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import hashlib
import io
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from myna_rpe_jax.errors import UserError

SPLITS = ("train", "valid", "test")
# Other names users reach for; every reader and builder uses the three above.
SPLIT_ALIASES = {"validation": "valid", "val": "valid"}
TASK_KINDS = ("multiclass", "multilabel", "regression")


class TaskSpec(NamedTuple):
    """One downstream task of a dataset.

    kind: "multiclass" (label = class index), "multilabel" (label = multi-hot float32
    [num_outputs]) or "regression" (label = float, num_outputs 1). label_key names the field
    in each example; class_names is None for regression.
    """

    kind: str
    label_key: str
    num_outputs: int
    class_names: tuple[str, ...] | None = None


def multiclass(label_key: str, class_names: Sequence[str]) -> TaskSpec:
    return TaskSpec("multiclass", label_key, len(class_names), tuple(class_names))


def multilabel(label_key: str, class_names: Sequence[str]) -> TaskSpec:
    return TaskSpec("multilabel", label_key, len(class_names), tuple(class_names))


def regression(label_key: str) -> TaskSpec:
    return TaskSpec("regression", label_key, 1, None)


@dataclasses.dataclass(frozen=True)
class Track:
    """One annotated audio file: its split, id, path and encoded labels.

    labels maps each task's label_key to a class index (int), a float, or a multi-hot
    float32 array, as its TaskSpec says.
    """

    split: str
    track_id: str
    path: Path
    labels: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Listing:
    """What a parser found in a source folder.

    tracks: files present on disk, in a fixed order (the order of the prepared splits).
    skipped: (path, reason) for inputs that cannot become examples before any decoding,
      e.g. files the annotations name but the folder lacks.
    notes: warnings for the user (e.g. "split lists absent: random split").
    info: facts about the source recorded in the prepared dataset's metadata.
    split_hints: split -> what would give it tracks, for the message of a build that leaves it
      empty (`empty_split_error`), e.g. how many tracks a random split needs.
    """

    tracks: list[Track]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    split_hints: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        seen: dict[tuple[str, str], Path] = {}
        for track in self.tracks:
            if track.split not in SPLITS:
                raise ValueError(f"{track.path}: split {track.split!r} is not one of {SPLITS}")
            key = (track.split, track.track_id)
            if key in seen:
                raise ValueError(
                    f"track id {track.track_id!r} appears twice in split {track.split!r}: "
                    f"{seen[key]} and {track.path}; track ids must be unique in a split"
                )
            seen[key] = track.path


def present_or_missing(tracks: Iterable[Track], annotation: str) -> tuple[list[Track], list]:
    """Splits tracks into those whose file exists and (path, reason) for the others."""
    present, missing = [], []
    for track in tracks:
        if track.path.is_file():
            present.append(track)
        else:
            missing.append((str(track.path), f"missing: named in {annotation} but no such file"))
    return present, missing


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to read one published dataset layout.

    layout: the expected folder tree, shown in errors and docs.
    split_modes: accepted --split-mode values, the first is the default.
    list_tracks(source, split_mode, seed) -> Listing; raises LayoutError before any work
      when the folder does not match `layout`.
    required_splits: splits a build must give at least one track; a benchmark is probed
      on train, valid and test, so a build that would leave one empty stops.
    """

    name: str
    description: str
    layout: str
    tasks: Mapping[str, TaskSpec]
    split_modes: tuple[str, ...]
    list_tracks: Callable[[Path, str, int], Listing]
    required_splits: tuple[str, ...] = ()


class LayoutError(UserError, ValueError):
    """The source folder does not match a dataset's published layout (the message shows it).
    `problem`: what is wrong, without the layout, for callers that are not a build."""

    exit_code = 2  # a --source to correct, like a wrong flag

    def __init__(self, message: str, problem: str = ""):
        super().__init__(message)
        self.problem = problem or message


def layout_error(spec_name: str, source: Path, problem: str, layout: str) -> LayoutError:
    return LayoutError(
        f"{source} does not look like {_source_name(spec_name, 'a')}: {problem}.\n"
        f"Expected layout (the folder to pass is the one shown as <source>):\n{layout}",
        problem,
    )


def source_error(spec_name: str, source: Path, layout: str) -> LayoutError | None:
    """Why `source` cannot be read at all, or None: it does not exist, or it is a file."""
    if not source.exists():  # a typo or an unmounted disk: the layout would not help
        return LayoutError(
            f"--source {source} does not exist: pass the path of {_source_name(spec_name)}"
            " (check the spelling; python -m data_prep.build --help shows its layout)"
        )
    if not source.is_dir():
        return layout_error(spec_name, source, "it is not a directory", layout)
    return None


class NothingPreparedError(UserError, ValueError):
    """Not one track of the source folder could be used, so no dataset was written."""


def nothing_prepared_error(
    source: Path,
    undecodable: Sequence[tuple[str, str]],
    skipped: Sequence[tuple[str, str]],
) -> NothingPreparedError:
    """One line for a build in which every file failed: the folder, how many, the first
    reason (all usually share it: a wrong folder, a format that needs ffmpeg), what to do.

    undecodable: (path, reason) of the listed tracks that did not decode; skipped: those the
    listing left out. The example is a decoding failure when there is one (it says more than
    a stray cover.jpg)."""
    failed = [*undecodable, *skipped]
    what, example = "it lists no track", ""
    if failed:
        what = f"none of its {len(failed)} file(s) could be decoded"
        example = f" (e.g. {_first_failure(source, failed)})"
    return NothingPreparedError(
        f"--source {source}: {what}, so nothing was prepared{example}; check that it is the"
        " dataset's folder and that its files play (.m4a/.aac need ffmpeg), then run the build"
        " again"
    )


class EmptySplitError(UserError, ValueError):
    """A build would leave a split the dataset needs (DatasetSpec.required_splits) empty."""


def empty_split_error(
    spec: DatasetSpec,
    source: Path,
    counts: Mapping[str, int],
    dropped: Mapping[str, Sequence[tuple[str, str]]],
    what: str,
    hints: Mapping[str, str] | None = None,
) -> EmptySplitError | None:
    """Why a build of `spec` cannot go on, or None: a split it requires has no track.

    counts: usable tracks per split; dropped: split -> (path, reason) of its tracks left out,
    "" for those left out before they had a split (one is shown, as most share a cause: the
    first of an empty split, else the first in `dropped`'s order); what: how the tracks were
    counted ("listed", "decoded"); hints: split -> what would fill it
    (`Listing.split_hints`), said instead of the general advice when an empty split has one."""
    required = spec.required_splits
    empty = [split for split in required if not counts.get(split)]
    if not empty:
        return None
    found = ", ".join(f"{split} {counts.get(split, 0)}" for split in required)
    example = ""
    if failed := [drop for split in [*empty, *dropped] for drop in dropped.get(split, ())]:
        left_out = sum(map(len, dropped.values()))
        example = f"; {left_out} track(s) were left out, e.g. {_first_failure(source, failed)}"
    advice = next(
        (hints[split] for split in empty if split in (hints or {})),
        "check that --source holds the whole dataset (audio and annotation files), then run"
        " the build again",
    )
    return EmptySplitError(
        f"--source {source}: no {' or '.join(empty)} track {what} ({found}){example}. A"
        f" {spec.name} probe needs tracks in each of {', '.join(required)}, so nothing was"
        f" prepared: {advice}"
    )


def _first_failure(source: Path, failed: Sequence[tuple[str, str]]) -> str:
    """The first (path, reason) as `path relative to source: reason`, on one line and cut at
    160 characters; all usually share their cause."""
    path, reason = Path(failed[0][0]), " ".join(failed[0][1].split())
    shown = path.relative_to(source) if path.is_relative_to(source) else path
    return f"{shown}: {reason if len(reason) <= 160 else reason[:157] + '...'}"


def _source_name(name: str, article: str = "your") -> str:
    return f"{article} folder of audio files" if name == "folder" else f"{article} {name} folder"


def build_command(name: str, data_dir: str | Path = "<a new folder>", flags: str = "") -> str:
    """The data_prep.build command that prepares dataset `name` into data_dir (+ flags)."""
    command = (
        f"python -m data_prep.build --dataset {name} --source <{_source_name(name)}>"
        f" --data-dir {data_dir}"
    )
    return f"{command} {flags}" if flags else command


def first_existing(candidates: Iterable[Path]) -> Path | None:
    """The first candidate path that exists, or None."""
    return next((path for path in candidates if path.exists()), None)


class NotUtf8Error(UserError, ValueError):
    """An annotation or split file is not UTF-8 text (the message names the file and line)."""


def read_text(path: Path) -> str:
    """The text of a UTF-8 annotation file, without the byte-order mark Excel's "CSV UTF-8"
    writes (it would stick to the first column's name). Raises NotUtf8Error otherwise."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise NotUtf8Error(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}; Latin-1 from"
            " an older Excel or editor?): re-save it as UTF-8 (Excel: CSV UTF-8), then run the"
            " build again"
        ) from err


def read_table(path: Path, required: Sequence[str], delimiter: str = ",") -> list[dict[str, str]]:
    """Rows of a UTF-8 CSV/TSV file with a header, keys and values stripped of spaces and
    tabs. Raises ValueError naming the file when a required column is missing, NotUtf8Error
    when it is not UTF-8.
    """
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    header = [name.strip() for name in next(reader, [])]
    missing = [name for name in required if name not in header]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; found {header}. "
            "Is this the published file, unmodified?"
        )
    return [
        {name: value.strip() for name, value in zip(header, row, strict=False)}
        for row in reader
        if any(value.strip() for value in row)
    ]


def multi_hot(names: Iterable[str], vocabulary: Sequence[str], where: str) -> np.ndarray:
    """float32 [len(vocabulary)] with ones at `names`; ValueError naming `where` if unknown."""
    index = {name: i for i, name in enumerate(vocabulary)}
    out = np.zeros(len(vocabulary), dtype=np.float32)
    for name in names:
        if name not in index:
            raise ValueError(f"{where}: unknown tag {name!r} (known: {', '.join(vocabulary)})")
        out[index[name]] = 1.0
    return out


def hash_bucket(text: str, num_buckets: int) -> int:
    """A stable bucket in [0, num_buckets) from the SHA-1 of `text` (same on every machine)."""
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % num_buckets


def _stratum_bounds(size: int, fractions: Mapping[str, float]) -> np.ndarray:
    """Where each split ends among a stratum's `size` shuffled keys (cumulative, rounded)."""
    return np.round(np.cumsum(list(fractions.values())) * size).astype(int)


def min_stratum_size(fractions: Mapping[str, float]) -> int:
    """The fewest keys a stratum needs for stratified_split to give every split one."""
    return next(
        size
        for size in itertools.count(1)
        if all(np.diff(_stratum_bounds(size, fractions), prepend=0) > 0)
    )


def stratified_split(
    keys: Sequence[str], strata: Sequence[str], fractions: Mapping[str, float], seed: int
) -> dict[str, str]:
    """Assigns each key a split, with `fractions` of every stratum in each split.

    Within a stratum, keys are sorted then shuffled by `seed`, so the result depends only on
    the set of keys and the seed. Rounding follows the cumulative fractions, so each stratum
    of n keys gives round(n * cumulative fraction) boundaries (a small stratum may leave a
    split empty: min_stratum_size).
    """
    if abs(sum(fractions.values()) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must sum to 1, got {dict(fractions)}")
    by_stratum: dict[str, list[str]] = {}
    for key, stratum in zip(keys, strata, strict=True):
        by_stratum.setdefault(stratum, []).append(key)
    rng = np.random.default_rng(seed)
    assignment = {}
    for stratum in sorted(by_stratum):
        members = sorted(by_stratum[stratum])
        order = rng.permutation(len(members))
        start = 0
        for split, stop in zip(fractions, _stratum_bounds(len(members), fractions), strict=True):
            for i in order[start:stop]:
                assignment[members[i]] = split
            start = stop
    return assignment


def listing_fingerprint(tracks: Iterable[Track]) -> str:
    """SHA-1 of every track's split, id, file size and labels, in order: recorded with a
    prepared dataset, it tells whether another source folder holds the same tracks."""
    digest = hashlib.sha1()
    for track in tracks:
        labels = {key: np.asarray(value).tolist() for key, value in sorted(track.labels.items())}
        line = f"{track.split}\t{track.track_id}\t{track.path.stat().st_size}\t{labels}\n"
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()


def split_names_in_order(names: Iterable[str]) -> list[str]:
    """Split names sorted train, valid, test first, then any others alphabetically."""
    rank = {name: i for i, name in enumerate(SPLITS)}
    return sorted(names, key=lambda name: (rank.get(name, len(SPLITS)), name))


def canonical_split(split: str) -> str:
    """Maps "validation" and "val" to "valid"; other names unchanged."""
    return SPLIT_ALIASES.get(split, split)

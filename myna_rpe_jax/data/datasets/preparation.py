"""Building a dataset: check the layout, decode in parallel (stage 1), write shards (stage 2).

Stage 1 caches every track's log-mel under <data_dir>/_cache/myna_<name>/<config>/ (see
cache.py), so a killed build resumes where it stopped. Stage 2 runs the tfds builder, which
reads the cache and writes array_record shards in parallel (shards.py) plus skipped.tsv into
a temporary incomplete.* folder, renamed into place when whole. The cache is then removed.
Processes that share a data_dir build one dataset config one at a time (lock.py, on
<data_dir>/myna_<name>/<config>): a second one waits, then finds it prepared.
Disk: the cache is about 1.5 times the prepared dataset (which is zstd-compressed), so a
build needs about 2.5 times the prepared size free.
A dataset found prepared is only taken for the one asked for when --source is the folder it
was prepared from, or lists the same tracks (metadata.json keeps the source's path and a
fingerprint of its listing); otherwise the build stops (SourceMismatchError).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import shutil
import time
import warnings
from pathlib import Path

import tensorflow_datasets as tfds

from myna_rpe_jax import files
from myna_rpe_jax.data.audio import MelConfig
from myna_rpe_jax.data.datasets.builder import (
    DEFAULT_MEL,
    DEFAULT_MIN_SECONDS,
    FINGERPRINT_KEY,
    SKIPPED_FILE,
    SOURCE_TRACKS_KEY,
    cache_dir,
    make_builder,
    make_config,
)
from myna_rpe_jax.data.datasets.cache import (
    ERROR_SUFFIX,
    MEL_SUFFIX,
    check_unexpected,
    ensure_mels,
)
from myna_rpe_jax.data.datasets.common import (
    SPLITS,
    DatasetSpec,
    empty_split_error,
    listing_fingerprint,
    nothing_prepared_error,
    source_error,
    split_names_in_order,
)
from myna_rpe_jax.data.datasets.registry import get_spec
from myna_rpe_jax.data.lock import build_lock
from myna_rpe_jax.errors import UserError


class SourceMismatchError(UserError, ValueError):
    """--data-dir holds the dataset prepared from another source folder, with other tracks."""

    exit_code = 2  # --source, --data-dir or --overwrite to correct, like a wrong flag


@dataclasses.dataclass
class PrepareSummary:
    """What a build did (or found already done)."""

    name: str
    dataset_dir: Path
    already_prepared: bool
    split_sizes: dict[str, int]
    skipped: int
    hours: float
    wall_s: float
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def prepared(self) -> int:
        return sum(self.split_sizes.values())

    @property
    def skipped_tsv(self) -> Path:
        return self.dataset_dir / SKIPPED_FILE

    def describe(self) -> str:
        splits = ", ".join(f"{split} {count}" for split, count in self.split_sizes.items())
        head = "already prepared (use --overwrite to rebuild)" if self.already_prepared else "done"
        return "\n".join(
            [
                f"{self.name}: {head}",
                f"  tracks prepared: {self.prepared} ({splits})",
                f"  tracks skipped:  {self.skipped} (reasons in {self.skipped_tsv})",
                f"  audio:           {self.hours:.2f} h",
                f"  wall time:       {self.wall_s:.1f} s",
                f"  dataset:         {self.dataset_dir}",
                *(f"  note: {note}" for note in self.notes),
            ]
        )


def _metadata(builder) -> dict:
    return json.loads((Path(builder.data_dir) / "metadata.json").read_text(encoding="utf-8"))


def _summary(
    builder, already_prepared: bool, start: float, notes: list[str], metadata: dict | None = None
) -> PrepareSummary:
    """What `prepare` returns; metadata: the dataset's metadata.json, when already read."""
    dataset_dir = Path(builder.data_dir)
    metadata = metadata or _metadata(builder)
    splits = builder.info.splits
    return PrepareSummary(
        name=metadata["dataset"],
        dataset_dir=dataset_dir,
        already_prepared=already_prepared,
        split_sizes={s: splits[s].num_examples for s in split_names_in_order(splits)},
        skipped=metadata["num_skipped"],
        hours=metadata["hours"],
        wall_s=time.perf_counter() - start,
        notes=notes,
    )


def _remove_if_empty(*folders: Path) -> None:
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _drop_cache_without_mels(work: Path) -> None:
    """Removes a stage-1 folder that holds no log-mel (and its empty parents): it would save
    no work, and its cached failures would hide a fix (ffmpeg installed, files replaced)."""
    if work.is_dir() and not any(work.glob(f"*{MEL_SUFFIX}")):
        shutil.rmtree(work)
    _remove_if_empty(work.parent, work.parent.parent)


def prepare(
    name: str,
    source: str | Path,
    data_dir: str | Path,
    *,
    workers: int = 1,
    split_mode: str | None = None,
    seed: int = 0,
    mel: MelConfig = DEFAULT_MEL,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    keep_cache: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    num_shards: int | None = None,
) -> PrepareSummary:
    """Prepares dataset `name` from the user's folder `source` into `data_dir`.

    Returns at once when it is already prepared with these settings from this source
    (unless overwrite), and after waiting when another process is preparing it (then
    already_prepared is True); raises SourceMismatchError when it was prepared from
    another folder holding other tracks.
    workers: processes for decoding and for writing shards. num_shards: per split (at most
    one per example); by default tfds' choice for the split's size (64 MiB to 1 GiB each).
    Raises LayoutError before any work when `source` does not exist or does not match the
    published layout, ValueError when `data_dir` lies inside `source`, and EmptySplitError
    when a split the dataset requires (DatasetSpec.required_splits) would have no track.
    Unusable or missing files never stop the build: they are listed in skipped.tsv. A failure
    that is not the file's (cache.UnexpectedDecodeError: out of memory, a library bug) does,
    and so do files none of which decodes (NothingPreparedError, before tfds writes a thing).
    """
    start = time.perf_counter()
    spec = get_spec(name)
    config = make_config(name, mel, min_seconds, split_mode, seed)
    data_dir = Path(data_dir).expanduser().resolve()
    source = Path(source).expanduser().resolve()
    # Before looking for a prepared copy: a mistyped --source must not pass for the folder.
    if problem := source_error(name, source, spec.layout):
        raise problem
    if data_dir.is_relative_to(source):
        # Otherwise a later build would find the prepared files among the user's files.
        raise ValueError(f"--data-dir {data_dir} is inside --source {source}: put it elsewhere")
    builder = make_builder(name, data_dir, config)
    if _is_prepared(builder) and not overwrite:
        return _already_prepared(builder, spec, config, source, start)
    with build_lock(builder.data_path.parent):
        # A new builder sees what a process before us built.
        builder = make_builder(name, data_dir, config, workers=workers, progress=progress)
        if _is_prepared(builder) and not overwrite:
            return _already_prepared(builder, spec, config, source, start)
        options = dict(
            workers=workers, progress=progress, keep_cache=keep_cache, num_shards=num_shards
        )
        builder, notes = _build(builder, name, config, source, data_dir, overwrite, **options)
        return _summary(builder, False, start, notes)


def _already_prepared(builder, spec: DatasetSpec, config, source: Path, start) -> PrepareSummary:
    """The summary of a dataset found prepared, once `source` is known to be its source, with
    notes on what cannot be told and on splits a probe would miss."""
    metadata = _metadata(builder)
    notes = _source_notes(metadata, spec, config, source, Path(builder.data_dir_root))
    summary = _summary(builder, True, start, notes, metadata)
    # Every split, not spec.required_splits: the demo (tasks, nothing required, as training
    # needs only train) may be built without some; builds of older code may lack any.
    empty = [split for split in SPLITS if not summary.split_sizes.get(split)]
    if spec.tasks and empty:
        summary.notes.append(
            f"it has no {' or '.join(empty)} split, which a probe needs: rebuild it with"
            " --overwrite from a source that fills every split"
        )
    return summary


def _source_notes(metadata: dict, spec: DatasetSpec, config, source: Path, data_dir: Path):
    """Notes on `source` listing the tracks the dataset (its `metadata`) was prepared from:
    none when it is that folder and lists them still; one when another folder lists them (a
    moved copy) or when that cannot be told (nothing recorded by an older build).
    SourceMismatchError when it lists other tracks or splits, which the user would otherwise
    take for prepared: another folder, or the same one changed since (files added, or
    GTZAN's split lists put in, which `auto` then uses in place of a random split)."""
    recorded = metadata.get("source")
    if not recorded:
        return [
            "which folder it was prepared from is not recorded (its metadata.json has no"
            f" source): if not --source {source}, rebuild with --overwrite"
        ]
    same_folder = files.same_file(recorded, source)
    if FINGERPRINT_KEY not in metadata:
        return (
            []
            if same_folder
            else [
                f"it was prepared from {recorded}, not --source {source}, by an older build that"
                " kept no fingerprint of the tracks, so whether both hold the same tracks cannot"
                " be told: if not, rebuild with --overwrite (or use another --data-dir)"
            ]
        )
    listing = spec.list_tracks(source, config.split_mode, config.seed)
    if listing_fingerprint(listing.tracks) == metadata[FINGERPRINT_KEY]:
        return (
            []
            if same_folder
            else [f"prepared from {recorded}; --source {source} lists the same tracks"]
        )
    then = f"{metadata.get(SOURCE_TRACKS_KEY, '?')} tracks listed"
    now = f"{len(listing.tracks)} listed"
    if same_folder:  # say what changed in the parser's own terms, e.g. its split
        changed = [
            f"{key} {metadata.get(key)!r} then, {value!r} now"
            for key, value in listing.info.items()
            if metadata.get(key) != value
        ]
        what = f"{source} has changed since ({'; '.join([then + f', {now}', *changed])})"
    else:
        what = f"{recorded} ({then}), and --source {source} holds other tracks ({now})"
    raise SourceMismatchError(
        f"--data-dir {data_dir} already holds {spec.name} (config {config.name}) prepared"
        f" from {what}: pass --overwrite to rebuild it from {source}, or another --data-dir"
        " to keep both"
    )


def _is_prepared(builder) -> bool:
    # tfds writes into incomplete.* and renames the folder when done: this is never partial.
    return (builder.data_path / "dataset_info.json").exists()


def _build(
    builder, name, config, source, data_dir, overwrite, *, workers, progress, keep_cache, num_shards
):
    """Stages 1 and 2 of `prepare`, under its build lock: (the builder, the listing's notes)."""
    spec = get_spec(name)
    listing = spec.list_tracks(source, config.split_mode, config.seed)
    for note in listing.notes:
        warnings.warn(note, UserWarning, stacklevel=3)
    counts = collections.Counter(track.split for track in listing.tracks)
    hints = listing.split_hints
    if problem := empty_split_error(spec, source, counts, {"": listing.skipped}, "listed", hints):
        raise problem
    work = cache_dir(data_dir, name, config.name)
    paths = [track.path for track in listing.tracks]
    entries = ensure_mels(
        paths,
        work,
        config.mel,
        config.min_seconds,
        workers=workers,
        progress=progress,
        desc=f"{name}: decode + log-mel",
    )
    check_unexpected(paths, entries)
    undecodable = [(str(p), e.reason) for p, e in zip(paths, entries, strict=True) if not e.ok]
    if not any(entry.ok for entry in entries):
        _drop_cache_without_mels(work)
        raise nothing_prepared_error(source, undecodable, listing.skipped)
    decoded, dropped = collections.Counter(), {}
    for track, entry in zip(listing.tracks, entries, strict=True):
        if entry.ok:
            decoded[track.split] += 1
        else:
            dropped.setdefault(track.split, []).append((str(track.path), entry.reason))
    dropped[""] = listing.skipped  # last: a decoding failure says more than a stray cover.jpg
    if problem := empty_split_error(spec, source, decoded, dropped, "decoded", hints):
        # The log-mels stay for the next run; the cached failures go, or they would hide a fix.
        for failure in work.glob(f"*{ERROR_SUFFIX}"):
            failure.unlink()
        raise problem
    for stale in builder.data_path.parent.glob("incomplete.*"):  # from a build killed in tfds
        shutil.rmtree(stale)
    if overwrite and builder.data_path.exists():
        # Only now, with the layout checked and the mels cached, is the old copy given up.
        shutil.rmtree(builder.data_path)
        builder = make_builder(name, data_dir, config, workers=workers, progress=progress)
    builder.download_and_prepare(
        download_dir=work / "downloads",
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=str(source), num_shards=num_shards),
    )
    if not keep_cache:
        shutil.rmtree(work)
        _remove_if_empty(work.parent, work.parent.parent)
    return builder, listing.notes

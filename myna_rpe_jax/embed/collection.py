"""Embedding a collection: a folder of audio files or a prepared dataset, as one `Embeddings`.

Files that cannot be decoded are reported and skipped; decoding runs in threads ahead of the
encoder, a window of tracks at a time.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from myna_rpe_jax import files
from myna_rpe_jax.data.audio import AudioError, MelConfig, audio_to_mel
from myna_rpe_jax.data.datasets import dataset_tasks
from myna_rpe_jax.data.datasets.common import LayoutError
from myna_rpe_jax.data.datasets.common import build_command as datasets_build_command
from myna_rpe_jax.data.datasets.parsers.folder import list_tracks as list_folder
from myna_rpe_jax.data.formats import AUDIO_EXTENSIONS, track_ids
from myna_rpe_jax.embed.embedder import (
    DEFAULT_MAX_PADDING,
    DEFAULT_MAX_TOKENS,
    Embedder,
)
from myna_rpe_jax.embed.file import Embeddings
from myna_rpe_jax.errors import UserError
from myna_rpe_jax.model.attention import KERNELS
from myna_rpe_jax.run.checkpoints import describe_differences, mel_differences

log = logging.getLogger("myna_rpe_jax.embed")

# The MelConfig fields data_prep.build takes as flags (the others keep their defaults there).
_BUILD_FLAGS = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels")

# Tracks decoded or read ahead before embedding: bounds memory on folders of full tracks.
_WINDOW_TRACKS = 256
_WINDOW_FRAMES = 2**22  # ~1 GB of float16 mels at 128 bins


class MelMismatchError(ValueError):
    """A prepared dataset's log-mel settings are not those the model was trained on."""


def build_command(name: str, mel: MelConfig) -> str:
    """The data_prep.build command that prepares dataset `name` with the log-mel settings `mel`."""
    flags = " ".join(f"--{k.replace('_', '-')} {getattr(mel, k)}" for k in _BUILD_FLAGS)
    return datasets_build_command(name, flags=flags)


def check_dataset_mel(name: str, data_dir: str | Path, data: MelConfig, embedder: Embedder):
    """Raises MelMismatchError, with a one-line reason, unless dataset `name` in data_dir was
    prepared (`data`) with the features the embedder's model was trained on."""
    differences = mel_differences(embedder.mel_config, data)
    if not differences:
        return
    other = [k for k in differences if k not in _BUILD_FLAGS]
    extra = (
        f" ({', '.join(other)}: no build flag; call myna_rpe_jax.data.datasets.prepare with"
        " mel=MelConfig(**the run's features.json mel) instead)"
        if other
        else ""
    )
    raise MelMismatchError(
        f"{name} in {data_dir} was prepared with other log-mel settings than the model was"
        f" trained on ({embedder.mel_source}): {describe_differences(differences)}; prepare a"
        f" matching one with: {build_command(name, embedder.mel_config)}{extra}"
    )


@dataclasses.dataclass
class Track:
    """One input: its mel [n_mels, frames] (None if it could not be decoded) and labels."""

    track_id: str
    mel: np.ndarray | None
    split: str = ""
    labels: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None  # why mel is None: "path: reason"


def list_audio(path: str | Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """(track_id, file) for a file or every audio file under a folder, and ignored files.

    Track ids are paths relative to the folder without the extension (the stem for a single
    file); where two files differ only in extension, they keep it.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return [(path.stem, path)], []
    if not path.exists():
        raise FileNotFoundError(f"--audio {path}: no such file or folder")
    try:
        listing = list_folder(path, "all-train", 0)
    except LayoutError as err:  # its message explains a build's --source layout
        raise UserError(
            f"--audio {path}: {err.problem}; pass an audio file, or a folder with audio files"
            f" anywhere under it ({' '.join(sorted(AUDIO_EXTENSIONS))})"
        ) from err
    paths = [track.path for track in listing.tracks]
    files = list(zip(track_ids(path, paths), paths, strict=True))
    return files, [f"{file}: {reason}" for file, reason in listing.skipped]


def decode_audio(
    files: Sequence[tuple[str, Path]], mel_config: MelConfig, workers: int
) -> Iterator[Track]:
    """Tracks of `files` in order, decoded in `workers` threads, at most 2 * workers ahead."""

    def decode(track_id: str, file: Path) -> Track:
        try:
            mel, _ = audio_to_mel(file, mel_config)
        except AudioError as err:
            return Track(track_id, None, error=f"{file}: {err.reason}")
        return Track(track_id, mel)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending: collections.deque = collections.deque()
        for item in files:
            pending.append(pool.submit(decode, *item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def read_dataset(sources: Sequence[Any]) -> Iterator[Track]:
    """Tracks of prepared splits (`datasets.open_split` sources), with their labels."""
    for source in sources:
        for i in range(len(source)):
            example = source[i]
            mel, track_id = example.pop("mel"), example.pop("track_id")
            example.pop("duration_s")
            yield Track(track_id, mel, split=source.split, labels=example)


def _windows(tracks: Iterable[Track]) -> Iterator[list[Track]]:
    window, frames = [], 0
    for track in tracks:
        window.append(track)
        frames += 0 if track.mel is None else track.mel.shape[1]
        if len(window) >= _WINDOW_TRACKS or frames >= _WINDOW_FRAMES:
            yield window
            window, frames = [], 0
    if window:
        yield window


def embed_tracks(
    embedder: Embedder,
    tracks: Iterable[Track],
    mode: str,
    total: int | None = None,
    progress: bool = True,
) -> Embeddings:
    """Embeds tracks in windows of a few hundred; undecodable ones are logged and skipped."""
    ids, rows, splits, skipped = [], [], [], []
    labels: dict[str, list] = collections.defaultdict(list)
    bar = tqdm(total=total, unit="track", desc=f"embed ({mode})", disable=not progress)
    with logging_redirect_tqdm(), bar:  # skip warnings print above the bar, not through it
        for window in _windows(tracks):
            good = [track for track in window if track.mel is not None]
            for track in window:
                if track.mel is None:
                    log.warning("skipped %s", track.error)
                    skipped.append(track.error)
            bar.update(len(window) - len(good))
            if good:
                rows.append(embedder.embed([t.mel for t in good], mode, bar.update))
            for track in good:
                ids.append(track.track_id)
                splits.append(track.split)
                for key, value in track.labels.items():
                    labels[key].append(value)
    if not ids:
        raise ValueError(f"no track could be embedded ({len(skipped)} skipped)")
    return Embeddings(
        ids,
        np.concatenate(rows).astype(np.float32),
        splits,
        {key: np.asarray(values) for key, values in labels.items()},
        skipped,
        {},
    )


def run_meta(workdir: str | Path, step: int, mode: str, config, embedder: Embedder) -> dict:
    """The meta record of an embedding file: which checkpoint, mode and model made it."""
    return {
        "workdir": str(Path(workdir).absolute()),
        "checkpoint": str(Path(workdir).absolute() / "checkpoints" / str(step)),
        "step": step,
        "mode": mode,
        "chunk_frames": embedder.chunk_frames if mode == "chunks" else None,
        "config": json.loads(config.to_json_best_effort()),
    }


def save_parquet(path: str | Path, result: Embeddings) -> Path:
    """One row per track: track_id, split, embedding (list<float32>[D]), label_* columns;
    the meta JSON is stored in the schema metadata under b"meta". Replaces `path` whole
    (`files.atomic_path`), as save_npz does."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = result.embeddings.shape[1]
    columns = {
        "track_id": pa.array(result.track_ids, pa.string()),
        "split": pa.array(result.split, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(result.embeddings.reshape(-1), dim),
    }
    for key, value in result.labels.items():
        columns[f"label_{key}"] = pa.array(list(value) if value.ndim > 1 else value)
    table = pa.table(columns)
    meta = json.dumps({**result.meta, "skipped": result.skipped})
    table = table.replace_schema_metadata({b"meta": meta.encode("utf-8")})
    with files.atomic_path(path) as partial:  # readers and concurrent writers see it whole
        pq.write_table(table, partial)
    return Path(path)


def dataset_embeddings(
    embedder: Embedder,
    name: str,
    data_dir: str | Path,
    mode: str,
    splits: Sequence[str] | None = None,
    progress: bool = True,
) -> Embeddings:
    """Embeds the prepared splits (default: all) of dataset `name` in `data_dir`.

    Refuses (MelMismatchError) a dataset prepared with other log-mel settings than the model's.
    """
    from myna_rpe_jax.data import datasets  # imports TensorFlow Datasets

    splits = splits or datasets.available_splits(name, data_dir)
    sources = [datasets.open_split(name, data_dir, split) for split in splits]
    mel_config = sources[0].mel_config
    check_dataset_mel(name, data_dir, mel_config, embedder)
    result = embed_tracks(
        embedder, read_dataset(sources), mode, sum(map(len, sources)), progress=progress
    )
    tasks = dataset_tasks(name)
    result.meta.update(
        dataset=name,
        data_dir=str(Path(data_dir).absolute()),
        splits=list(splits),
        mel=dataclasses.asdict(mel_config),
        mel_source=embedder.mel_source,  # the dataset's own settings are the same (checked)
        labels={
            spec.label_key: {"task": task, "kind": spec.kind, "class_names": spec.class_names}
            for task, spec in tasks.items()
        },
    )
    return result


def audio_embeddings(
    embedder: Embedder, path: str | Path, mode: str, workers: int = 2, progress: bool = True
) -> Embeddings:
    """Embeds an audio file or every audio file under a folder (split "", no labels), with
    mels computed as the model's training data was."""
    files, ignored = list_audio(path)
    if ignored and not files:
        raise UserError(
            f"--audio {path}: no audio file under it, only {len(ignored)} other file(s), e.g."
            f" {ignored[0]}; audio files end in {' '.join(sorted(AUDIO_EXTENSIONS))}"
        )
    if ignored:
        log.info("ignored %d non-audio file(s), e.g. %s", len(ignored), ignored[0])
    tracks = decode_audio(files, embedder.mel_config, workers)
    result = embed_tracks(embedder, tracks, mode, len(files), progress=progress)
    result.meta.update(
        audio=str(Path(path).absolute()),
        mel=dataclasses.asdict(embedder.mel_config),
        mel_source=embedder.mel_source,
    )
    return result


def console_logging() -> None:
    """Plain INFO messages from this package on stderr, for the command-line entry points.

    force=True replaces the bare root handler that absl installs when a library logs through
    it at import time (orbax does), which would otherwise hide INFO and prefix every line.
    """
    logging.basicConfig(format="%(message)s", force=True)
    logging.getLogger("myna_rpe_jax").setLevel(logging.INFO)


def add_embedder_flags(parser: argparse.ArgumentParser) -> None:
    """--max-tokens, --max-padding, --attention-kernel and --tile-skip, the Embedder's settings
    (embed and probe take them all; `embedder_settings` reads them back)."""
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        help="tokens per device and forward pass",
    )
    parser.add_argument(
        "--max-padding",
        type=float,
        default=DEFAULT_MAX_PADDING,
        help="pad full tracks by at most this fraction of their length into shared length"
        " buckets, masked out (fewer compilations; 0: every length exact)",
    )
    parser.add_argument(
        "--attention-kernel",
        choices=KERNELS,
        help="attention over long tracks: xla (blockwise), pallas (one fused GPU kernel) or auto"
        " (pallas for ALiBi models on a GPU, else xla); default: the run's"
        " config.model.attention_kernel. The embeddings are the same",
    )
    parser.add_argument(
        "--tile-skip",
        choices=("on", "off", "auto"),
        help="exact ALiBi tile skipping in long tracks' attention: on, off, or auto (the fused"
        " kernel skips, blockwise does not); default: the run's config.model.alibi_tile_skip,"
        " auto where unset. The same embeddings, another speed (docs/benchmarks.md)",
    )


def check_embedder_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors (exit 2) for values of `add_embedder_flags`' flags that mean nothing."""
    if args.max_tokens < 1:
        parser.error(f"--max-tokens must be >= 1, got {args.max_tokens}")
    if not 0.0 <= args.max_padding < 1.0:
        parser.error(f"--max-padding must be in [0, 1), got {args.max_padding}")
    if args.attention_kernel == "pallas" and jax.default_backend() != "gpu":
        print(
            f"note: --attention-kernel pallas on {jax.default_backend()} runs the fused kernel in"
            " Pallas interpret mode: the same embeddings, many times slower (auto takes xla"
            " here)",
            file=sys.stderr,
        )


def embedder_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `load_embedder` that `add_embedder_flags` set."""
    return dict(
        max_tokens=args.max_tokens,
        max_padding=args.max_padding,
        attention_kernel=args.attention_kernel,
        alibi_tile_skip={None: None, "auto": "auto", "on": True, "off": False}[args.tile_skip],
    )

"""tfds builders: one GeneratorBasedBuilder per dataset, writing array_record files.

The builder reads the user's folder as tfds' `manual_dir` and takes each track's log-mel from
the stage-1 cache (cache.py), computing any track the cache lacks, so it also works alone.
Prepared data lands in `<data_dir>/myna_<name>/<config>/<version>/`; the `myna_` prefix keeps
clear of tfds' own registered datasets (tfds has a `gtzan` that would try to download), and
the classes are never registered with tfds, so nothing resolves them by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from tensorflow_datasets.core import file_adapters

from myna_rpe_jax.data.audio import MelConfig
from myna_rpe_jax.data.datasets.cache import check_unexpected, ensure_mels, load_mel
from myna_rpe_jax.data.datasets.common import DatasetSpec, Track, split_names_in_order
from myna_rpe_jax.data.datasets.parsers import (
    demo,
    emomusic,
    folder,
    giantsteps_key,
    gtzan,
    mtg_jamendo,
)
from myna_rpe_jax.data.datasets.registry import get_spec

DATA_VERSION = "1.0.0"
DEFAULT_CONFIG = "default"
DEFAULT_MEL = MelConfig()
DEFAULT_MIN_SECONDS = 1.0
SKIPPED_FILE = "skipped.tsv"
# zstd level 1, not tfds' level 3: a 30 s clip's float16 log-mel compresses to 494 KB instead
# of 478 KB (of 768), and writing it costs 1.4 ms instead of 3.7 (docs/benchmarks.md).
ARRAY_RECORD_OPTIONS = "group_size:1,zstd:1"
CACHE_FOLDER = "_cache"
_MEL_ABBREVIATIONS = {
    "sample_rate": "sr",
    "n_fft": "fft",
    "win_length": "win",
    "hop_length": "hop",
    "n_mels": "mels",
    "fmin": "fmin",
    "fmax": "fmax",
    "top_db": "topdb",
}


@dataclasses.dataclass(eq=False)
class MynaConfig(tfds.core.BuilderConfig):
    """Everything that changes the prepared data: features, minimum length, split choice."""

    mel: MelConfig = DEFAULT_MEL
    min_seconds: float = DEFAULT_MIN_SECONDS
    split_mode: str = ""
    seed: int = 0


def tfds_name(name: str) -> str:
    """The tfds builder name (and data folder) of dataset `name`."""
    return f"myna_{name}"


def _short(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def config_name(
    spec: DatasetSpec, mel: MelConfig, min_seconds: float, split_mode: str, seed: int
) -> str:
    """The config name: "default", or what differs from it, e.g. "sr22050-mels64-random-seed3"."""
    parts = [
        f"{_MEL_ABBREVIATIONS[field.name]}{_short(getattr(mel, field.name))}"
        for field in dataclasses.fields(MelConfig)
        if getattr(mel, field.name) != field.default
    ]
    if min_seconds != DEFAULT_MIN_SECONDS:
        parts.append(f"min{min_seconds:g}s")
    if split_mode != spec.split_modes[0]:
        parts.append(split_mode)
    if seed != 0:
        parts.append(f"seed{seed}")
    return "-".join(parts) or DEFAULT_CONFIG


def make_config(
    name: str,
    mel: MelConfig = DEFAULT_MEL,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    split_mode: str | None = None,
    seed: int = 0,
) -> MynaConfig:
    spec = get_spec(name)
    split_mode = split_mode or spec.split_modes[0]
    if split_mode not in spec.split_modes:
        raise ValueError(
            f"--split-mode {split_mode!r} is not valid for {name}; choose from {spec.split_modes}"
        )
    return MynaConfig(
        name=config_name(spec, mel, min_seconds, split_mode, seed),
        description=f"{name} with {mel}, min_seconds={min_seconds}, split {split_mode}",
        mel=mel,
        min_seconds=min_seconds,
        split_mode=split_mode,
        seed=seed,
    )


def cache_dir(data_dir: str | Path, name: str, config: str) -> Path:
    """The stage-1 work folder: <data_dir>/_cache/myna_<name>/<config>/."""
    return Path(data_dir) / CACHE_FOLDER / tfds_name(name) / config


def _label_features(spec: DatasetSpec) -> dict:
    features = {}
    for task in spec.tasks.values():
        if task.kind == "multiclass":
            features[task.label_key] = tfds.features.ClassLabel(names=task.class_names)
        elif task.kind == "multilabel":
            features[task.label_key] = tfds.features.Tensor(
                shape=(task.num_outputs,), dtype=np.float32
            )
        else:
            features[task.label_key] = tfds.features.Scalar(dtype=np.float32)
    return features


class MynaBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base builder; subclasses set SPEC. Construct with make_builder()."""

    SPEC: DatasetSpec
    VERSION = tfds.core.Version(DATA_VERSION)
    RELEASE_NOTES = {DATA_VERSION: "First release."}

    def __init_subclass__(cls, **kwargs):
        # Never registered with tfds: nothing can resolve (or download) them by name.
        super().__init_subclass__(skip_registration=True, **kwargs)
        cls.name = tfds_name(cls.SPEC.name)
        cls.MANUAL_DOWNLOAD_INSTRUCTIONS = cls.SPEC.layout
        cls.BUILDER_CONFIGS = [make_config(cls.SPEC.name)]

    def _info(self) -> tfds.core.DatasetInfo:
        config: MynaConfig = self.builder_config
        features = {
            # Raw bytes: tfds' default encoding turns every float16 into a float32 proto entry,
            # which cost more than decoding and the log-mel together (150x slower, 2x larger).
            "mel": tfds.features.Tensor(
                shape=(config.mel.n_mels, None),
                dtype=np.float16,
                encoding=tfds.features.Encoding.BYTES,
            ),
            "track_id": tfds.features.Text(),
            "duration_s": tfds.features.Scalar(dtype=np.float32),
            **_label_features(self.SPEC),
        }
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.SPEC.description,
            features=tfds.features.FeaturesDict(features),
            # Examples keep the order of the published split files (and no shuffle buckets).
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(
                dataset=self.SPEC.name,
                mel=dataclasses.asdict(config.mel),
                min_seconds=config.min_seconds,
                split_mode=config.split_mode,
                seed=config.seed,
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        config: MynaConfig = self.builder_config
        source = Path(dl_manager.manual_dir)
        listing = self.SPEC.list_tracks(source, config.split_mode, config.seed)
        entries = ensure_mels(
            [track.path for track in listing.tracks],
            cache_dir(self.data_dir_root, self.SPEC.name, config.name),
            config.mel,
            config.min_seconds,
        )
        check_unexpected([track.path for track in listing.tracks], entries)
        self._skipped = list(listing.skipped)
        self._source_info = {"source": str(source), **listing.info}
        self._hours = 0.0
        by_split: dict[str, list[tuple[Track, str]]] = {}
        for track, entry in zip(listing.tracks, entries, strict=True):
            if entry.ok:
                by_split.setdefault(track.split, []).append((track, entry.file))
            else:
                self._skipped.append((str(track.path), entry.reason))
        if not by_split:
            reasons = "\n".join(f"  {path}: {reason}" for path, reason in self._skipped[:10])
            raise ValueError(f"no track of {source} could be prepared, e.g.:\n{reasons}")
        return {
            split: self._generate_examples(by_split[split])
            for split in split_names_in_order(by_split)
        }

    def _generate_examples(self, items: list[tuple[Track, str]]):
        n_mels = self.builder_config.mel.n_mels
        for index, (track, mel_file) in enumerate(items):
            mel, duration = load_mel(mel_file)
            if mel.shape[0] != n_mels:
                raise ValueError(f"cached {mel_file} has {mel.shape[0]} mel bins, not {n_mels}")
            self._hours += duration / 3600
            # Integer keys: with shuffling disabled tfds orders examples by key.
            yield (
                index,
                {
                    "mel": mel,
                    "track_id": track.track_id,
                    "duration_s": duration,
                    **track.labels,
                },
            )

    def _download_and_prepare(self, dl_manager, download_config) -> None:
        with _array_record_writer_options():
            super()._download_and_prepare(dl_manager, download_config)
        # self.data_path is still tfds' temporary folder here, renamed into place on success.
        write_skipped(self.data_path / SKIPPED_FILE, self._skipped, Path(dl_manager.manual_dir))
        self.info.metadata.update(
            num_skipped=len(self._skipped), hours=round(self._hours, 4), **self._source_info
        )


class _ArrayRecordAdapter(file_adapters.ArrayRecordFileAdapter):
    """tfds' array_record adapter, writing with ARRAY_RECORD_OPTIONS (tfds fixes its own).
    Reading is unchanged: array_record files name their compression in every chunk."""

    @classmethod
    def write_examples(cls, path, iterator) -> None:
        writer = array_record_module.ArrayRecordWriter(os.fspath(path), ARRAY_RECORD_OPTIONS)
        for _, serialized_example in iterator:
            writer.write(serialized_example)
        writer.close()


@contextlib.contextmanager
def _array_record_writer_options():
    """Within the block tfds writes array_record shards through `_ArrayRecordAdapter`.

    tfds looks its writer up in `file_adapters.ADAPTER_FOR_FORMAT` when it writes a shard and
    offers no option for the compression; the entry is restored on the way out.
    """
    formats, key = file_adapters.ADAPTER_FOR_FORMAT, file_adapters.FileFormat.ARRAY_RECORD
    saved = formats[key]
    formats[key] = _ArrayRecordAdapter
    try:
        yield
    finally:
        formats[key] = saved


def write_skipped(path: Path, skipped: list[tuple[str, str]], source: Path) -> None:
    """skipped.tsv: header `path<TAB>reason`, paths relative to the source folder."""
    lines = ["path\treason"]
    for file, reason in skipped:
        relative = Path(file).relative_to(source) if Path(file).is_relative_to(source) else file
        lines.append(f"{relative}\t{' '.join(reason.split())}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


class MynaFolder(MynaBuilder):
    SPEC = folder.SPEC


class MynaDemo(MynaBuilder):
    SPEC = demo.SPEC


class MynaMtgJamendo(MynaBuilder):
    SPEC = mtg_jamendo.SPEC


class MynaGtzan(MynaBuilder):
    SPEC = gtzan.SPEC


class MynaGiantstepsKey(MynaBuilder):
    SPEC = giantsteps_key.SPEC


class MynaEmomusic(MynaBuilder):
    SPEC = emomusic.SPEC


BUILDERS: dict[str, type[MynaBuilder]] = {
    cls.SPEC.name: cls
    for cls in (MynaFolder, MynaDemo, MynaMtgJamendo, MynaGtzan, MynaGiantstepsKey, MynaEmomusic)
}


def make_builder(name: str, data_dir: str | Path, config: MynaConfig) -> MynaBuilder:
    """The builder of dataset `name` for `config`, reading/writing under `data_dir`."""
    cls = BUILDERS[get_spec(name).name]
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    # tfds logs a warning for every config not predefined in the class: all but "default" here.
    absl_logger.setLevel(logging.ERROR)
    try:
        # tfds refuses a custom config named like a predefined one: name the predefined one.
        return cls(
            data_dir=str(data_dir),
            config=DEFAULT_CONFIG if config.name == DEFAULT_CONFIG else config,
        )
    finally:
        absl_logger.setLevel(level)

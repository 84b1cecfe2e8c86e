"""tfds builders: one ShardBasedBuilder per dataset, writing array_record files.

The builder reads the user's folder as tfds' `manual_dir` and takes each track's log-mel from
the stage-1 cache (cache.py), computing any track the cache lacks, so it also works alone; it
writes the shards in `workers` processes (shards.py).
Prepared data lands in `<data_dir>/myna_<name>/<config>/<version>/`; the `myna_` prefix keeps
clear of tfds' own registered datasets (tfds has a `gtzan` that would try to download), and
the classes are never registered with tfds, so nothing resolves them by name.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils.shard_utils import ShardConfig

from myna_rpe_jax.data.audio import MelConfig
from myna_rpe_jax.data.datasets.cache import check_unexpected, ensure_mels
from myna_rpe_jax.data.datasets.common import (
    DatasetSpec,
    Track,
    listing_fingerprint,
    nothing_prepared_error,
    split_names_in_order,
)
from myna_rpe_jax.data.datasets.registry import DATASETS, get_spec
from myna_rpe_jax.data.datasets.shards import TFDS_SHARDS, ShardJob, plan_shards, write_shards

DATA_VERSION = "1.0.0"
DEFAULT_CONFIG = "default"
DEFAULT_MEL = MelConfig()
DEFAULT_MIN_SECONDS = 1.0
SKIPPED_FILE = "skipped.tsv"
# metadata.json keys beside "source": how many tracks its listing had, and their fingerprint.
SOURCE_TRACKS_KEY, FINGERPRINT_KEY = "source_tracks", "source_fingerprint"
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


def make_features(spec: DatasetSpec, mel: MelConfig) -> tfds.features.FeaturesDict:
    """What every example of `spec` holds: its log-mel, id, duration and labels."""
    return tfds.features.FeaturesDict(
        {
            # Raw bytes: tfds' default encoding turns every float16 into a float32 proto entry,
            # which cost more than decoding and the log-mel together (150x slower, 2x larger).
            "mel": tfds.features.Tensor(
                shape=(mel.n_mels, None), dtype=np.float16, encoding=tfds.features.Encoding.BYTES
            ),
            "track_id": tfds.features.Text(),
            "duration_s": tfds.features.Scalar(dtype=np.float32),
            **_label_features(spec),
        }
    )


class MynaBuilder(tfds.core.ShardBasedBuilder, skip_registration=True):
    """Base builder; subclasses set SPEC. Construct with make_builder()."""

    SPEC: DatasetSpec
    VERSION = tfds.core.Version(DATA_VERSION)
    RELEASE_NOTES = {DATA_VERSION: "First release."}
    workers = 1  # processes that write shards (make_builder sets it)
    progress = False

    def __init_subclass__(cls, **kwargs):
        # Never registered with tfds: nothing can resolve (or download) them by name.
        super().__init_subclass__(skip_registration=True, **kwargs)
        cls.name = tfds_name(cls.SPEC.name)
        cls.MANUAL_DOWNLOAD_INSTRUCTIONS = cls.SPEC.layout
        cls.BUILDER_CONFIGS = [make_config(cls.SPEC.name)]

    # tfds prints "Downloading and preparing dataset Unknown size ..." before a build and
    # "... downloaded and prepared to ..." after it. Nothing is downloaded here, and
    # `prepare` prints its own summary.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

    def _info(self) -> tfds.core.DatasetInfo:
        config: MynaConfig = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.SPEC.description,
            features=make_features(self.SPEC, config.mel),
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

    def _shard_iterators_per_split(
        self, dl_manager, shard_config: ShardConfig = TFDS_SHARDS
    ) -> dict[str, list[ShardJob]]:
        """Every split's shards, in order; a ShardJob is also tfds' per-shard example generator."""
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
        self._source_info = {
            "source": str(source),
            SOURCE_TRACKS_KEY: len(listing.tracks),
            FINGERPRINT_KEY: listing_fingerprint(listing.tracks),
            **listing.info,
        }
        by_split: dict[str, list[tuple[Track, str]]] = {}
        undecodable = []
        for track, entry in zip(listing.tracks, entries, strict=True):
            if entry.ok:
                by_split.setdefault(track.split, []).append((track, entry.file))
            else:
                undecodable.append((str(track.path), entry.reason))
        self._skipped = [*listing.skipped, *undecodable]
        if not by_split:  # only for this builder used alone: `prepare` stops before tfds
            raise nothing_prepared_error(source, undecodable, listing.skipped)
        jobs = {}
        for split in split_names_in_order(by_split):
            template = self._get_filename_template(split_name=split)
            items = by_split[split]
            jobs[split] = plan_shards(
                items,
                [Path(file).stat().st_size for _, file in items],  # ~ the serialised size
                config.mel.n_mels,
                lambda i, n, t=template: str(t.sharded_filepath(shard_index=i, num_shards=n)),
                shard_config,
            )
        return jobs

    def _download_and_prepare(self, dl_manager, download_config=None) -> None:
        # tfds' ShardBasedBuilder writes the same shards one after another in this process.
        download_config = download_config or tfds.download.DownloadConfig()
        jobs = self._shard_iterators_per_split(dl_manager, download_config.get_shard_config())
        flat = [job for split_jobs in jobs.values() for job in split_jobs]
        results = iter(
            write_shards(
                flat,
                self.info.features,
                workers=self.workers,
                progress=self.progress,
                desc=f"{self.SPEC.name}: write shards",
            )
        )
        infos, hours = [], 0.0
        for split, split_jobs in jobs.items():
            written = [next(results) for _ in split_jobs]
            hours += sum(result.hours for result in written)
            infos.append(
                tfds.core.SplitInfo(
                    name=split,
                    shard_lengths=[result.num_examples for result in written],
                    num_bytes=sum(result.num_bytes for result in written),
                    filename_template=self._get_filename_template(split_name=split),
                )
            )
        self.info.set_splits(tfds.core.SplitDict(infos))
        # self.data_path is still tfds' temporary folder here, renamed into place on success.
        write_skipped(self.data_path / SKIPPED_FILE, self._skipped, Path(dl_manager.manual_dir))
        self.info.metadata.update(
            num_skipped=len(self._skipped), hours=round(hours, 4), **self._source_info
        )


def write_skipped(path: Path, skipped: list[tuple[str, str]], source: Path) -> None:
    """skipped.tsv: header `path<TAB>reason`, paths relative to the source folder."""
    lines = ["path\treason"]
    for file, reason in skipped:
        relative = Path(file).relative_to(source) if Path(file).is_relative_to(source) else file
        lines.append(f"{relative}\t{' '.join(reason.split())}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _builder_class(spec: DatasetSpec) -> type[MynaBuilder]:
    """The builder class of `spec` (tfds keys a builder's configs and name on its class):
    e.g. MynaGiantstepsKey for giantsteps_key."""
    name = "Myna" + "".join(part.title() for part in spec.name.split("_"))
    return type(name, (MynaBuilder,), {"SPEC": spec, "__module__": __name__})


BUILDERS: dict[str, type[MynaBuilder]] = {
    name: _builder_class(spec) for name, spec in DATASETS.items()
}


def make_builder(
    name: str, data_dir: str | Path, config: MynaConfig, *, workers: int = 1, progress=False
) -> MynaBuilder:
    """The builder of dataset `name` for `config`, reading/writing under `data_dir`; it
    writes shards in `workers` processes."""
    cls = BUILDERS[get_spec(name).name]
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    # tfds logs a warning for every config not predefined in the class: all but "default" here.
    absl_logger.setLevel(logging.ERROR)
    try:
        # tfds refuses a custom config named like a predefined one: name the predefined one.
        builder = cls(
            data_dir=str(data_dir),
            config=DEFAULT_CONFIG if config.name == DEFAULT_CONFIG else config,
        )
    finally:
        absl_logger.setLevel(level)
    builder.workers, builder.progress = workers, progress
    return builder

"""Uniform random-access reading of prepared datasets (any of the six, same interface)."""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from myna_rpe_jax.data.audio import MelConfig
from myna_rpe_jax.data.datasets.builder import DEFAULT_CONFIG, tfds_name
from myna_rpe_jax.data.datasets.common import (
    TaskSpec,
    build_command,
    canonical_split,
    split_names_in_order,
)
from myna_rpe_jax.data.datasets.registry import get_spec


class DatasetNotPreparedError(FileNotFoundError):
    """The dataset has not been built in this data_dir (the message says how to build it)."""


def prepared_dir(name: str, data_dir: str | Path, config: str | None = None) -> Path:
    """The folder of a prepared dataset: <data_dir>/myna_<name>/<config>/<version>/.

    With several prepared configs and config=None, "default" is used when present.
    """
    get_spec(name)
    root = Path(data_dir).expanduser() / tfds_name(name)
    found: dict[str, list[Path]] = {}
    for info_file in root.glob("*/*/dataset_info.json"):
        if not info_file.parent.name.startswith("incomplete"):  # tfds' temporary folders
            found.setdefault(info_file.parent.parent.name, []).append(info_file.parent)
    if config is not None:
        found = {config: found[config]} if config in found else {}
    if not found:
        raise DatasetNotPreparedError(
            f"dataset {name!r}{'' if config is None else f' (config {config!r})'} is not "
            f"prepared in {Path(data_dir)} (no {root}/<config>/<version>/dataset_info.json). "
            f"Build it first:\n  {build_command(name, data_dir)}"
        )
    if len(found) > 1 and DEFAULT_CONFIG not in found:
        raise ValueError(
            f"{root} holds several prepared configs {sorted(found)}; pass config=<one of them>"
        )
    chosen = found[DEFAULT_CONFIG] if len(found) > 1 else next(iter(found.values()))
    return max(chosen, key=lambda path: tfds.core.Version(path.name))


def dataset_metadata(name: str, data_dir: str | Path, config: str | None = None) -> dict:
    """The prepared dataset's metadata: mel (MelConfig fields), min_seconds, split_mode,
    seed, num_skipped, hours, source and the parser's facts about it."""
    path = prepared_dir(name, data_dir, config) / "metadata.json"
    return json.loads(path.read_text(encoding="utf-8"))


def available_splits(name: str, data_dir: str | Path, config: str | None = None) -> list[str]:
    """Split names of a prepared dataset, train/valid/test first."""
    builder = tfds.builder_from_directory(str(prepared_dir(name, data_dir, config)))
    return split_names_in_order(builder.info.splits)


class SplitSource(Sequence):
    """Random access to one prepared split.

    len(src); src[i] -> dict(mel=np.float16 [n_mels, T], track_id=str, duration_s=float,
    **labels), labels as dataset_tasks(name) says: int class index (multiclass), float
    (regression), np.float32 [num_outputs] multi-hot (multilabel).
    """

    def __init__(
        self, name: str, split: str, path: Path, source: Any, tasks: Mapping[str, TaskSpec]
    ):
        self.name, self.split, self.path = name, split, path
        self._source = source
        self._kinds = {task.label_key: task.kind for task in tasks.values()}
        self.metadata: dict = json.loads((path / "metadata.json").read_text(encoding="utf-8"))

    @property
    def mel_config(self) -> MelConfig:
        """The MelConfig the mels were computed with (check it matches your model's)."""
        return MelConfig(**self.metadata["mel"])

    def __len__(self) -> int:
        return len(self._source)

    def _decode(self, record: Mapping[str, Any]) -> dict[str, Any]:
        example = {
            "mel": np.asarray(record["mel"], dtype=np.float16),
            "track_id": record["track_id"].decode("utf-8"),
            "duration_s": float(record["duration_s"]),
        }
        for key, kind in self._kinds.items():
            value = record[key]
            if kind == "multiclass":
                example[key] = int(value)
            elif kind == "regression":
                example[key] = float(value)
            else:
                example[key] = np.asarray(value, dtype=np.float32)
        return example

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.__getitems__(range(*index.indices(len(self))))
        index = operator.index(index)
        position = index + len(self) if index < 0 else index
        if not 0 <= position < len(self):
            raise IndexError(f"index {index} out of range for {self.name}/{self.split}")
        return self._decode(self._source[position])

    def __getitems__(self, indices: Iterable[int]) -> list[dict[str, Any]]:
        """Several examples in one read (what grain's batched access uses)."""
        return [self._decode(record) for record in self._source.__getitems__(list(indices))]

    def __repr__(self) -> str:
        return f"SplitSource({self.name!r}, {self.split!r}, {len(self)} examples, {self.path})"


def open_split(
    name: str, data_dir: str | Path, split: str, config: str | None = None
) -> SplitSource:
    """Random access to split `split` ("train", "valid"/"validation", "test") of `name`."""
    path = prepared_dir(name, data_dir, config)
    builder = tfds.builder_from_directory(str(path))
    split = canonical_split(split)
    if split not in builder.info.splits:
        raise ValueError(
            f"{name} in {path} has no split {split!r}; available: "
            f"{split_names_in_order(builder.info.splits)}"
        )
    source = builder.as_data_source(split=split)
    return SplitSource(name, split, path, source, get_spec(name).tasks)

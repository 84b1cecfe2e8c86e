"""Datasets: tfds builders for six sources and one uniform random-access reader.

    open_split(name, data_dir, split) -> SplitSource: len(src), src[i] -> dict(mel, track_id,
        duration_s, **labels)
    dataset_tasks(name) -> {task: TaskSpec(kind, label_key, num_outputs, class_names)}
    available_splits(name, data_dir), dataset_metadata(name, data_dir)
    prepare(name, source, data_dir, ...) (the engine of `python -m data_prep.build`)

Names: folder, demo, mtg_jamendo, gtzan, giantsteps_key, emomusic. The reader and builder
import TensorFlow Datasets on first use only, so the build's worker processes (which import
this package to decode audio) start quickly.
"""

import importlib

from myna_rpe_jax.data.datasets.common import SPLITS, LayoutError, TaskSpec
from myna_rpe_jax.data.datasets.registry import DATASET_NAMES, dataset_tasks

_LAZY = {
    "open_split": "reader",
    "available_splits": "reader",
    "dataset_metadata": "reader",
    "prepared_dir": "reader",
    "SplitSource": "reader",
    "DatasetNotPreparedError": "reader",
    "prepare": "preparation",
    "PrepareSummary": "preparation",
    "SourceMismatchError": "preparation",
}

__all__ = ["DATASET_NAMES", "SPLITS", "LayoutError", "TaskSpec", "dataset_tasks", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

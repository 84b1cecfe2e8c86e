"""The datasets this project can prepare, by name."""

from __future__ import annotations

from myna_rpe_jax.data.datasets.common import DatasetSpec, TaskSpec
from myna_rpe_jax.data.datasets.parsers import (
    demo,
    emomusic,
    folder,
    giantsteps_key,
    gtzan,
    mtg_jamendo,
)

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        folder.SPEC,
        demo.SPEC,
        mtg_jamendo.SPEC,
        gtzan.SPEC,
        giantsteps_key.SPEC,
        emomusic.SPEC,
    )
}
DATASET_NAMES = tuple(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return DATASETS[name]


def dataset_tasks(name: str) -> dict[str, TaskSpec]:
    """Task name -> TaskSpec(kind, label_key, num_outputs, class_names) of a dataset."""
    return dict(get_spec(name).tasks)

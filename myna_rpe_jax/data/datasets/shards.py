"""Stage 2 of a build: the tfds array_record shards, written in parallel, one shard per job.

tfds' own writers hold every example of a split in one process and write the shards one after
another at the end, which cost more than decoding on two cores. Here each split is cut into
the number of shards tfds itself would choose for its size (64 MiB to 1 GiB each, so the
layout does not depend on the worker count; `DownloadConfig.num_shards` overrides it), and
each shard is written by one job: read its tracks' cached log-mels, encode and serialise
them with the dataset's FeaturesDict (tfds' serializer, as `tfds.core.ShardBasedBuilder`
does), and append them to an array_record file. Jobs run in spawned processes (cache.py says
why not fork); the result is the same `SplitInfo` tfds writes, read back by
`builder_from_directory`.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

import tensorflow_datasets as tfds
import tqdm
from array_record.python import array_record_module
from tensorflow_datasets.core.utils import shard_utils

from myna_rpe_jax.data.datasets.cache import load_mel
from myna_rpe_jax.data.datasets.common import Track

# zstd level 1, not tfds' level 3: a 30 s clip's float16 log-mel compresses to 494 KB instead
# of 478 KB (of 768), and writing it costs 1.4 ms instead of 3.7 (docs/benchmarks.md).
ARRAY_RECORD_OPTIONS = "group_size:1,zstd:1"
TFDS_SHARDS = shard_utils.ShardConfig()  # tfds' default: number of shards by size


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """One shard to write: its file and the (track, cached mel file) pairs it holds, in order.

    Calling it yields the shard's (key, example) pairs: a tfds `ExampleGeneratorFn`.
    """

    path: str
    items: tuple[tuple[Track, str], ...]
    first_key: int
    n_mels: int

    def __call__(self) -> Iterator[tuple[int, dict]]:
        for key, (track, mel_file) in enumerate(self.items, self.first_key):
            mel, duration = load_mel(mel_file)
            if mel.shape[0] != self.n_mels:
                raise ValueError(
                    f"cached {mel_file} has {mel.shape[0]} mel bins, not {self.n_mels}"
                )
            yield (
                key,
                {
                    "mel": mel,
                    "track_id": track.track_id,
                    "duration_s": duration,
                    **track.labels,
                },
            )


@dataclasses.dataclass(frozen=True)
class ShardResult:
    num_examples: int
    num_bytes: int
    hours: float


def plan_shards(
    items: Sequence[tuple[Track, str]],
    sizes: Sequence[int],
    n_mels: int,
    path_of: Callable[[int, int], str],
    config: shard_utils.ShardConfig = TFDS_SHARDS,
) -> list[ShardJob]:
    """Cuts one split's items into shards: config.num_shards, or by default as many as tfds
    would choose for `sizes` (bytes per example). path_of(index, num_shards) names shard
    `index`. Shards are contiguous runs in split order, never empty.
    """
    num_shards = min(config.get_number_shards(sum(sizes), len(items)), len(items))
    bounds = [0, *shard_utils.get_shard_boundaries(len(items), num_shards)]
    return [
        ShardJob(path_of(i, num_shards), tuple(items[start:stop]), start, n_mels)
        for i, (start, stop) in enumerate(itertools.pairwise(bounds))
    ]


def write_shard(job: ShardJob, features: tfds.features.FeaturesDict) -> ShardResult:
    """Writes `job`'s examples to its array_record file (under a temporary name until whole)."""
    serializer = tfds.core.example_serializer.ExampleSerializer(features.get_serialized_info())
    tmp = f"{job.path}.{os.getpid()}.tmp"
    writer = array_record_module.ArrayRecordWriter(tmp, ARRAY_RECORD_OPTIONS)
    count, seconds = 0, 0.0
    try:
        for _, example in job():
            writer.write(serializer.serialize_example(features.encode_example(example)))
            count, seconds = count + 1, seconds + example["duration_s"]
    finally:
        writer.close()
    os.replace(tmp, job.path)
    return ShardResult(count, os.path.getsize(job.path), seconds / 3600)


def write_shards(
    jobs: Sequence[ShardJob],
    features: tfds.features.FeaturesDict,
    *,
    workers: int = 1,
    progress: bool = False,
    desc: str = "write shards",
) -> list[ShardResult]:
    """Writes every job (one per shard, any splits), in `workers` processes; results in order."""
    workers = min(workers, len(jobs))
    with tqdm.tqdm(total=len(jobs), desc=desc, unit="shard", disable=not progress) as bar:
        if workers <= 1:
            results = []
            for job in jobs:
                results.append(write_shard(job, features))
                bar.update(1)
            return results
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            # Longest first, so that the last shard to finish is a short one.
            order = sorted(range(len(jobs)), key=lambda i: -len(jobs[i].items))
            futures = {pool.submit(write_shard, jobs[i], features): i for i in order}
            results: list[ShardResult | None] = [None] * len(jobs)
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
            return results

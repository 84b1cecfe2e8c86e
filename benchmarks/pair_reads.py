"""Reading positive pairs: whole tfds records vs the memory-mapped frame store.

python benchmarks/pair_reads.py [--tracks 48] [--seconds 90] [--batch 32] [--steps 10]
                                [--data-dir DIR]

Builds (once, into --data-dir or the cache) a demo set of long tracks, copies its train
split into a frame store (timed), then times `PairSampler.batch` for --steps steps from each
source with 4 reader threads, and prints the bytes of mel each step reads. Both sources give
identical batches (checked). The longer the tracks, the larger the gap: a full MTG-Jamendo
track is ~5.7 MB of mel, of which a pair of 256-frame chunks uses 128 KB.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import machine  # noqa: E402  benchmarks/machine.py
import numpy as np  # noqa: E402

from myna_rpe_jax.data import (
    datasets,  # noqa: E402
    locations,
)
from myna_rpe_jax.train import (
    frame_store,  # noqa: E402
    pairs,  # noqa: E402
)


def time_batches(sampler: pairs.PairSampler, steps: int) -> tuple[float, list]:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        sampler.batch(0, pool)  # warm the page cache and the readers alike
        start = time.perf_counter()
        batches = [sampler.batch(step, pool) for step in range(1, steps + 1)]
    return (time.perf_counter() - start) / steps, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--data-dir", default=None, help="demo data root (default: the cache)")
    args = parser.parse_args()

    root = Path(args.data_dir) if args.data_dir else locations.cache_dir()
    data_dir = locations.ensure_demo(root, args.tracks, args.seconds, seed=0)
    records = datasets.open_split("demo", data_dir, "train")
    prepared = datasets.prepared_dir("demo", data_dir)
    shutil.rmtree(frame_store.store_dir(data_dir, prepared, ["train"]), ignore_errors=True)
    start = time.perf_counter()
    store = frame_store.open_frame_store("demo", data_dir, ["train"], progress=False)
    copy_s = time.perf_counter() - start

    batch = min(args.batch, len(store))
    results = {}
    for name, source in [("tfds records", records), ("frame store", store)]:
        sampler = pairs.PairSampler(source, batch, (args.chunk,), seed=0)
        results[name] = time_batches(sampler, args.steps)
    for key in results["frame store"][1][0]:
        for a, b in zip(results["frame store"][1], results["tfds records"][1], strict=True):
            np.testing.assert_array_equal(a[key], b[key])

    mel_bytes = np.mean([store.num_frames(i) for i in range(len(store))]) * store.n_mels * 2
    read = {"tfds records": batch * mel_bytes, "frame store": batch * 2 * args.chunk * 256}
    print(f"machine: {machine.describe()}")
    print(
        f"demo set: {len(store)} train tracks of {args.seconds:g} s; batch {batch} pairs of"
        f" {args.chunk} frames; frame store copied in {copy_s:.1f} s (once)\n"
    )
    print("| source | ms per batch | mel read per batch | batches identical |")
    print("|---|---|---|---|")
    for name, (seconds, _) in results.items():
        print(f"| {name} | {1e3 * seconds:.1f} | {read[name] / 1e6:.1f} MB | yes |")


if __name__ == "__main__":
    main()

"""Positive pairs for contrastive pretraining: two random chunks of one track.

The batch for a step is a pure function of (seed, step), computed from random-access reads of
the prepared dataset. Nothing about the data position lives in an iterator, so a resumed run
(or any process of a multi-host run) sees exactly the batches an uninterrupted run would.

- Tracks are visited in a fresh seeded permutation every epoch, `global_batch` per step
  (the last incomplete batch of an epoch is dropped, so a batch never holds a track twice:
  a duplicated track would be a false negative for InfoNCE).
- Each process reads only its contiguous slice of the global batch.
- Chunk offsets are uniform; the two views of a track start at different frames whenever the
  track allows it. A track shorter than a chunk is looped (tiled) to the chunk length
  (`data.chunks.crop`, the chunking rule shared with embedding).
- With several chunk-length buckets, each step draws one length for its whole batch, so the
  train step compiles once per bucket.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from myna_rpe_jax.data.chunks import crop

_EPOCH, _OFFSETS, _BUCKET = 0, 1, 2  # independent random streams per step


def pair_offsets(rng: np.random.Generator, frames: int, length: int) -> tuple[int, int]:
    """Start frames of two chunks of `length` in a track of `frames`: distinct when possible."""
    span = frames - length + 1
    if span <= 1:
        return 0, 0
    a = int(rng.integers(span))
    b = int(rng.integers(span - 1))
    return a, b + (b >= a)


@dataclasses.dataclass(frozen=True)
class PairSampler:
    """Deterministic positive-pair batches from a random-access source.

    Attributes:
      source: `len(source)`, `source[i]` -> dict with "mel" [n_mels, frames] (float16); a
        source that also has `num_frames(i)` and `read(i, start, length)` (`FrameStore`) is
        read chunk by chunk instead of track by track, with the same result.
      global_batch: tracks per step across all processes.
      chunk_frames: chunk length(s) in frames; several values are buckets drawn per step.
      seed: data seed.
      process_index, process_count: this process's slice of every global batch.
    """

    source: Sequence
    global_batch: int
    chunk_frames: Sequence[int]
    seed: int = 0
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        if self.global_batch % self.process_count:
            raise ValueError(
                f"batch_size {self.global_batch} is not divisible by the {self.process_count}"
                " processes: each process must read the same number of tracks."
            )
        if self.global_batch > len(self.source):
            raise ValueError(
                f"batch_size {self.global_batch} is larger than the dataset ({len(self.source)}"
                " tracks): a batch may not hold a track twice (it would be its own negative)."
                " Lower --config.batch_size or use a bigger dataset."
            )
        if not self.chunk_frames:
            raise ValueError("chunk_frames must name at least one chunk length")

    @property
    def steps_per_epoch(self) -> int:
        return len(self.source) // self.global_batch

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.process_count

    def _rng(self, step: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream, step])

    def chunk_length(self, step: int) -> int:
        """The chunk length of every pair in this step's batch."""
        if len(self.chunk_frames) == 1:
            return int(self.chunk_frames[0])
        return int(self._rng(step, _BUCKET).choice(self.chunk_frames))

    def global_indices(self, step: int) -> np.ndarray:
        """[global_batch] dataset indices of the tracks in this step's batch."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = self._rng(epoch, _EPOCH).permutation(len(self.source))
        return order[position * self.global_batch : (position + 1) * self.global_batch]

    def batch(self, step: int, pool: concurrent.futures.Executor | None = None) -> dict:
        """This process's part of the batch of `step`.

        Returns:
          view_a, view_b: [local_batch, n_mels, chunk] float16, the two chunks of each track.
          index: [local_batch] int32 dataset index of each track (for per-example loss state).
        """
        lo = self.process_index * self.local_batch
        indices = self.global_indices(step)[lo : lo + self.local_batch]
        length = self.chunk_length(step)
        # Offsets are drawn for the whole global batch so they do not depend on the process.
        rng = self._rng(step, _OFFSETS)
        seeds = rng.integers(2**32, size=self.global_batch)[lo : lo + self.local_batch]

        def read(i: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
            rng, i = np.random.default_rng(seed), int(i)
            if hasattr(self.source, "read"):  # a FrameStore: read only the two chunks
                frames = self.source.num_frames(i)
                a, b = pair_offsets(rng, frames, length)
                if frames >= length:
                    return self.source.read(i, a, length), self.source.read(i, b, length)
                mel = self.source.read(i, 0, frames)
            else:
                mel = np.asarray(self.source[i]["mel"])
                a, b = pair_offsets(rng, mel.shape[1], length)
            return crop(mel, a, length), crop(mel, b, length)

        reads = pool.map(read, indices, seeds) if pool else map(read, indices, seeds)
        view_a, view_b = zip(*reads, strict=True)
        return {
            "view_a": np.stack(view_a),
            "view_b": np.stack(view_b),
            "index": indices.astype(np.int32),
        }

    def iterate(self, start_step: int, prefetch: int = 2, threads: int = 4) -> Iterator[dict]:
        """Batches of steps start_step, start_step + 1, ..., read ahead in background threads.

        One thread assembles batches in step order (up to `prefetch` ahead); `threads` more
        read tracks in parallel.
        """
        with (
            concurrent.futures.ThreadPoolExecutor(1) as assembler,
            concurrent.futures.ThreadPoolExecutor(threads) as readers,
        ):
            pending = [
                assembler.submit(self.batch, start_step + i, readers) for i in range(prefetch)
            ]
            step = start_step + prefetch
            while True:
                yield pending.pop(0).result()
                pending.append(assembler.submit(self.batch, step, readers))
                step += 1

"""A frozen encoder that embeds spectrograms of any length: whole tracks or Myna's chunks.

`full` feeds each track at its full length: the relative positional schemes extrapolate past
the training chunk length. `chunks` cuts a track into non-overlapping chunks of the training
length and averages their embeddings, as Myna does.

Tracks are never padded: padding would change the output of a model that attends to every
token. Each track is cropped to whole 16-frame patch columns (patchify drops the rest anyway)
and tracks of equal length are batched together, up to a token budget, so a long track runs
alone. The encoder compiles once per (batch, length) shape; batch sizes are rounded up to
powers of two (with repeated tracks whose outputs are dropped) so few shapes occur.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from myna_rpe_jax import checkpointing, input_pipeline, model, training_data
from myna_rpe_jax.audio import MelConfig

log = logging.getLogger("myna_rpe_jax.embedding")

MODES = ("full", "chunks")
# Tokens (batch x tokens per track) per forward pass. Dense attention holds
# batch x heads x N^2 scores for N <= 2048 tokens: ~1.6 GB for ViT-S at this budget.
DEFAULT_MAX_TOKENS = 32768


def crop_to_patches(mel: np.ndarray, patch_size: int) -> np.ndarray:
    """mel [F, T] -> [F, T // p * p]: the frames patchify keeps."""
    return mel[:, : mel.shape[1] // patch_size * patch_size]


def chunk_mel(mel: np.ndarray, chunk_frames: int) -> np.ndarray:
    """Non-overlapping chunks [K, F, chunk_frames] of mel [F, T], K = T // chunk_frames.

    The tail shorter than a chunk is dropped; a track shorter than one chunk is looped to
    one chunk, as training's `input_pipeline.crop` does.
    """
    num_chunks = mel.shape[1] // chunk_frames
    if num_chunks == 0:
        return input_pipeline.crop(mel, 0, chunk_frames)[None]
    chunks = mel[:, : num_chunks * chunk_frames].reshape(mel.shape[0], num_chunks, chunk_frames)
    return chunks.transpose(1, 0, 2)


def batch_sizes(count: int, max_batch: int) -> list[tuple[int, int]]:
    """Splits `count` equal-length inputs into (real, padded) batch sizes.

    Full batches hold max_batch inputs; the rest pads up to the next power of two (at most
    max_batch), so a length compiles for at most log2(max_batch) + 1 batch shapes.
    """
    sizes = [(max_batch, max_batch)] * (count // max_batch)
    rest = count % max_batch
    if rest:
        sizes.append((rest, min(max_batch, 1 << (rest - 1).bit_length())))
    return sizes


class Embedder:
    """A frozen encoder that embeds spectrograms of any length in shape-grouped batches.

    mel_config is the feature setting the model was trained on (mel_source says how it is
    known): audio files are turned into mels with it.
    """

    def __init__(
        self,
        encoder: model.Encoder,
        params: Any,
        chunk_frames: int,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        mel_config: MelConfig | None = None,
        mel_source: str = "MelConfig defaults",
    ):
        self.encoder, self.params = encoder, params
        self.chunk_frames, self.max_tokens = chunk_frames, max_tokens
        self.mel_config, self.mel_source = mel_config or MelConfig(), mel_source
        self.shapes_compiled: set[tuple[int, ...]] = set()
        # jit caches one executable per input shape: every batch of a seen shape reuses it.
        self._apply = jax.jit(lambda p, spec: encoder.apply({"params": p}, spec, train=False)[0])

    def _tokens_per_frame(self) -> float:
        return (self.encoder.n_mels // self.encoder.patch_size) / self.encoder.patch_size

    def forward(self, specs: np.ndarray) -> np.ndarray:
        """CLS embeddings [B, D] float32 of one batch specs: [B, n_mels, frames]."""
        if specs.shape not in self.shapes_compiled:
            self.shapes_compiled.add(specs.shape)
            log.debug("compiling the encoder for input shape %s", specs.shape)
        return np.asarray(self._apply(self.params, specs), dtype=np.float32)

    def _equal_length_batches(
        self, specs: Sequence[np.ndarray], on_batch: Callable[[list[int]], None]
    ) -> np.ndarray:
        """Embeds specs (each [F, T_i], T_i a multiple of the patch size) -> [N, D]."""
        groups: dict[int, list[int]] = collections.defaultdict(list)
        for i, spec in enumerate(specs):
            groups[spec.shape[1]].append(i)
        out: list[np.ndarray | None] = [None] * len(specs)
        for frames in sorted(groups):
            members = groups[frames]
            max_batch = max(1, int(self.max_tokens // (frames * self._tokens_per_frame())))
            start = 0
            for real, padded in batch_sizes(len(members), max_batch):
                chosen = members[start : start + real]
                start += real
                # Repeating the first track fills the batch without touching the others.
                batch = np.stack([specs[i] for i in chosen + chosen[:1] * (padded - real)])
                for i, row in zip(chosen, self.forward(batch)[:real], strict=True):
                    out[i] = row
                on_batch(chosen)
        return np.stack(out)

    def embed(
        self,
        mels: Sequence[np.ndarray],
        mode: str = "full",
        on_done: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embeddings [N, D] float32 of N mels [n_mels, T_i] (float16 dB, any lengths).

        full: each track whole (cropped to whole patches). chunks: the mean over the track's
        `chunk_mel` chunks. on_done(k) is called as each batch completes k more tracks.
        """
        if not mels:
            raise ValueError("no spectrograms to embed")
        for mel in mels:
            if mel.ndim != 2 or mel.shape[0] != self.encoder.n_mels:
                raise ValueError(
                    f"the model expects mels of shape [{self.encoder.n_mels}, frames], got"
                    f" {mel.shape}: compute them with the training run's n_mels"
                )
            if mel.shape[1] < self.encoder.patch_size:
                raise ValueError(
                    f"a {mel.shape[1]}-frame track is shorter than one patch"
                    f" ({self.encoder.patch_size} frames)"
                )
        report = on_done or (lambda k: None)
        if mode == "full":
            specs = [crop_to_patches(mel, self.encoder.patch_size) for mel in mels]
            return self._equal_length_batches(specs, lambda chosen: report(len(chosen)))
        if mode != "chunks":
            raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
        per_track = [chunk_mel(mel, self.chunk_frames) for mel in mels]
        ends = np.cumsum([len(chunks) for chunks in per_track])
        chunks = [chunk for track in per_track for chunk in track]
        done = [0, 0]  # chunks embedded, tracks reported

        def chunk_progress(chosen: list[int]) -> None:
            # Chunks are embedded in track order, so finished tracks are a prefix.
            done[0] += len(chosen)
            finished = int(np.searchsorted(ends, done[0], side="right"))
            report(finished - done[1])
            done[1] = finished

        embedded = self._equal_length_batches(chunks, chunk_progress)
        return np.stack([part.mean(axis=0) for part in np.split(embedded, ends[:-1])])


def load_embedder(
    workdir: str | Path, step: int | None = None, max_tokens: int = DEFAULT_MAX_TOKENS
) -> tuple[Embedder, ml_collections.ConfigDict, int]:
    """The Embedder of a training workdir's checkpoint (latest if step is None), its config,
    and the step loaded."""
    config = checkpointing.read_config(workdir)
    params, step = checkpointing.load_params(workdir, step)
    encoder = model.encoder_from_config(config.model)
    chunk_frames = int(max(config.data.chunk_frames))
    mel_config, mel_source = training_mel_config(config)
    if mel_config.n_mels != encoder.n_mels:
        raise ValueError(
            f"{workdir}: the model takes {encoder.n_mels} mel bins but its training data"
            f" ({mel_source}) has {mel_config.n_mels}; check config.model.n_mels"
        )
    embedder = Embedder(encoder, params, chunk_frames, max_tokens, mel_config, mel_source)
    return embedder, config, step


def training_mel_config(config: ml_collections.ConfigDict) -> tuple[MelConfig, str]:
    """The MelConfig the run's training data was prepared with, and where it came from.

    Falls back to the MelConfig defaults (Myna-RPE's) when that dataset is not on this machine.
    """
    from myna_rpe_jax import datasets  # imports TensorFlow Datasets

    data = config.data
    data_dir = training_data.training_dir(data)
    try:
        mel = datasets.dataset_metadata(data.dataset, data_dir)["mel"]
    except (FileNotFoundError, KeyError, ValueError) as err:
        reason = str(err).splitlines()[0]
        return MelConfig(), f"MelConfig defaults (training data metadata unavailable: {reason})"
    return MelConfig(**mel), f"training dataset {data.dataset!r} in {data_dir}"

"""A frozen encoder that embeds spectrograms of any length: whole tracks or Myna's chunks.

`full` feeds each track at its full length: the relative positional schemes extrapolate past
the training chunk length. `patchout` is `full` as training sees a chunk: the mean CLS of
`patchout_passes` passes over the whole track, each keeping a random `patchout_keep` of its
patches (inference-time patchout; fixed keys: a track gets the same masks whatever it is
batched with). `chunks` cuts a track into non-overlapping chunks of the training length and
averages their embeddings, as Myna does (the rule for the tail and for short tracks:
`data.chunks`). Audio is turned into mels with the settings the run recorded
(WORKDIR/features.json, `read_features`).

Each track is cropped to whole 16-frame patch columns (patchify drops the rest anyway), then
padded up to a length bucket: its column count rounded up to a multiple of the largest power of
two <= max_padding x columns, so padding adds at most `max_padding` (12.5%) of the track and a
collection of full tracks of every length compiles for a few dozen shapes, not one per track.
The padding changes nothing: the encoder gets each track's real length and masks the padded
patches out of attention (`Encoder(..., lengths=)`). Tracks of one bucket are batched together
up to a token budget per device, so a long track runs alone; the rest of a bucket after its
full batches is split into powers of two, so few batch shapes occur. Batches are split over
all local devices (data parallel through `shard_map`; a batch smaller than the device count is
padded with repeats).
"""

from __future__ import annotations

import collections
import functools
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from myna_rpe_jax import distributed
from myna_rpe_jax.data.audio import MelConfig
from myna_rpe_jax.data.chunks import chunk_mel, crop_to_patches
from myna_rpe_jax.model import positional, vit
from myna_rpe_jax.run import checkpoints

log = logging.getLogger("myna_rpe_jax.embedding")

MODES = ("full", "chunks", "patchout")
DEFAULT_MODES = ("full", "chunks")
WHOLE_TRACK_MODES = ("full", "patchout")  # need a positional scheme that extrapolates
# Masked passes averaged in `patchout` mode.
DEFAULT_PATCHOUT_PASSES = 8
# Tokens (batch x tokens per track) per device and forward pass. Dense attention holds
# batch x heads x N^2 scores for N <= 1024 tokens: ~0.8 GB for ViT-S at this budget.
DEFAULT_MAX_TOKENS = 32768
# Padding of a full track to its length bucket, at most this fraction of its length.
DEFAULT_MAX_PADDING = 0.125
# Log-mel value of padded frames (silence); the encoder masks them out, so any value works.
_PAD_DB = -80.0


def bucket_frames(frames: int, patch_size: int, max_padding: float) -> int:
    """The padded length of a track of `frames` frames (>= one patch): a multiple of patch_size.

    Its c whole patch columns are rounded up to a multiple of the largest power of two
    <= max_padding * c (1 when that is below 1, i.e. no padding for short tracks), so the
    padding is at most max_padding * c columns and, for max_padding <= 0.5, there are at most
    2 / max_padding buckets per doubling of length. max_padding = 0 keeps every length exact.
    """
    cols = frames // patch_size
    step = 1 << math.floor(math.log2(cols * max_padding)) if cols * max_padding >= 1 else 1
    return -(-cols // step) * step * patch_size


def pad_frames(mel: np.ndarray, frames: int) -> np.ndarray:
    """mel [F, T] -> [F, frames], T <= frames, padded at the end with silence."""
    return np.pad(mel, ((0, 0), (0, frames - mel.shape[1])), constant_values=_PAD_DB)


def batch_sizes(count: int, max_batch: int, multiple: int = 1) -> list[tuple[int, int]]:
    """Splits `count` same-length inputs into (real, padded) batch sizes with few shapes.

    Every padded size is a multiple of `multiple` (the device count; max_batch must be one).
    Full batches of max_batch, then the rest as distinct powers of two times `multiple`
    (multiple 1: 13 = 8 + 4 + 1), and what is left below `multiple` as one batch padded to
    `multiple` (with repeated inputs whose outputs are dropped). So a length compiles for at
    most log2(max_batch / multiple) + 2 batch shapes, and only that last batch repeats work.
    """
    if max_batch % multiple:
        raise ValueError(f"max_batch {max_batch} is not a multiple of {multiple}")
    sizes = [(max_batch, max_batch)] * (count // max_batch)
    groups, left = divmod(count % max_batch, multiple)
    for bit in reversed(range(groups.bit_length())):
        if groups >> bit & 1:
            sizes.append(((1 << bit) * multiple,) * 2)
    if left:
        sizes.append((left, multiple))
    return sizes


class Embedder:
    """A frozen encoder that embeds spectrograms of any length in length-bucketed batches.

    mel_config is the feature setting the model was trained on (mel_source says how it is
    known): audio files are turned into mels with it. max_padding bounds the padding of a track
    to its length bucket (0: one bucket per length, nothing padded).
    """

    def __init__(
        self,
        encoder: vit.Encoder,
        params: Any,
        chunk_frames: int,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        mel_config: MelConfig | None = None,
        mel_source: str = "MelConfig defaults",
        max_padding: float = DEFAULT_MAX_PADDING,
        devices: Sequence[jax.Device] | None = None,
        patchout_passes: int = DEFAULT_PATCHOUT_PASSES,
    ):
        if not 0.0 <= max_padding < 1.0:
            raise ValueError(f"max_padding must be in [0, 1), got {max_padding}")
        self.encoder = encoder
        # Data parallel over this process's devices: batches are split, parameters copied.
        self.devices = list(devices or jax.local_devices())
        mesh = distributed.data_mesh(self.devices)
        self._batch_sharding = distributed.batch_sharded(mesh)
        self.params_sharding = distributed.replicated(mesh)
        self.params = jax.device_put(params, self.params_sharding)
        self.chunk_frames, self.max_tokens = chunk_frames, max_tokens
        self.mel_config, self.mel_source = mel_config or MelConfig(), mel_source
        self.max_padding = max_padding
        self.shapes_compiled: set[tuple[int, ...]] = set()
        # jit caches one executable per input shape: every batch of a seen shape reuses it.
        self._apply = _per_device(
            lambda p, spec, lengths: encoder.apply(
                {"params": p}, spec, train=False, lengths=lengths
            )[0],
            mesh,
        )
        self.patchout_passes = patchout_passes
        self._apply_patchout = _per_device(
            functools.partial(patchout_mean, encoder, patchout_passes), mesh
        )

    def set_params(self, params: Any) -> None:
        """Embeds with `params` from now on (same shapes: nothing recompiles)."""
        self.params = jax.device_put(params, self.params_sharding)

    def _tokens_per_frame(self) -> float:
        return (self.encoder.n_mels // self.encoder.patch_size) / self.encoder.patch_size

    def forward(
        self, specs: np.ndarray, lengths: np.ndarray | None = None, patchout: bool = False
    ) -> np.ndarray:
        """CLS embeddings [B, D] float32 of one batch specs [B, n_mels, frames], each example
        cut to its lengths[b] frames (default: all of them). B: a multiple of the devices.
        patchout: the mean over `patchout_passes` masked passes (`patchout_mean`)."""
        if len(specs) % len(self.devices):
            raise ValueError(
                f"a batch of {len(specs)} does not split over {len(self.devices)} devices"
            )
        if specs.shape not in self.shapes_compiled:
            self.shapes_compiled.add(specs.shape)
            log.debug("compiling the encoder for input shape %s", specs.shape)
        shard = lambda a: jax.device_put(a, self._batch_sharding)
        if lengths is not None:
            lengths = shard(np.asarray(lengths, np.int32))
        if patchout:
            out = self._apply_patchout(self.params, shard(specs), lengths, jax.random.key(0))
        else:
            out = self._apply(self.params, shard(specs), lengths)
        return np.asarray(out, dtype=np.float32)

    def bucket(self, frames: int) -> int:
        """The padded length a `frames`-frame input is embedded at (see `bucket_frames`)."""
        padded = bucket_frames(frames, self.encoder.patch_size, self.max_padding)
        if not positional.extrapolates(self.encoder.posemb):
            # The learned table has max_time_patches columns: pad no further than it reaches.
            table_frames = self.encoder.max_time_patches * self.encoder.patch_size
            padded = max(frames, min(padded, table_frames))
        return padded

    def _bucketed_batches(
        self,
        specs: Sequence[np.ndarray],
        on_batch: Callable[[list[int]], None],
        patchout: bool = False,
    ) -> np.ndarray:
        """Embeds specs (each [F, T_i]) -> [N, D]."""
        # Frames past the last whole patch column are dropped by patchify anyway.
        specs = [crop_to_patches(spec, self.encoder.patch_size) for spec in specs]
        groups: dict[int, list[int]] = collections.defaultdict(list)
        for i, spec in enumerate(specs):
            groups[self.bucket(spec.shape[1])].append(i)
        out: list[np.ndarray | None] = [None] * len(specs)
        for frames in sorted(groups):
            members = groups[frames]
            per_device = max(1, int(self.max_tokens // (frames * self._tokens_per_frame())))
            num_devices = len(self.devices)
            start = 0
            for real, padded in batch_sizes(len(members), per_device * num_devices, num_devices):
                chosen = members[start : start + real]
                start += real
                # Repeating the first track fills the batch without touching the others.
                rows = chosen + chosen[:1] * (padded - real)
                batch = np.stack([pad_frames(specs[i], frames) for i in rows])
                # With buckets every batch carries its lengths (a shape compiles once, masked);
                # max_padding 0 pads nothing and runs unmasked (on GPU, models without ALiBi
                # can then use the fused cuDNN kernel).
                lengths = [specs[i].shape[1] for i in rows] if self.max_padding else None
                for i, row in zip(
                    chosen, self.forward(batch, lengths, patchout)[:real], strict=True
                ):
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

        full: each track whole (cropped to whole patches). patchout: the mean of masked passes
        over the whole track. chunks: the mean over the track's `chunk_mel` chunks.
        on_done(k) is called as each batch completes k more tracks.
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
        if mode in ("full", "patchout"):
            done = lambda chosen: report(len(chosen))
            return self._bucketed_batches(mels, done, patchout=mode == "patchout")
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

        embedded = self._bucketed_batches(chunks, chunk_progress)
        return np.stack([part.mean(axis=0) for part in np.split(embedded, ends[:-1])])


def _per_device(fn: Callable, mesh: Mesh) -> Callable:
    """jit of fn(params, spec, lengths, *replicated) run on each device's slice of the batch
    (`shard_map`): the encoder treats examples independently, so nothing is communicated.

    Under plain jit XLA would partition the batch itself, but it cannot partition a custom
    call such as the fused Pallas kernel (`model.attention_kernel="pallas"`): it gathers the
    whole batch onto every device and runs the kernel on all of it there (a test checks the
    compiled program has no all-gather). A key passed in is the same on every device.
    """
    data, replicated = PartitionSpec(distributed.DATA_AXIS), PartitionSpec()
    mapped = lambda params, spec, lengths, *rest: jax.shard_map(
        fn,
        mesh=mesh,
        in_specs=(replicated, data, data, *(replicated,) * len(rest)),
        out_specs=data,
        check_vma=False,  # pallas_call's outputs carry no varying-axes annotation
    )(params, spec, lengths, *rest)
    return jax.jit(mapped)


def patchout_mean(
    encoder: vit.Encoder,
    passes: int,
    params: Any,
    spec: jax.Array,
    lengths: jax.Array | None,
    rng: jax.Array,
) -> jax.Array:
    """The mean CLS [B, D] of `passes` patchout passes (the training-time masking, at the
    encoder's patchout_keep) over spec [B, F, T], pass i with the key fold_in(rng, i).

    Each example is masked as if it were embedded alone (vmap over batch-1 calls, one key
    for all) and its patches are chosen among its real ones by their coordinates
    (`patching.patchout_real`): its embedding does not depend on the batch it is in, its
    place there, the device count or its padding, as in the other modes. Examples share
    their masks where they share coordinates."""
    if lengths is None:  # unpadded: every frame is real, chosen the same way
        lengths = jnp.full(spec.shape[:1], spec.shape[2], jnp.int32)

    def one_example(x, length):  # x [F, T], length []
        def one_pass(i):
            cls, _ = encoder.apply(
                {"params": params},
                x[None],
                train=True,
                lengths=length[None],
                rngs={"patchout": jax.random.fold_in(rng, i)},
            )
            return cls[0]

        return jax.lax.map(one_pass, jnp.arange(passes)).mean(axis=0)

    return jax.vmap(one_example)(spec, lengths)


def load_embedder(
    workdir: str | Path,
    step: int | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_padding: float = DEFAULT_MAX_PADDING,
    length_scaling: bool | None = None,
    attention_kernel: str | None = None,
    alibi_tile_skip: bool | str | None = None,
) -> tuple[Embedder, ml_collections.ConfigDict, int]:
    """The Embedder of a training workdir's checkpoint (latest if step is None), its config,
    and the step loaded. Its mel_config is the run's recorded features (`read_features`).
    length_scaling, attention_kernel and alibi_tile_skip, when given, replace the run's
    config.model fields (in the returned config too; alibi_tile_skip="auto" unsets the field:
    `attention.resolve_tile_skip`); the kernel and tile skipping change only the speed, not
    the embeddings. The config is the one the loaded step was trained
    with (`checkpoints.config_file`: a resume with a changed config archived the old one)."""
    # Read first: "not a training workdir" says more than "no checkpoint".
    config = checkpoints.read_config(workdir)
    params, step = checkpoints.load_params(workdir, step)
    if (source := checkpoints.config_file(workdir, step)).name != checkpoints.CONFIG_FILE:
        log.info("step %d was trained with %s (the run resumed with another config)", step, source)
        config = checkpoints.read_config(workdir, step)
    given = dict(
        length_scaling=length_scaling,
        attention_kernel=attention_kernel,
        alibi_tile_skip=alibi_tile_skip,
    )
    overrides = {name: value for name, value in given.items() if value is not None}
    if overrides.get("alibi_tile_skip") == "auto":  # the field unset: resolve_tile_skip decides
        overrides["alibi_tile_skip"] = None
    with config.unlocked():
        config.model.update(overrides)
    mel_config, mel_source = checkpoints.read_features(workdir)
    encoder = vit.encoder_from_config(config.model)
    chunk_frames = int(max(config.data.chunk_frames))
    if mel_config.n_mels != encoder.n_mels:
        raise ValueError(
            f"{workdir}: the model takes {encoder.n_mels} mel bins but its training features"
            f" ({mel_source}) have {mel_config.n_mels}; check config.model.n_mels"
        )
    embedder = Embedder(
        encoder, params, chunk_frames, max_tokens, mel_config, mel_source, max_padding
    )
    return embedder, config, step

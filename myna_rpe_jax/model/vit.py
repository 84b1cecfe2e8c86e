"""The Myna-style ViT encoder: patches, patchout, positional schemes, CLS pooling.

spec [B, F, T] -> patchify -> (patchout when training) -> linear patch embedding
-> absolute embeddings (learned / sinusoidal / freq) -> prepend CLS -> pre-LN transformer
blocks whose attention takes an ALiBi bias and/or RoPE coordinates -> LayerNorm -> CLS [B, D].
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from myna_rpe_jax.model import attention, blockwise, fused_alibi, patching, positional

POSEMB_SCHEMES = ("learned", "sinusoidal", "freq", "alibi1d", "alibi2d", "rope")
# Schemes that cannot be combined: two absolute tables, or two ALiBi biases.
_EXCLUSIVE = (
    ("learned", "sinusoidal"),
    ("learned", "freq"),
    ("sinusoidal", "freq"),
    ("alibi1d", "alibi2d"),
)

# width, depth, heads, MLP width. S is Myna's ViT-S (22M parameters).
VARIANTS = {
    "tiny": dict(width=64, depth=2, num_heads=4, mlp_dim=128),
    "S": dict(width=384, depth=12, num_heads=6, mlp_dim=1536),
    "B": dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
}

# Log-mel dB values lie in [-80, 0]; this maps them to about [-1, 1].
_DB_CENTER, _DB_SCALE = -40.0, 40.0


def validate_posemb(posemb: Sequence[str]) -> tuple[str, ...]:
    """Checks a combination of positional scheme names; returns it as a tuple."""
    posemb = tuple(posemb)
    unknown = [name for name in posemb if name not in POSEMB_SCHEMES]
    if unknown:
        raise ValueError(f"unknown positional scheme(s) {unknown}; choose from {POSEMB_SCHEMES}")
    if len(set(posemb)) != len(posemb):
        raise ValueError(f"positional scheme listed twice in {posemb}")
    for a, b in _EXCLUSIVE:
        if a in posemb and b in posemb:
            raise ValueError(
                f"positional schemes {a!r} and {b!r} contradict each other (both encode the"
                f" same axis); pick one. Got posemb={posemb}."
            )
    return posemb


class MlpBlock(nn.Module):
    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        # Exact GELU, as PyTorch (the original Myna); the tanh form also costs more memory on
        # XLA:CPU at full-track lengths.
        x = nn.gelu(nn.Dense(self.mlp_dim, dtype=self.dtype)(x), approximate=False)
        return nn.Dense(width, dtype=self.dtype)(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with optional ALiBi bias and RoPE."""

    num_heads: int
    rope_theta: float = 100.0
    dtype: Any = jnp.float32
    block_size: int = blockwise.DEFAULT_BLOCK_SIZE
    blockwise_threshold: int = attention.DEFAULT_BLOCKWISE_THRESHOLD
    attention_kernel: str = "xla"

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        bias: positional.AlibiBias | None,
        rope_coords: jax.Array | None,
        is_patch: jax.Array,
        key_mask: jax.Array | None = None,
        logit_scale: jax.Array | None = None,
    ) -> jax.Array:
        """x [B, N, D]; rope_coords [B, N, 2] or None; is_patch, key_mask [B, N] -> [B, N, D].

        logit_scale [B] (optional) multiplies each example's attention logits q.k / sqrt(Dh),
        not its ALiBi bias (`length_scale`)."""
        width = x.shape[-1]
        if width % self.num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")
        head_dim = width // self.num_heads
        dense = lambda name: nn.DenseGeneral(
            (self.num_heads, head_dim), dtype=self.dtype, name=name
        )
        q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)
        if rope_coords is not None:
            # coords broadcast over heads: [B, N, 1, C] against [B, N, H, Dh] transposed.
            rotate = lambda t: positional.apply_rope(
                t.swapaxes(1, 2), rope_coords[:, None], self.rope_theta, is_patch[:, None]
            ).swapaxes(1, 2)
            q, k = rotate(q), rotate(k)
        if logit_scale is not None:  # scaling q scales q.k in every attention implementation
            q = q * logit_scale[:, None, None, None].astype(q.dtype)
        out = attention.attention(
            q,
            k,
            v,
            bias,
            block_size=self.block_size,
            blockwise_threshold=self.blockwise_threshold,
            key_mask=key_mask,
            kernel=self.attention_kernel,
        )
        return nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype, name="out")(out)


class EncoderBlock(nn.Module):
    num_heads: int
    mlp_dim: int
    rope_theta: float = 100.0
    dtype: Any = jnp.float32
    block_size: int = blockwise.DEFAULT_BLOCK_SIZE
    blockwise_threshold: int = attention.DEFAULT_BLOCKWISE_THRESHOLD
    attention_kernel: str = "xla"

    @nn.compact
    def __call__(self, x, bias, rope_coords, is_patch, key_mask=None, logit_scale=None):
        y = nn.LayerNorm(dtype=self.dtype)(x)
        x = x + SelfAttention(
            self.num_heads,
            self.rope_theta,
            self.dtype,
            self.block_size,
            self.blockwise_threshold,
            self.attention_kernel,
        )(y, bias, rope_coords, is_patch, key_mask, logit_scale)
        y = nn.LayerNorm(dtype=self.dtype)(x)
        return x + MlpBlock(self.mlp_dim, self.dtype)(y)


class Encoder(nn.Module):
    """Myna-RPE encoder. `__call__(spec [B, F, T], *, train, lengths=None)` -> (cls [B, D], aux).

    lengths [B] (optional) gives each example's real frame count when a batch of tracks was
    padded to one length: patches past it are no attention key for any token, so the CLS
    output is that of the unpadded track (up to float rounding) for every positional scheme.
    Patchout (train=True) with lengths keeps its share of each example's real patches,
    chosen by their coordinates (`patching.patchout_real`: the embedder's patchout mode).
    With `length_scaling`, attention over more tokens than a training chunk keeps after
    patchout (`train_tokens`) has its logits scaled by log N / log N_train (`length_scale`), so
    attention is as peaked over a whole track as over a training chunk; training is unchanged.
    aux holds "tokens" [B, N', D] (the patch tokens' outputs, padding included), "coords"
    [B, N', 2] (the coordinates of the tokens that were kept) and, with lengths, "valid"
    [B, N'] (which tokens are real, and kept by patchout).
    """

    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    posemb: tuple[str, ...] = ("alibi2d",)
    patch_size: int = 16
    n_mels: int = 128
    patchout_keep: float = 0.1
    max_time_patches: int = 16
    alibi_metric: str = "manhattan"
    # Skip the attention tiles ALiBi makes exactly 0; None: with the fused kernel only
    # (`attention.resolve_tile_skip`).
    alibi_tile_skip: bool | None = None
    length_scaling: bool = False  # logits x log N / log N_train past the training token count
    rope_theta: float = 100.0
    dtype: Any = jnp.float32
    attention_block_size: int = blockwise.DEFAULT_BLOCK_SIZE  # tokens per blockwise tile
    # Attention over more tokens than this (a whole track) runs blockwise, in linear memory.
    blockwise_threshold: int = attention.DEFAULT_BLOCKWISE_THRESHOLD
    # Past the threshold: "xla" (blockwise), "pallas" (the fused ALiBi GPU kernel) or "auto"
    # (pallas when an ALiBi model embeds on a GPU, else xla: `attention.resolve_kernel`).
    attention_kernel: str = "auto"

    @nn.compact
    def __call__(
        self, spec: jax.Array, *, train: bool, lengths: jax.Array | None = None
    ) -> tuple[jax.Array, dict]:
        validate_posemb(self.posemb)
        batch, num_bins, _ = spec.shape
        if num_bins != self.n_mels:
            raise ValueError(
                f"encoder expects {self.n_mels} mel bins, got spec of shape {spec.shape}"
            )
        grid = (num_bins // self.patch_size, spec.shape[2] // self.patch_size)
        tokens, coords, valid = self._patches(spec, train, lengths)
        x = self._embed(tokens, coords, grid)
        cls = self.param("cls", nn.initializers.normal(0.02), (1, 1, self.width))
        cls = jnp.broadcast_to(cls, (batch, 1, self.width)).astype(self.dtype)
        x = jnp.concatenate([cls, x], axis=1)
        all_coords = jnp.concatenate([jnp.zeros((batch, 1, 2), coords.dtype), coords], axis=1)
        is_patch = jnp.broadcast_to(jnp.arange(x.shape[1]) > 0, (batch, x.shape[1]))

        aux = {"coords": coords}
        key_mask = None
        if valid is not None:
            aux["valid"] = valid
            key_mask = jnp.concatenate([jnp.ones((batch, 1), bool), valid], axis=1)
        bias = self._alibi(all_coords, is_patch)
        rope_coords = all_coords if "rope" in self.posemb else None
        kernel = attention.resolve_kernel(
            self.attention_kernel,
            alibi=bias is not None,
            head_dim=self.width // self.num_heads,
            train=train,
        )
        if bias is not None:
            skip = attention.resolve_tile_skip(self.alibi_tile_skip, kernel)
            bias = bias.replace(tile_skip=skip)
        logit_scale = None
        if self.length_scaling:
            real = x.shape[1] if key_mask is None else key_mask.sum(axis=1)
            logit_scale = length_scale(jnp.broadcast_to(real, (batch,)), self.train_tokens(grid[0]))
        for i in range(self.depth):
            x = EncoderBlock(
                self.num_heads,
                self.mlp_dim,
                self.rope_theta,
                self.dtype,
                self.attention_block_size,
                self.blockwise_threshold,
                kernel,
                name=f"block_{i}",
            )(x, bias, rope_coords, is_patch, key_mask, logit_scale)
        x = nn.LayerNorm(dtype=self.dtype, name="final_norm")(x)
        return x[:, 0].astype(jnp.float32), {"tokens": x[:, 1:], **aux}

    def _patches(
        self, spec: jax.Array, train: bool, lengths: jax.Array | None
    ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """spec [B, F, T] -> the tokens [B, N', P] that attention sees (all, or patchout's),
        their coords [B, N', 2] and, with lengths, which are real [B, N'] (else None)."""
        x = (spec.astype(jnp.float32) - _DB_CENTER) / _DB_SCALE
        tokens, coords = patching.patchify(x, self.patch_size)
        coords = jnp.broadcast_to(coords, (spec.shape[0], *coords.shape))
        valid = None
        if lengths is not None:
            # A patch is real when all its frames are: time column < lengths // patch_size.
            valid = coords[..., positional.TIME] < (lengths // self.patch_size)[:, None]
        if train and self.patchout_keep < 1.0:
            rng = self.make_rng("patchout")
            if valid is None:
                keep = patching.num_kept(tokens.shape[1], self.patchout_keep)
                tokens, coords = patching.patchout(rng, tokens, coords, keep)
            else:  # the embedder's patchout mode: chosen among the real tokens alone
                tokens, coords, valid = patching.patchout_real(
                    rng, tokens, coords, valid, self.patchout_keep
                )
        return tokens, coords, valid

    def _embed(self, tokens: jax.Array, coords: jax.Array, grid: tuple[int, int]) -> jax.Array:
        """tokens [B, N', P] -> [B, N', D]: the patch embedding plus the additive positional
        tables of `posemb` read at coords [B, N', 2] of the (rows, cols) patch grid."""
        # The residual stream is in self.dtype for every scheme: the float32 tables are cast
        # like the activations, or `x + table` would promote a bfloat16 model to float32.
        x = nn.Dense(self.width, dtype=self.dtype, name="patch_embed")(tokens)
        if "learned" in self.posemb:
            table = positional.LearnedAbsoluteEmbedding(
                grid[0], self.max_time_patches, self.width, name="posemb_learned"
            )
            x = x + table(coords, grid).astype(self.dtype)
        if "sinusoidal" in self.posemb:
            x = x + positional.sinusoidal_2d(coords, self.width).astype(self.dtype)
        if "freq" in self.posemb:
            table = positional.LearnedFrequencyEmbedding(grid[0], self.width, name="posemb_freq")
            x = x + table(coords).astype(self.dtype)
        return x

    def train_tokens(self, freq_patches: int) -> int:
        """Tokens attended over in training: the patches a patchout of the longest training
        chunk keeps, plus CLS."""
        grid_tokens = freq_patches * self.max_time_patches
        keep = (
            patching.num_kept(grid_tokens, self.patchout_keep)
            if self.patchout_keep < 1
            else grid_tokens
        )
        return keep + 1

    def _alibi(self, coords: jax.Array, is_patch: jax.Array) -> positional.AlibiBias | None:
        if "alibi2d" in self.posemb:
            spatial, metric = coords, self.alibi_metric
        elif "alibi1d" in self.posemb:
            spatial, metric = coords[..., positional.TIME, None], "manhattan"
        else:
            return None
        slopes = jnp.asarray(positional.alibi_slopes(self.num_heads))
        spatial = spatial.astype(jnp.float32)
        return positional.AlibiBias(spatial, is_patch, slopes, metric)


def length_scale(num_tokens: jax.Array, train_tokens: int) -> jax.Array:
    """max(1, log N / log N_train) for token counts N [B] -> [B] float32: the logit scale that
    keeps the entropy of attention over N tokens near what it was over N_train in training
    (log-length scaling, e.g. Chiang & Cholak 2022); 1 up to the training count."""
    ratio = jnp.log(num_tokens.astype(jnp.float32)) / jnp.log(float(max(train_tokens, 2)))
    return jnp.maximum(ratio, 1.0)


def parse_variant(variant: str) -> tuple[dict, int]:
    """ "S/16" -> (VARIANTS["S"], 16); "tiny" -> (VARIANTS["tiny"], 16)."""
    name, _, patch = variant.partition("/")
    if name not in VARIANTS:
        raise ValueError(
            f"unknown model variant {variant!r}; choose from {sorted(VARIANTS)} (e.g. 'S/16')"
        )
    return dict(VARIANTS[name]), int(patch) if patch else 16


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def absent_field_values() -> dict[str, Any]:
    """model config field -> the value `encoder_from_config` takes when the field is absent
    (a run's config.json written before the field existed), as JSON would store it."""
    values = {
        field.name: field.default
        for field in dataclasses.fields(Encoder)
        if field.default is not dataclasses.MISSING
        and field.name not in ("parent", "name", "patch_size", "dtype")  # set as below
    }
    return json.loads(json.dumps({**values, "variant": "S/16", "dtype": "float32"}))


def init_params(encoder: Encoder, rng: jax.Array, sample: jax.Array) -> Any:
    """`encoder.init` on sample [1, F, T] with `rng` for both streams (params, patchout): the
    parameters a training run starts from (`train.step.init_state`) and the probe's
    random-init baseline (`probe.baselines.random_params`)."""
    return encoder.init({"params": rng, "patchout": rng}, sample, train=True)["params"]


def encoder_from_config(model_cfg: ml_collections.ConfigDict) -> Encoder:
    """Builds an `Encoder` from a config's `model` field.

    Fields: variant ("tiny", "S/16", "B/16"); optional width / depth / num_heads / mlp_dim
    overriding the variant; posemb (tuple of scheme names); patchout_keep (fraction kept in
    training); n_mels; max_time_patches (the learned table's length); alibi_metric;
    alibi_tile_skip (None: with the fused kernel only); length_scaling (log-length logit
    scaling past the training token count); rope_theta; dtype
    ("float32" or "bfloat16" compute); attention_block_size and blockwise_threshold (attention
    over more tokens than the threshold runs blockwise); attention_kernel ("auto", "xla", or
    "pallas" for the fused ALiBi kernel past the threshold; `attention.resolve_kernel`).
    """
    cfg = (
        model_cfg.to_dict() if isinstance(model_cfg, ml_collections.ConfigDict) else dict(model_cfg)
    )
    sizes, patch_size = parse_variant(cfg.pop("variant", "S/16"))
    for name in sizes:
        if cfg.get(name) is not None:
            sizes[name] = cfg.pop(name)
        cfg.pop(name, None)
    dtype = cfg.pop("dtype", "float32")
    if dtype not in _DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    known = {f.name for f in dataclasses.fields(Encoder)} - {"parent", "name"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(
            f"unknown model config field(s) {unknown};"
            f" known: {sorted(known | set(sizes) | {'variant', 'dtype'})}"
        )
    cfg["posemb"] = validate_posemb(cfg.get("posemb", ("alibi2d",)))
    if cfg.get("alibi_metric", "manhattan") not in positional.DISTANCE_METRICS:
        raise ValueError(
            f"model.alibi_metric must be one of {positional.DISTANCE_METRICS},"
            f" got {cfg['alibi_metric']!r}"
        )
    kernel = cfg.get("attention_kernel", "auto")
    if kernel not in attention.KERNELS:
        raise ValueError(
            f"model.attention_kernel must be one of {attention.KERNELS}, got {kernel!r}"
        )
    head_dim = sizes["width"] // sizes["num_heads"]
    if kernel == "pallas" and not fused_alibi.takes_head_dim(head_dim):
        raise ValueError(
            f"model.attention_kernel='pallas' needs a power-of-two head dimension (width /"
            f" num_heads), got {head_dim}; use 'xla' or change width or num_heads"
        )
    return Encoder(**sizes, patch_size=patch_size, dtype=_DTYPES[dtype], **cfg)

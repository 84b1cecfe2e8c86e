"""Positional schemes, all computed from patch coordinates (freq_row, time_col).

Relative schemes (ALiBi 1D/2D, RoPE) and the sinusoidal embedding exist at any length, so an
encoder trained on short chunks runs on whole tracks. The learned absolute table (the baseline
the Myna-RPE paper compares against) and the learned frequency embedding are flax modules;
everything else is a pure function of arrays.

Coordinates: `coords[..., 0]` = frequency row, `coords[..., 1]` = time column (patch units).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

FREQ, TIME = 0, 1
DISTANCE_METRICS = ("manhattan", "euclidean")


def extrapolates(posemb: Sequence[str]) -> bool:
    """Whether an encoder with these schemes runs on inputs longer than its training chunks.

    The one place that decides it: every scheme does except the learned absolute table
    (`LearnedAbsoluteEmbedding`, `max_time_patches` columns).
    """
    return "learned" not in posemb


def alibi_slopes(num_heads: int) -> np.ndarray:
    """Per-head ALiBi slopes of Press et al. (2022): [num_heads] float32.

    For n a power of two, m_h = 2^(-8h/n), h = 1..n. Otherwise the n' = 2^floor(log2 n) slopes,
    followed by the first n - n' of every other slope of the 2n' recipe.
    6 heads: [1/4, 1/16, 1/64, 1/256, 1/2, 1/8].
    """
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    base = 2 ** math.floor(math.log2(num_heads))
    slopes = power_of_two(base)
    if base != num_heads:
        slopes += power_of_two(2 * base)[0::2][: num_heads - base]
    return np.asarray(slopes, np.float32)


def pairwise_distance(
    coords_q: jax.Array, coords_k: jax.Array, metric: str = "manhattan"
) -> jax.Array:
    """Distances of all query/key coordinate pairs: [..., Nq, C], [..., Nk, C] -> [..., Nq, Nk]."""
    diff = coords_q[..., :, None, :].astype(jnp.float32) - coords_k[..., None, :, :]
    if metric == "manhattan":
        return jnp.abs(diff).sum(-1)
    if metric == "euclidean":
        # sqrt has an infinite derivative at 0; coordinates carry no gradient, but keep it safe.
        squared = jnp.square(diff).sum(-1)
        return jnp.where(squared > 0, jnp.sqrt(jnp.where(squared > 0, squared, 1.0)), 0.0)
    raise ValueError(f"unknown distance metric {metric!r}; expected one of {DISTANCE_METRICS}")


def rope_frequencies(dim: int, theta: float) -> jax.Array:
    """Rotation frequencies 1 / theta^(2k / dim), k = 0 .. dim/2 - 1: [dim // 2]."""
    if dim % 2:
        raise ValueError(f"RoPE needs an even dimension, got {dim}")
    return 1.0 / theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)


def _rotate(x: jax.Array, angles: jax.Array) -> jax.Array:
    """Rotates pairs (x[..., k], x[..., k + D/2]) by angles [..., N, D/2]."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def apply_rope(
    x: jax.Array, coords: jax.Array, theta: float = 100.0, mask: jax.Array | None = None
) -> jax.Array:
    """Axial rotary embedding (RoPE-ViT): rotates the last axis of q or k by coordinates.

    With C coordinate axes the feature axis is split into C equal parts and part c is rotated
    by coordinate c, so q_i . k_j depends on the coordinates only through c_i - c_j.

    Args:
      x: [..., N, D] queries or keys (D divisible by 2 * C).
      coords: [..., N, C] coordinates, broadcastable against x's leading axes; C = 2 for
        (freq_row, time_col), C = 1 for a 1-D form.
      theta: frequency base (100 in RoPE-ViT; 10^4 in language models).
      mask: [..., N] optional; tokens where it is False are not rotated (the CLS token).

    Returns:
      [..., N, D] rotated x.
    """
    num_axes, dim = coords.shape[-1], x.shape[-1]
    if dim % (2 * num_axes):
        raise ValueError(f"RoPE over {num_axes} axes needs D divisible by {2 * num_axes}; D={dim}")
    coords = coords.astype(jnp.float32)
    if mask is not None:
        coords = coords * mask[..., None]
    parts = jnp.split(x, num_axes, axis=-1)
    freqs = rope_frequencies(dim // num_axes, theta)
    rotated = [_rotate(part, coords[..., c, None] * freqs) for c, part in enumerate(parts)]
    return jnp.concatenate(rotated, axis=-1)


def sinusoidal_1d(positions: jax.Array, dim: int, max_wavelength: float = 10_000.0) -> jax.Array:
    """Transformer sin/cos embedding of positions [...] -> [..., dim] (sines then cosines)."""
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dimension, got {dim}")
    omega = 1.0 / max_wavelength ** (jnp.arange(dim // 2, dtype=jnp.float32) / (dim // 2))
    angles = positions.astype(jnp.float32)[..., None] * omega
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def sinusoidal_2d(coords: jax.Array, dim: int, max_wavelength: float = 10_000.0) -> jax.Array:
    """2-D sin-cos embedding (MAE / Myna): half the channels encode the frequency row, half the
    time column. coords [..., N, 2] -> [..., N, dim]; defined at any length."""
    if dim % 4:
        raise ValueError(f"2-D sinusoidal embedding needs dim divisible by 4, got {dim}")
    return jnp.concatenate(
        [sinusoidal_1d(coords[..., axis], dim // 2, max_wavelength) for axis in (FREQ, TIME)],
        axis=-1,
    )


class LearnedFrequencyEmbedding(nn.Module):
    """One learned vector per frequency row (the F-embed of 1D ALiBi + F-embed)."""

    num_rows: int
    dim: int

    @nn.compact
    def __call__(self, coords: jax.Array) -> jax.Array:
        """coords [..., N, 2] -> [..., N, dim]."""
        table = self.param("table", nn.initializers.normal(0.02), (self.num_rows, self.dim))
        return table[coords[..., FREQ]]


class LearnedAbsoluteEmbedding(nn.Module):
    """The learned absolute table (the Myna-RPE paper's baseline), one vector per
    (freq_row, time_col).

    It cannot extrapolate: asking for more time columns than `max_cols` is an error, not a
    silent crop or broadcast.
    """

    num_rows: int
    max_cols: int
    dim: int

    @nn.compact
    def __call__(self, coords: jax.Array, grid: Sequence[int]) -> jax.Array:
        """coords [..., N, 2] of a `grid` = (rows, cols) patch grid -> [..., N, dim]."""
        rows, cols = grid
        if rows > self.num_rows or cols > self.max_cols:
            raise ValueError(
                f"the learned absolute position table was built for {self.num_rows} frequency"
                f" rows x {self.max_cols} time patches, but the input has {rows} x {cols}."
                " A learned table cannot extrapolate: crop the input to the training length,"
                " embed in chunks (--mode chunks), or use a relative scheme"
                " (alibi2d, alibi1d + freq, rope, sinusoidal)."
            )
        table = self.param(
            "table", nn.initializers.normal(0.02), (self.num_rows, self.max_cols, self.dim)
        )
        return table[coords[..., FREQ], coords[..., TIME]]


@flax.struct.dataclass
class AlibiBias:
    """bias[b, h, i, j] = -slopes[h] * d(coords[b, i], coords[b, j]) between patch tokens.

    Tokens where `is_patch` is False (the CLS) get zero bias to and from every token.

    Attributes:
      coords: [B, N, C] coordinates (C = 2 for 2-D ALiBi, C = 1 (time) for 1-D ALiBi).
      is_patch: [B, N] bool.
      slopes: [H].
      metric: "manhattan" or "euclidean" (identical for C = 1).
      tile_skip: blockwise attention skips the tiles this bias makes exactly zero.
    """

    coords: jax.Array
    is_patch: jax.Array
    slopes: jax.Array
    metric: str = flax.struct.field(pytree_node=False, default="manhattan")
    tile_skip: bool = flax.struct.field(pytree_node=False, default=False)

    def block(self, q_start, q_size: int, k_start, k_size: int) -> jax.Array:
        """Bias [B, H, q_size, k_size]: queries [q_start, +q_size) vs keys [k_start, +k_size)."""
        take = lambda a, start, size: jax.lax.dynamic_slice_in_dim(a, start, size, axis=1)
        distance = pairwise_distance(
            take(self.coords, q_start, q_size), take(self.coords, k_start, k_size), self.metric
        )
        both = (
            take(self.is_patch, q_start, q_size)[:, :, None]
            & (take(self.is_patch, k_start, k_size)[:, None, :])
        )
        distance = jnp.where(both, distance, 0.0)
        return -self.slopes[:, None, None] * distance[:, None, :, :]

    def dense(self) -> jax.Array:
        """The full [B, H, N, N] bias."""
        n = self.coords.shape[1]
        return self.block(0, n, 0, n)

    def pad(self, num_tokens: int) -> AlibiBias:
        """Appends tokens with coordinate 0 and `is_patch` False up to `num_tokens` in all."""
        extra = num_tokens - self.coords.shape[1]
        return self.replace(
            coords=jnp.pad(self.coords, ((0, 0), (0, extra), (0, 0))),
            is_patch=jnp.pad(self.is_patch, ((0, 0), (0, extra))),
        )

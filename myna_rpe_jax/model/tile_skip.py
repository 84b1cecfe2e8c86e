"""Which attention tiles an ALiBi bias makes exactly zero, decided without computing them.

A score is s[r, c] = q_r . k_c / sqrt(Dh) - slope * d(r, c) (d = 0 when r or c is not a patch,
e.g. the CLS). For a query tile I and a key tile J, Cauchy-Schwarz and the tiles' coordinate
ranges give, for every query row r of I,

    s[r, c] <= bound[r] = |q_r| max_{c in J valid} |k_c| / sqrt(Dh) - slope * dmin(I, J)

where dmin(I, J) <= d(r, c) is the distance between the coordinate boxes of the two tiles (the
sum, or root of the sum of squares, of the per-axis gaps between [min, max] of the queries of I
and of the valid keys of J) and dmin = 0 when I holds a non-patch query or J a valid non-patch key
(tiles with the CLS never skip). Masked keys score exactly `blockwise.MASKED` whatever the bound.

If bound[r] - m[r] < -MARGIN for every row r, with m[r] the row's current running maximum in the
forward pass (or its log-sum-exp in the backward pass, which is >= every score), then every
exp(s - m) of the tile is exactly 0 in float32 (exp(x) rounds to 0 below ln(2^-150) ~ -103.97;
the margin covers the float32 rounding of the scores, norms and distances) and the maximum does
not move, so skipping the tile leaves the running maximum, the denominator, the accumulator and
every gradient bit-identical to computing it. `blockwise` skips per tile and head prefix (heads
in decreasing slope), the fused kernel (`fused_alibi`) per tile in each program.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from myna_rpe_jax.model.positional import AlibiBias

MARGIN = 110.0
# Coordinate of an empty range (a key tile with no valid key): far from everything, but small
# enough that its square stays finite in float32.
_FAR = 1e15


@flax.struct.dataclass
class TileBounds:
    """Per-tile summaries of one attention call (B examples, H heads, T tiles of `block`).

    Attributes:
      q_norm: [B, H, Np] |q_r| of every query.
      k_norm: [B, H, T] max |k_c| / sqrt(Dh) over the valid keys of each key tile (0 if
        none), so that q_norm x k_norm bounds the scaled logit q.k / sqrt(Dh).
      distance: [B, T, T] dmin(I, J) of every query tile I and key tile J: a lower bound on
        d(r, c) over the queries r of I and the valid keys c of J.
    """

    q_norm: jax.Array
    k_norm: jax.Array
    distance: jax.Array


def tile_bounds(q, k, bias: AlibiBias, key_valid, block: int) -> TileBounds:
    """Summaries of q, k [B, Np, H, Dh] and the bias's coordinates over Np tokens, key_valid
    ([B, Np] bool or None: all valid), in tiles of `block` tokens (Np a multiple of block)."""
    batch, padded, heads, head_dim = q.shape
    tiles = lambda x: x.reshape(batch, padded // block, block, *x.shape[2:])
    valid = jnp.ones((batch, padded), bool) if key_valid is None else key_valid
    norm = lambda t: jnp.sqrt(jnp.square(t.astype(jnp.float32)).sum(-1)).swapaxes(1, 2)
    k_norm = jnp.where(valid[:, None], norm(k), 0.0) * head_dim**-0.5
    coords = bias.coords.astype(jnp.float32)
    valid_coords = lambda fill: tiles(jnp.where(valid[..., None], coords, fill))
    # Coordinate ranges [B, T, C] of the queries of each tile and of the valid keys of each.
    q_lo, q_hi = tiles(coords).min(2), tiles(coords).max(2)
    k_lo, k_hi = valid_coords(_FAR).min(2), valid_coords(-_FAR).max(2)
    gap = jnp.maximum(k_lo[:, None] - q_hi[:, :, None], q_lo[:, :, None] - k_hi[:, None])
    gap = jnp.maximum(gap, 0.0)  # [B, T (query), T (key), C]
    distance = gap.sum(-1) if bias.metric == "manhattan" else jnp.sqrt(jnp.square(gap).sum(-1))
    q_cls = tiles(~bias.is_patch).any(2)
    k_cls = tiles(valid & ~bias.is_patch).any(2)
    return TileBounds(
        q_norm=norm(q),
        k_norm=k_norm.reshape(batch, heads, padded // block, block).max(-1),
        distance=jnp.where(q_cls[:, :, None] | k_cls[:, None], 0.0, distance),
    )


def score_bound(bounds: TileBounds, slopes, i, j, block: int) -> jax.Array:
    """Upper bound [B, H, block] on the scores of each query row of tile i against every valid
    key of tile j; slopes [H]."""
    q_norm = jax.lax.dynamic_slice_in_dim(bounds.q_norm, i * block, block, axis=2)
    k_norm = jax.lax.dynamic_index_in_dim(bounds.k_norm, j, axis=2)  # [B, H, 1]
    distance = bounds.distance[:, i, j][:, None, None]
    return q_norm * k_norm - slopes[None, :, None] * distance


def skipped_heads(bound: jax.Array, reference: jax.Array) -> jax.Array:
    """Scalar int32: how many leading heads have exp(score - reference) == 0 in float32 for
    every score under `bound` (bound, reference [B, H, block]; heads in decreasing slope)."""
    underflows = jnp.all(bound - reference < -MARGIN, axis=(0, 2))
    return jnp.cumprod(underflows.astype(jnp.int32)).sum()

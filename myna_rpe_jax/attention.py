"""Multi-head attention with ALiBi biases evaluated from token coordinates.

The bias is not an [H, N, N] array handed around but an `AlibiBias`: the coordinates and
slopes it is computed from. Dense attention materialises it at once; blockwise attention
(long tracks) evaluates it one block at a time.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from myna_rpe_jax import positional


@flax.struct.dataclass
class AlibiBias:
    """bias[b, h, i, j] = -slopes[h] * d(coords[b, i], coords[b, j]) between patch tokens.

    Tokens where `is_patch` is False (the CLS) get zero bias to and from every token.

    Attributes:
      coords: [B, N, C] coordinates (C = 2 for 2-D ALiBi, C = 1 (time) for 1-D ALiBi).
      is_patch: [B, N] bool.
      slopes: [H].
      metric: "manhattan" or "euclidean" (identical for C = 1).
    """

    coords: jax.Array
    is_patch: jax.Array
    slopes: jax.Array
    metric: str = flax.struct.field(pytree_node=False, default="manhattan")

    def block(self, q_start, q_size: int, k_start, k_size: int) -> jax.Array:
        """Bias [B, H, q_size, k_size]: queries [q_start, +q_size) vs keys [k_start, +k_size)."""
        take = lambda a, start, size: jax.lax.dynamic_slice_in_dim(a, start, size, axis=1)
        distance = positional.pairwise_distance(
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


def dense_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, bias: AlibiBias | None = None
) -> jax.Array:
    """Softmax attention, scores in float32.

    Args:
      q, k, v: [B, N, H, Dh].
      bias: optional ALiBi bias over the N tokens.

    Returns:
      [B, N, H, Dh].
    """
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.dense()
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: AlibiBias | None = None) -> jax.Array:
    """Attention over [B, N, H, Dh] inputs; the implementation is chosen by sequence length."""
    return dense_attention(q, k, v, bias)

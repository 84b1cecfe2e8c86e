"""Contrastive objectives on embeddings: symmetric InfoNCE and its accuracy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def l2_normalize(z: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Rows of z [..., D] scaled to unit norm, in float32; zero rows stay zero with a finite
    gradient. The one row normalisation of every objective."""
    # rsqrt of a clamped square avoids norm's infinite derivative at 0.
    z = z.astype(jnp.float32)
    squared = jnp.sum(jnp.square(z), axis=-1, keepdims=True)
    return z * jax.lax.rsqrt(jnp.maximum(squared, eps**2))


def info_nce_logits(z_a: jax.Array, z_b: jax.Array, temperature: float) -> jax.Array:
    """Cosine similarities over temperature: z_a [B, D], z_b [B, D] -> [B, B]."""
    z_a, z_b = l2_normalize(z_a), l2_normalize(z_b)
    return z_a @ z_b.T / temperature


def info_nce(z_a: jax.Array, z_b: jax.Array, temperature: float = 0.1) -> jax.Array:
    """Symmetric InfoNCE (CLIP form: the negatives of a view are the other view's rows only,
    B - 1 of them, not SimCLR's 2(B - 1)).

    Row i of z_a and row i of z_b are a positive pair; every other row of the other view is a
    negative. The loss is the mean of the cross-entropies a->b and b->a with labels arange(B).

    Args:
      z_a, z_b: [B, D] embeddings of the two views (any scale: they are normalised here).
      temperature: softmax temperature tau.

    Returns:
      scalar loss.
    """
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(
            f"info_nce expects two [B, D] arrays of one shape, got {z_a.shape}, {z_b.shape}"
        )
    logits = info_nce_logits(z_a, z_b, temperature)
    labels = jnp.arange(logits.shape[0])
    a_to_b = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    b_to_a = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels)
    return 0.5 * (a_to_b.mean() + b_to_a.mean())


def contrastive_accuracy(z_a: jax.Array, z_b: jax.Array) -> jax.Array:
    """Fraction of rows whose most similar row in the other view is their positive (both ways)."""
    logits = info_nce_logits(z_a, z_b, 1.0)
    labels = jnp.arange(logits.shape[0])
    return 0.5 * ((logits.argmax(1) == labels).mean() + (logits.argmax(0) == labels).mean())

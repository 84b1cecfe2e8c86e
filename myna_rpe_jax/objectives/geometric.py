"""Geometric regularisers of the embedding space: a k-means loss and a convex-hull loss.

After "Convex Hull and K-Means Loss for Self-Supervised Representations" (Eng. Appl. AI, 2024):
the k-means term tightens clusters, the hull term keeps each one spread out. That paper's
formulas were not available, so the definitions are ours; docs/losses.md derives them. Both
act on unit-normalised embeddings; the centroids [K, D] live in the train state, are moved by
mini-batch k-means (`kmeans_update`) and are under stop-gradient in both losses.

    loss = info_nce(z_a, z_b) + w_km * kmeans_loss(z, centroids)
           + w_hull * convex_hull_loss(z, assign_clusters(z, centroids), centroids)
    centroids = kmeans_update(centroids, z)     # after the step, outside the gradient
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from myna_rpe_jax.objectives.contrastive import l2_normalize


def _squared_distances(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """|x_i - c_k|^2 for x [B, D], centroids [K, D] -> [B, K], clamped at 0 against rounding."""
    d2 = (
        jnp.sum(x * x, axis=-1, keepdims=True)
        - 2.0 * x @ centroids.T
        + jnp.sum(centroids * centroids, axis=-1)[None, :]
    )
    return jnp.maximum(d2, 0.0)


def _check_shapes(z: jax.Array, centroids: jax.Array) -> None:
    if z.ndim != 2 or centroids.ndim != 2 or z.shape[1] != centroids.shape[1]:
        raise ValueError(
            f"expected embeddings [B, D] and centroids [K, D] with the same D, "
            f"got {z.shape} and {centroids.shape}"
        )


def assign_clusters(z: jax.Array, centroids: jax.Array) -> jax.Array:
    """Index of the nearest centroid of each normalised embedding (no gradient).

    Args:
      z: [B, D] embeddings (any scale: normalised here).
      centroids: [K, D] cluster centres in the normalised embedding space.

    Returns:
      [B] int32 cluster indices; ties go to the lowest index.
    """
    _check_shapes(z, centroids)
    x = jax.lax.stop_gradient(l2_normalize(z))
    c = jax.lax.stop_gradient(centroids.astype(jnp.float32))
    return jnp.argmin(_squared_distances(x, c), axis=-1).astype(jnp.int32)


def kmeans_loss(z: jax.Array, centroids: jax.Array) -> jax.Array:
    """Mean squared distance of each normalised embedding to its nearest centroid.

        L = (1/B) sum_i |z_i/|z_i| - c_{a(i)}|^2,   a(i) = argmin_k |z_i/|z_i| - c_k|^2

    The assignment a(i) and the centroids are under stop-gradient: the gradient only moves
    embeddings towards their current centroid (the M-step of k-means is `kmeans_update`).

    Args:
      z: [B, D] embeddings (any scale: normalised here).
      centroids: [K, D] cluster centres in the normalised embedding space.

    Returns:
      scalar loss, in [0, 4] for centroids inside the unit ball (as kmeans_update keeps them).
    """
    _check_shapes(z, centroids)
    x = l2_normalize(z)
    c = jax.lax.stop_gradient(centroids.astype(jnp.float32))
    nearest = c[assign_clusters(z, centroids)]
    return jnp.mean(jnp.sum((x - nearest) ** 2, axis=-1))


def _ridge_log_det(scatter: jax.Array, eps: float) -> jax.Array:
    """log det(S + eps I) of one [D, D] scatter matrix S, by Cholesky (finite gradient even
    for a rank-deficient S). Called once per cluster through lax.map: a batched factorisation
    deadlocked the data-parallel step on several CPU devices (docs/losses.md)."""
    chol = jnp.linalg.cholesky(scatter + eps * jnp.eye(scatter.shape[-1], dtype=scatter.dtype))
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))


def convex_hull_loss(
    z: jax.Array, assignments: jax.Array, centroids: jax.Array, eps: float = 1e-4
) -> jax.Array:
    """Negative log-volume of each cluster's hull, via its regularised scatter ellipsoid.

    The mean over non-empty clusters k of -(1 / (2D)) log det(S_k + eps I), with
    S_k = (1/n_k) sum_{i in C_k} (x_i - c_k)(x_i - c_k)^T the scatter [D, D] of the unit rows
    x_i of cluster k about its centroid. It grows as a cluster collapses and shrinks as it
    spreads; docs/losses.md derives it and its gradient.

    Args:
      z: [B, D] embeddings (any scale: normalised here).
      assignments: [B] int cluster index of each row (e.g. `assign_clusters`), held constant.
      centroids: [K, D] cluster centres (under stop-gradient).
      eps: ridge added to every scatter matrix; well below the per-axis variance of a spread
        cluster (about 1/D for unit vectors).

    Returns:
      scalar loss, 0 if every cluster is empty.
    """
    _check_shapes(z, centroids)
    if assignments.shape != z.shape[:1]:
        raise ValueError(f"assignments must be [B] = {z.shape[:1]}, got {assignments.shape}")
    num_clusters, dim = centroids.shape
    x = l2_normalize(z)
    c = jax.lax.stop_gradient(centroids.astype(jnp.float32))
    member = jax.nn.one_hot(assignments, num_clusters, dtype=jnp.float32)  # [B, K]
    counts = member.sum(axis=0)  # [K]
    centred = x[None, :, :] - c[:, None, :]  # [K, B, D]
    scatter = jnp.einsum("bk,kbd,kbe->kde", member, centred, centred)
    scatter = scatter / jnp.maximum(counts, 1.0)[:, None, None]
    log_det = jax.lax.map(functools.partial(_ridge_log_det, eps=eps), scatter)  # [K]
    present = (counts > 0).astype(jnp.float32)
    per_cluster = -log_det / (2.0 * dim)
    return jnp.sum(present * per_cluster) / jnp.maximum(present.sum(), 1.0)


def init_centroids(rng: jax.Array, z: jax.Array, num_clusters: int) -> jax.Array:
    """Greedy k-means++ seeding (scikit-learn's variant: the best of 2 + log K candidates per
    centroid) from a batch of embeddings: z [B, D] -> centroids [K, D], unit rows, K <= B."""
    if z.ndim != 2:
        raise ValueError(f"expected embeddings [B, D], got {z.shape}")
    if not 1 <= num_clusters <= z.shape[0]:
        raise ValueError(
            f"num_clusters must be in [1, batch size {z.shape[0]}], got {num_clusters}: "
            "seed the centroids from a batch at least as large as the number of clusters"
        )
    x = jax.lax.stop_gradient(l2_normalize(z))
    batch = x.shape[0]
    num_candidates = 2 + int(math.log(num_clusters))
    first_rng, rng = jax.random.split(rng)
    first = x[jax.random.randint(first_rng, (), 0, batch)]
    centroids = jnp.zeros((num_clusters, x.shape[1]), jnp.float32).at[0].set(first)
    d2 = jnp.sum((x - first) ** 2, axis=-1)

    def add_one(k, carry):
        centroids, d2 = carry
        total = d2.sum()
        # All points identical to the seeds so far: fall back to a uniform draw.
        probs = jnp.where(total > 0, d2 / jnp.maximum(total, 1e-30), 1.0 / batch)
        picks = jax.random.choice(
            jax.random.fold_in(rng, k), batch, shape=(num_candidates,), p=probs
        )
        candidate_d2 = jnp.minimum(d2, _squared_distances(x, x[picks]).T)  # [L, B]
        best = jnp.argmin(candidate_d2.sum(axis=-1))
        return centroids.at[k].set(x[picks[best]]), candidate_d2[best]

    centroids, _ = jax.lax.fori_loop(1, num_clusters, add_one, (centroids, d2))
    return centroids


def kmeans_update(centroids: jax.Array, z: jax.Array, momentum: float = 0.99) -> jax.Array:
    """One mini-batch k-means step on the normalised embeddings (no gradient).

    Each centroid with members in the batch moves to an EMA of their mean; one with none is
    re-seeded farthest-first onto the worst-fitted embedding (docs/losses.md). Use batches
    much larger than K, so that a live cluster is rarely empty by chance.

    Args:
      centroids: [K, D] current centres.
      z: [B, D] embeddings of this batch (any scale: normalised here).
      momentum: EMA factor in [0, 1); 0 is a plain Lloyd step on the batch.

    Returns:
      [K, D] new centres.
    """
    _check_shapes(z, centroids)
    num_clusters = centroids.shape[0]
    x = jax.lax.stop_gradient(l2_normalize(z))
    c = jax.lax.stop_gradient(centroids.astype(jnp.float32))
    d2 = _squared_distances(x, c)
    assignments = jnp.argmin(d2, axis=-1)
    member = jax.nn.one_hot(assignments, num_clusters, dtype=jnp.float32)  # [B, K]
    counts = member.sum(axis=0)
    batch_means = (member.T @ x) / jnp.maximum(counts, 1.0)[:, None]
    moved = jnp.where(counts[:, None] > 0, momentum * c + (1.0 - momentum) * batch_means, c)

    def reseed(k, carry):
        centroids, misfit = carry
        seed = x[jnp.argmax(misfit)]
        is_empty = counts[k] == 0
        covered = jnp.minimum(misfit, jnp.sum((x - seed) ** 2, axis=-1))
        return (
            centroids.at[k].set(jnp.where(is_empty, seed, centroids[k])),
            jnp.where(is_empty, covered, misfit),
        )

    misfit = jnp.min(d2, axis=-1)  # squared distance of each embedding to its centroid
    moved, _ = jax.lax.fori_loop(0, num_clusters, reseed, (moved, misfit))
    return moved

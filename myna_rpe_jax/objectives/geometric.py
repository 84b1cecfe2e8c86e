"""Geometric regularisers of the embedding space: a k-means loss and a convex-hull loss.

The idea is that of "Convex Hull and K-Means Loss for Self-Supervised Representations"
(Eng. Appl. AI, 2024, doi:10.1016/j.engappai.2024.108612): pull embeddings towards the
centroid of their cluster (tight, coherent clusters) while keeping each cluster spread out
(diverse members). That paper's exact formulas could not be found in any source available to
this project, so the two terms below are our own definitions, derived in their docstrings.

Both terms act on the unit-normalised embeddings z / |z|. The centroids [K, D] live in the
train state, not in the parameters: `kmeans_update` moves them by mini-batch k-means (an EMA
of the mean of the embeddings assigned to each centroid, empty clusters re-seeded from the
batch) and both losses hold them under stop-gradient, so the optimiser can never drag the
centroids onto the embeddings (the collapse a learnable-centroid k-means loss invites).

Typical use in a train step (z: [B, D] embeddings, centroids from the train state):

    loss = info_nce(z_a, z_b) + w_km * kmeans_loss(z, centroids)
           + w_hull * convex_hull_loss(z, assign_clusters(z, centroids), centroids)
    centroids = kmeans_update(centroids, z)     # after the step, outside the gradient
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp


def unit_rows(z: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Rows of z [..., D] scaled to unit L2 norm; a zero row stays zero with a finite gradient.

    Clamping the squared norm (not the norm) keeps the gradient at z = 0 finite: the gradient
    of sqrt at 0 is infinite, that of sum(z^2) is 0.
    """
    z = z.astype(jnp.float32)
    return z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), eps))


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
    x = jax.lax.stop_gradient(unit_rows(z))
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
    x = unit_rows(z)
    c = jax.lax.stop_gradient(centroids.astype(jnp.float32))
    nearest = c[assign_clusters(z, centroids)]
    return jnp.mean(jnp.sum((x - nearest) ** 2, axis=-1))


def _ridge_log_det(scatter: jax.Array, eps: float) -> jax.Array:
    """log det(S + eps I) of one [D, D] scatter matrix S.

    Cholesky of S + eps I (eigenvalues >= eps) is stable and its gradient stays finite even
    when S is rank-deficient, unlike an eigendecomposition with repeated zero eigenvalues.
    `convex_hull_loss` factors its K matrices one at a time (lax.map), not as one batched
    call: XLA:CPU spreads a batched factorisation over its intra-op thread pool from inside
    that pool, and with several devices in one process (each running the step on a pool
    thread) that deadlocked a data-parallel train step (4 CPU devices on 2 cores).
    """
    chol = jnp.linalg.cholesky(scatter + eps * jnp.eye(scatter.shape[-1], dtype=scatter.dtype))
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))


def convex_hull_loss(
    z: jax.Array, assignments: jax.Array, centroids: jax.Array, eps: float = 1e-4
) -> jax.Array:
    """Negative log-volume of each cluster's hull, via its regularised scatter ellipsoid.

    Definition. For cluster k with members x_i = z_i / |z_i| (i in C_k, n_k = |C_k| >= 1) and
    centroid c_k, the scatter about the centroid is

        S_k = (1/n_k) sum_{i in C_k} (x_i - c_k)(x_i - c_k)^T              [D, D]

    and the loss is the mean over non-empty clusters of

        L_k = -(1 / (2D)) log det(S_k + eps I).

    Derivation. The ellipsoid {x : (x - c)^T S^-1 (x - c) <= r^2} has volume
    V_D r^D sqrt(det S), so -(1/(2D)) log det S = -(1/D) log(volume) + const: the negative
    log of the ellipsoid's geometric-mean radius. For points that fill a convex body K
    uniformly, sqrt(det Cov)^(1/D) = L_K vol(K)^(1/D), where the isotropic constant L_K of a
    convex body is bounded below by a universal constant and grows at most slowly with D
    (Bourgain's slicing problem); so L_k tracks -(1/D) log vol(convex hull) of the cluster up
    to a near-constant. A batch holds fewer members than dimensions, so the hull is flat and
    its volume zero; eps I thickens it by sqrt(eps) in every direction so the term stays finite
    and keeps rewarding spread along the directions the members do span.
    The gradient on a member is dL_k/dx_i = -(1/(D n_k)) (S_k + eps I)^-1 (x_i - c_k): it
    pushes members away from the centroid, hardest along the thinnest axes of the cluster, so
    the term grows as a cluster collapses (towards -(1/2) log eps when all members sit on the
    centroid) and shrinks as it spreads. On unit vectors |x_i - c_k| <= 1 + |c_k|, so the
    loss is bounded below and cannot run away; the k-means loss pulls the other way.
    Centring on the (EMA) centroid rather than the batch mean keeps a single-member cluster
    meaningful and, at the k-means fixed point where c_k is the cluster mean, makes S_k an
    unbiased estimate of the cluster covariance.

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
    x = unit_rows(z)
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
    """Greedy k-means++ seeding from a batch of embeddings: [B, D] -> centroids [K, D].

    The first centroid is a uniformly drawn normalised embedding. Each next one is the best of
    2 + log(K) candidates drawn with probability proportional to the squared distance to the
    nearest centroid chosen so far (Arthur & Vassilvitskii, 2007), "best" meaning the lowest
    k-means cost afterwards (scikit-learn's greedy variant): plain k-means++ still puts two
    seeds in one of several well-separated blobs fairly often.
    """
    if z.ndim != 2:
        raise ValueError(f"expected embeddings [B, D], got {z.shape}")
    if not 1 <= num_clusters <= z.shape[0]:
        raise ValueError(
            f"num_clusters must be in [1, batch size {z.shape[0]}], got {num_clusters}: "
            "seed the centroids from a batch at least as large as the number of clusters"
        )
    x = jax.lax.stop_gradient(unit_rows(z))
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

    Each centroid with members in the batch moves to an EMA of their mean,
        c_k <- momentum * c_k + (1 - momentum) * mean_{i in C_k} z_i / |z_i|;
    a centroid with no member in the batch (dead, or a duplicate that loses every tie) is
    re-seeded onto the batch embedding farthest from every centroid so far, farthest-first:
    empty centroids in index order each take the current worst-fitted embedding, whose
    neighbourhood then counts as covered, so several empty centroids land in different
    under-served regions instead of all in the worst one. Use batches much larger than K, so
    that a live cluster is rarely empty by chance.

    Args:
      centroids: [K, D] current centres.
      z: [B, D] embeddings of this batch (any scale: normalised here).
      momentum: EMA factor in [0, 1); 0 is a plain Lloyd step on the batch.

    Returns:
      [K, D] new centres.
    """
    _check_shapes(z, centroids)
    num_clusters = centroids.shape[0]
    x = jax.lax.stop_gradient(unit_rows(z))
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

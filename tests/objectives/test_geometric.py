"""k-means loss, mini-batch k-means and the convex-hull loss against numpy/scipy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from myna_rpe_jax.objectives.geometric import (
    assign_clusters,
    convex_hull_loss,
    init_centroids,
    kmeans_loss,
    kmeans_update,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _blobs(rng, means, per_blob, std=0.05):
    """Points around each mean (in blob order) and their blob labels."""
    points = np.concatenate([m + std * rng.normal(size=(per_blob, len(m))) for m in means])
    return points.astype(np.float32), np.repeat(np.arange(len(means)), per_blob)


def _np_hull(z, assignments, centroids, eps):
    x = _unit(z.astype(np.float64))
    dim, values = x.shape[1], []
    for k, c in enumerate(centroids.astype(np.float64)):
        members = x[assignments == k]
        if len(members):
            scatter = (members - c).T @ (members - c) / len(members)
            values.append(-np.linalg.slogdet(scatter + eps * np.eye(dim))[1] / (2 * dim))
    return np.mean(values)


@pytest.fixture(scope="module")
def four_blobs():
    """4 well-separated unit means in 8-D and the mean of each blob's *normalised* points."""
    rng = np.random.default_rng(0)
    means = _unit(rng.normal(size=(4, 8)))
    assert cdist(means, means)[~np.eye(4, dtype=bool)].min() > 0.8
    big, labels = _blobs(rng, means, 20000)
    true = np.stack([_unit(big[labels == k]).mean(0) for k in range(4)])
    return means, true


def test_assignment_and_kmeans_loss_match_scipy():
    rng = np.random.default_rng(1)
    z = (3.0 * rng.normal(size=(20, 6))).astype(np.float32)
    centroids = (0.5 * rng.normal(size=(5, 6))).astype(np.float32)
    d2 = cdist(_unit(z), centroids, "sqeuclidean")
    np.testing.assert_array_equal(assign_clusters(z, centroids), d2.argmin(1))
    np.testing.assert_allclose(kmeans_loss(z, centroids), d2.min(1).mean(), rtol=1e-5)

    nearest = centroids[d2.argmin(1)]
    unit = lambda z: z / jnp.linalg.norm(z, axis=-1, keepdims=True)  # noqa: E731
    want = jax.grad(lambda z: jnp.mean(jnp.sum((unit(z) - nearest) ** 2, -1)))(z)
    got = jax.grad(kmeans_loss, argnums=(0, 1))(z, centroids)
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(got[1], 0.0)  # centroids are not trained by the optimiser


def test_hull_loss_matches_numpy_slogdet():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(30, 5)).astype(np.float32)
    centroids = _unit(rng.normal(size=(4, 5))).astype(np.float32)
    assignments = rng.integers(0, 2, size=30)
    assignments[7] = 3  # cluster 3 has one member, cluster 2 none
    got = convex_hull_loss(z, jnp.asarray(assignments), centroids, eps=1e-3)
    np.testing.assert_allclose(got, _np_hull(z, assignments, centroids, 1e-3), rtol=1e-4)


def test_hull_loss_grows_as_a_cluster_collapses():
    """Same members, spread sigma around the centroid: loss strictly decreases with sigma."""
    rng = np.random.default_rng(3)
    centroid = _unit(rng.normal(size=(1, 16))).astype(np.float32)
    noise = rng.normal(size=(40, 16)).astype(np.float32)
    assignments = jnp.zeros(40, jnp.int32)
    sigmas = [0.001, 0.01, 0.03, 0.1, 0.3]
    losses = [convex_hull_loss(centroid + s * noise, assignments, centroid) for s in sigmas]
    assert np.all(np.diff(losses) < 0), losses
    # Collapsing onto a line (rank 1) costs far more than an isotropic spread of the same size.
    line = centroid + 0.1 * rng.normal(size=(40, 1)) * noise[:1]
    assert convex_hull_loss(line, assignments, centroid) > losses[3] + 1.0


def test_hull_gradient_pushes_members_outwards_and_spreads_them():
    rng = np.random.default_rng(4)
    centroid = _unit(rng.normal(size=(1, 8))).astype(np.float32)
    z = _unit(centroid + 0.05 * rng.normal(size=(12, 8))).astype(np.float32)
    assignments = jnp.zeros(12, jnp.int32)
    grad = jax.grad(convex_hull_loss)(z, assignments, centroid)
    assert np.all(np.sum(-grad * (z - centroid), axis=1) > 0)  # descent moves away from c
    stepped = _unit(z - 1e-3 * grad / np.abs(grad).max())
    spread = lambda x: np.linalg.slogdet(np.cov(x.T) + 1e-6 * np.eye(8))[1]  # noqa: E731
    assert spread(stepped) > spread(z)


def test_kmeans_update_one_step_matches_numpy():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(10, 4)).astype(np.float32)
    x = _unit(z)
    far = np.full((2, 4), 5.0, np.float32)  # two dead centroids that no point chooses
    centroids = np.concatenate([x[:2] + 0.01, far]).astype(np.float32)
    momentum = 0.7
    got = np.asarray(kmeans_update(centroids, z, momentum))

    d2 = cdist(x, centroids, "sqeuclidean")
    assign = d2.argmin(1)
    expected = centroids.astype(np.float64).copy()
    for k in range(2):
        expected[k] = momentum * centroids[k] + (1 - momentum) * x[assign == k].mean(0)
    misfit = d2.min(1)
    for k in (2, 3):  # farthest-first: each seed covers its neighbourhood for the next one
        expected[k] = x[misfit.argmax()]
        misfit = np.minimum(misfit, ((x - expected[k]) ** 2).sum(1))
    assert not np.allclose(expected[2], expected[3])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@jax.jit
def _run_minibatch_kmeans(centroids, batches):
    """kmeans_update (momentum 0.8) over batches [steps, B, D]."""
    return jax.lax.scan(lambda c, batch: (kmeans_update(c, batch, 0.8), None), centroids, batches)[
        0
    ]


_init_centroids = jax.jit(init_centroids, static_argnums=2)


def _matched_error(centroids, true):
    rows, cols = linear_sum_assignment(cdist(true, centroids))
    return np.abs(np.asarray(centroids)[cols] - true[rows]).max()


def test_minibatch_kmeans_converges_from_kmeans_plus_plus(four_blobs):
    means, true = four_blobs
    rng = np.random.default_rng(6)
    batches = np.stack([rng.permutation(_blobs(rng, means, 64)[0]) for _ in range(150)])
    for seed in range(3):
        start = _init_centroids(jax.random.key(seed), batches[0], 4)
        assert _matched_error(start, true) < 0.3  # one seed per blob
        assert _matched_error(_run_minibatch_kmeans(start, batches), true) < 0.01


def test_dead_and_duplicate_centroids_are_reseeded_and_converge(four_blobs):
    means, true = four_blobs
    rng = np.random.default_rng(7)
    batches = np.stack([rng.permutation(_blobs(rng, means, 64)[0]) for _ in range(150)])
    # Blob 0 and 1 covered, one duplicate of blob 1 (loses every tie), one centroid far away.
    start = np.stack([true[0], true[1], true[1], np.full(8, 10.0)]).astype(np.float32)
    after_one = np.asarray(kmeans_update(start, batches[0], 0.8))
    batch_points = _unit(batches[0])
    for k in (2, 3):
        assert np.min(np.abs(batch_points - after_one[k]).max(1)) < 1e-6  # re-seeded on a point
    assert _matched_error(_run_minibatch_kmeans(start, batches), true) < 0.01


def test_init_centroids_picks_distinct_batch_points():
    rng = np.random.default_rng(8)
    z = rng.normal(size=(16, 5)).astype(np.float32)
    start = np.asarray(_init_centroids(jax.random.key(0), z, 6))
    matches = cdist(start, _unit(z)).argmin(1)
    np.testing.assert_allclose(start, _unit(z)[matches], atol=1e-6)
    assert len(set(matches.tolist())) == 6
    assert np.all(np.isfinite(init_centroids(jax.random.key(1), np.ones((4, 3)), 3)))
    with pytest.raises(ValueError, match="num_clusters"):
        init_centroids(jax.random.key(0), z, 17)


@pytest.mark.parametrize(
    "z",
    [
        np.ones((6, 4), np.float32),  # identical embeddings: one cluster, others empty
        np.zeros((6, 4), np.float32),  # zero embeddings
        np.eye(6, 4, dtype=np.float32),  # two zero rows, singleton clusters
    ],
)
def test_edge_cases_have_finite_values_and_gradients(z):
    centroids = jnp.asarray(_unit(np.random.default_rng(9).normal(size=(3, 4))), jnp.float32)

    def total(z):
        assignments = assign_clusters(z, centroids)
        return kmeans_loss(z, centroids) + convex_hull_loss(z, assignments, centroids)

    value, grad = jax.jit(jax.value_and_grad(total))(jnp.asarray(z))
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert np.all(np.isfinite(kmeans_update(centroids, z)))
    # A singleton cluster's loss and gradient are finite too.
    single = jax.value_and_grad(convex_hull_loss)(
        jnp.asarray(z[:1] + 1.0), jnp.zeros(1, jnp.int32), centroids
    )
    assert np.isfinite(single[0]) and np.all(np.isfinite(single[1]))


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match="same D"):
        kmeans_loss(jnp.ones((4, 3)), jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="assignments must be"):
        convex_hull_loss(jnp.ones((4, 3)), jnp.zeros(3, jnp.int32), jnp.ones((2, 3)))

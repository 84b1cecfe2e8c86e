import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import nnls

from myna_rpe_jax.playlist import hull


def reference_distance(points: np.ndarray, x: np.ndarray) -> float:
    """Distance to the hull by scipy NNLS with a heavily weighted sum-to-one row (float64)."""
    points, x = points.astype(np.float64), x.astype(np.float64)
    weight = 1e4 * (np.abs(points).max() + np.abs(x).max())
    a = np.vstack([points.T, np.full((1, len(points)), weight)])
    w, _ = nnls(a, np.append(x, weight), maxiter=100 * len(points))
    return float(np.linalg.norm(points.T @ w - x))


def embeddings_like(rng, m: int, d: int, extra: int) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised vectors sharing a common direction, like CLS embeddings: points, others."""
    common = rng.normal(size=d)
    e = 2 * common / np.linalg.norm(common) + rng.normal(size=(m + extra, d)) / np.sqrt(d)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return e[:m], e[m:]


def bisection_projection(v: np.ndarray) -> np.ndarray:
    """Projection onto the simplex by bisection on the threshold (float64)."""
    lo, hi = v.min() - 1, v.max()
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.maximum(v - mid, 0).sum() > 1 else (lo, mid)
    return np.maximum(v - (lo + hi) / 2, 0)


def test_projection_matches_bisection_for_one_and_two_simplices():
    rng = np.random.default_rng(0)
    v = rng.normal(size=12) * 3
    np.testing.assert_allclose(hull.project_to_simplex(v), bisection_projection(v), atol=1e-6)
    groups = np.array([0] * 5 + [1] * 7)
    got = np.asarray(hull.project_to_simplex(v, groups, num_groups=2))
    want = np.concatenate([bisection_projection(v[:5]), bisection_projection(v[5:])])
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose([got[:5].sum(), got[5:].sum()], [1, 1], rtol=1e-6)


@pytest.mark.parametrize("m,d", [(5, 8), (30, 64), (200, 512), (200, 8)])
def test_distance_agrees_with_scipy_and_is_zero_inside(m, d):
    rng = np.random.default_rng(m + d)
    points, others = embeddings_like(rng, m, d, extra=12)
    centre = points.mean(0)
    # Outside: other tracks (on the sphere, so never inside) and points pushed away from the hull.
    outside = np.concatenate([others, centre + 2.5 * (points[:4] - centre)])
    inside = np.concatenate([rng.dirichlet(np.ones(m), size=6) @ points, points[:2]])
    x = np.concatenate([outside, inside]).astype(np.float32)
    fit = hull.hull_fit(jnp.asarray(points, jnp.float32), x)
    want = np.array([reference_distance(points, row) for row in outside])
    got = np.asarray(fit.distance)
    np.testing.assert_allclose(got[: len(outside)], want, rtol=1e-3)
    # Inside: the solver's absolute tolerance (atol = 3e-4 spread) certifies d <= 4.3e-4 spread,
    # well under the 1e-3 spread that `hull_membership` calls inside.
    spread = float(hull.hull_spread(points))
    assert np.all(got[len(outside) :] <= np.sqrt(2) * 3e-4 * spread)
    weights = np.asarray(fit.weights)
    assert np.all(weights >= 0) and np.allclose(weights.sum(-1), 1, atol=1e-5)


def test_distance_to_a_square_embedded_in_high_dimension():
    # A unit square placed in 32-D by an orthonormal map and shifted: distances are planar.
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(rng.normal(size=(32, 2)))
    to_space = lambda xy: np.asarray(xy, float) @ basis.T + 5.0
    square = to_space([(0, 0), (1, 0), (0, 1), (1, 1)])
    off_plane = 0.3 * np.linalg.qr(np.c_[basis, rng.normal(size=32)])[0][:, 2]
    queries = np.stack([to_space([(2, 0.5)])[0], to_space([(4, 5)])[0], to_space([(0.5, 0.5)])[0]])
    queries = np.concatenate([queries, queries[2:] + off_plane])
    got = hull.distance_to_hull(square, queries)
    np.testing.assert_allclose(got, [1.0, 5.0, 0.0, 0.3], atol=1e-5)


def test_batch_shapes_and_single_compile_per_shape():
    rng = np.random.default_rng(2)
    points = rng.normal(size=(7, 9)).astype(np.float32)
    x = rng.normal(size=(2, 3, 9)).astype(np.float32)
    before = hull.hull_fit._cache_size()
    fit = hull.hull_fit(points, x)
    hull.hull_fit(points + 1, x * 2)
    assert hull.hull_fit._cache_size() == before + 1
    assert fit.distance.shape == (2, 3) and fit.weights.shape == (2, 3, 7)
    flat = hull.distance_to_hull(points, x.reshape(6, 9))
    np.testing.assert_allclose(np.asarray(fit.distance).reshape(6), flat, rtol=1e-5)


def test_blend_matches_hull_of_pairwise_combinations():
    # (1 - t) hull(A) + t hull(B) is the hull of all (1 - t) a_i + t b_j.
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4, 6)), rng.normal(size=(3, 6)) + 2.0
    x = rng.normal(size=(5, 6)) * 2 + 1.0
    for t in (0.0, 0.3, 1.0):
        pairs = ((1 - t) * a[:, None, :] + t * b[None, :, :]).reshape(-1, 6)
        want = [reference_distance(pairs, row) for row in x]
        got = hull.blend_fit(a, b, t, x).distance
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_membership_thresholds_follow_the_spread():
    square = np.array([[0, 0], [2, 0], [0, 2], [2, 2]], float)  # spread sqrt(2)
    x = np.array([[1, 1], [1, 2.5], [1, 4]], float)  # distances 0, 0.5, 2
    codes, distance = hull.hull_membership(square, x, near=0.5)
    assert list(np.asarray(codes)) == [hull.INSIDE, hull.NEAR, hull.OUTSIDE]
    np.testing.assert_allclose(distance, [0, 0.5, 2], atol=1e-5)


def test_bad_shapes_are_reported():
    with pytest.raises(ValueError, match=r"x must be \[..., D\] with D = 3"):
        hull.distance_to_hull(np.zeros((4, 3)), np.zeros((2, 5)))

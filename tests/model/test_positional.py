import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from myna_rpe_jax.model import patching, positional


def press_slopes(n: int) -> list[float]:
    """Press et al.'s recipe, written out independently of the package."""
    if (n & (n - 1)) == 0:
        start = 2 ** (-(2 ** -(np.log2(n) - 3)))
        return [start * start**i for i in range(n)]
    closest = 2 ** int(np.floor(np.log2(n)))
    return press_slopes(closest) + press_slopes(2 * closest)[0::2][: n - closest]


@pytest.mark.parametrize("num_heads", [1, 2, 4, 6, 8, 12, 16])
def test_alibi_slopes_follow_press_et_al(num_heads):
    np.testing.assert_allclose(positional.alibi_slopes(num_heads), press_slopes(num_heads))


def test_alibi_slopes_known_values():
    np.testing.assert_allclose(
        positional.alibi_slopes(6), [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]
    )
    np.testing.assert_allclose(positional.alibi_slopes(8), [2.0**-h for h in range(1, 9)])


def random_coords(rng, n, rows=8, cols=40):
    return np.stack([rng.integers(0, rows, n), rng.integers(0, cols, n)], -1).astype(np.int32)


@pytest.mark.parametrize(
    "metric,scipy_metric", [("manhattan", "cityblock"), ("euclidean", "euclidean")]
)
def test_pairwise_distance_matches_scipy(metric, scipy_metric):
    rng = np.random.default_rng(0)
    a, b = random_coords(rng, 30), random_coords(rng, 20)
    got = positional.pairwise_distance(jnp.asarray(a), jnp.asarray(b), metric)
    np.testing.assert_allclose(got, cdist(a, b, scipy_metric), rtol=1e-6, atol=1e-6)
    batched = positional.pairwise_distance(jnp.asarray(a)[None], jnp.asarray(a)[None], metric)
    np.testing.assert_allclose(batched[0], cdist(a, a, scipy_metric), rtol=1e-6, atol=1e-6)


def test_euclidean_distance_has_a_finite_gradient_at_zero():
    coords = jnp.asarray([[1.0, 2.0], [1.0, 2.0]])
    grad = jax.grad(lambda c: positional.pairwise_distance(c, c, "euclidean").sum())(coords)
    assert np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match="chebyshev"):
        positional.pairwise_distance(coords, coords, "chebyshev")


@pytest.mark.parametrize(
    "posemb,expected",
    [
        (("alibi2d",), True),
        (("alibi1d", "freq"), True),
        (("rope",), True),
        (("sinusoidal",), True),
        (("learned",), False),
        (("learned", "rope"), False),
        (("learned", "alibi2d"), False),
    ],
)
def test_only_the_learned_table_cannot_extrapolate(posemb, expected):
    assert positional.extrapolates(posemb) is expected


@pytest.mark.parametrize("num_axes", [1, 2])
def test_rope_dot_products_depend_only_on_offsets(num_axes):
    rng = np.random.default_rng(2)
    q, k = jnp.asarray(rng.normal(size=(2, 16))), jnp.asarray(rng.normal(size=(2, 16)))
    ci = jnp.asarray(rng.integers(0, 50, (1, num_axes)))
    cj = jnp.asarray(rng.integers(0, 50, (1, num_axes)))

    def score(a, b):
        return jnp.sum(positional.apply_rope(q[:1], a) * positional.apply_rope(k[:1], b))

    base = score(ci, cj)
    for shift in rng.integers(-30, 30, (5, num_axes)):
        np.testing.assert_allclose(score(ci + shift, cj + shift), base, rtol=1e-4, atol=1e-4)
    assert abs(float(score(ci + 1, cj)) - float(base)) > 1e-3, "RoPE must see the offset"


def test_rope_is_a_rotation_and_skips_masked_tokens():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(3, 5, 8)), jnp.float32)
    coords = jnp.asarray(rng.integers(0, 20, (3, 5, 2)))
    mask = jnp.arange(5)[None] > 0
    y = positional.apply_rope(x, coords, mask=jnp.broadcast_to(mask, (3, 5)))
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
    np.testing.assert_array_equal(y[:, 0], x[:, 0])
    with pytest.raises(ValueError, match="divisible"):
        positional.apply_rope(jnp.ones((4, 6)), jnp.ones((4, 2)))


def test_sinusoidal_2d_matches_formula_at_any_length():
    coords = np.array([[0, 0], [3, 1000], [7, 12345]])
    emb = np.asarray(positional.sinusoidal_2d(jnp.asarray(coords), 8))
    omega = 1.0 / 10_000 ** (np.arange(2) / 2)
    for (f, t), row in zip(coords, emb, strict=True):
        expected = np.concatenate(
            [np.sin(f * omega), np.cos(f * omega), np.sin(t * omega), np.cos(t * omega)]
        )
        np.testing.assert_allclose(row, expected, rtol=1e-4, atol=1e-4)


def test_learned_absolute_refuses_longer_inputs():
    module = positional.LearnedAbsoluteEmbedding(num_rows=8, max_cols=16, dim=4)
    coords = jnp.asarray(patching.grid_coords(8, 16))
    params = module.init(jax.random.key(0), coords, (8, 16))
    assert module.apply(params, coords, (8, 16)).shape == (128, 4)
    with pytest.raises(ValueError, match="cannot extrapolate"):
        module.apply(params, jnp.asarray(patching.grid_coords(8, 64)), (8, 64))


def test_learned_frequency_embedding_depends_only_on_row():
    module = positional.LearnedFrequencyEmbedding(num_rows=8, dim=4)
    coords = jnp.array([[2, 0], [2, 99], [5, 0]])
    params = module.init(jax.random.key(0), coords)
    out = module.apply(params, coords)
    np.testing.assert_array_equal(out[0], out[1])
    assert not np.allclose(out[0], out[2])

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
def test_alibi_2d_matches_scipy_distances(metric, scipy_metric):
    coords = random_coords(np.random.default_rng(0), 30)
    slopes = positional.alibi_slopes(6)
    bias = positional.alibi_bias_2d(jnp.asarray(coords), slopes, metric)
    expected = -slopes[:, None, None] * cdist(coords, coords, scipy_metric)[None]
    np.testing.assert_allclose(bias, expected, rtol=1e-6, atol=1e-6)


def test_alibi_2d_properties():
    coords = jnp.asarray(random_coords(np.random.default_rng(1), 25))
    slopes = positional.alibi_slopes(4)
    bias = positional.alibi_bias_2d(coords, slopes)
    np.testing.assert_allclose(bias, positional.alibi_bias_2d(coords + jnp.array([3, 17]), slopes))
    np.testing.assert_allclose(bias, bias.swapaxes(-1, -2))
    np.testing.assert_array_equal(jnp.diagonal(bias, axis1=-2, axis2=-1), 0.0)
    assert np.all(np.asarray(bias) <= 0), "ALiBi must penalise distance, never reward it"
    # Steeper heads penalise more.
    order = np.argsort(slopes)
    assert np.all(np.diff(np.asarray(bias).sum((1, 2))[order]) <= 0)


def test_alibi_bias_of_kept_tokens_is_a_submatrix_of_the_full_bias():
    coords = jnp.asarray(patching.grid_coords(8, 12))
    slopes = positional.alibi_slopes(6)
    full = positional.alibi_bias_2d(coords, slopes)
    tokens = jnp.zeros((3, coords.shape[0], 1))
    _, kept = patching.patchout(jax.random.key(0), tokens, coords, num_keep=10)
    index = {tuple(c): i for i, c in enumerate(np.asarray(coords))}
    for b in range(3):
        rows = np.array([index[tuple(c)] for c in np.asarray(kept[b])])
        sub = np.asarray(full)[:, rows][:, :, rows]
        np.testing.assert_allclose(positional.alibi_bias_2d(kept[b], slopes), sub)


def test_alibi_1d_matches_numpy():
    positions = np.array([0, 3, 3, 7, 1])
    slopes = positional.alibi_slopes(2)
    expected = -slopes[:, None, None] * np.abs(positions[:, None] - positions[None, :])[None]
    np.testing.assert_allclose(positional.alibi_bias_1d(jnp.asarray(positions), slopes), expected)


def test_prepend_zero_bias_gives_cls_zero_bias():
    bias = -jnp.ones((2, 4, 5, 5))
    padded = positional.prepend_zero_bias(bias)
    assert padded.shape == (2, 4, 6, 6)
    np.testing.assert_array_equal(padded[..., 0, :], 0.0)
    np.testing.assert_array_equal(padded[..., :, 0], 0.0)
    np.testing.assert_array_equal(padded[..., 1:, 1:], bias)


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

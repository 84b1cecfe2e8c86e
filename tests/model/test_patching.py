import jax
import jax.numpy as jnp
import numpy as np
import pytest

from myna_rpe_jax.model import patching


def test_patchify_matches_numpy_slices():
    spec = np.random.default_rng(0).normal(size=(2, 32, 50)).astype(np.float32)
    tokens, coords = patching.patchify(jnp.asarray(spec), patch_size=16)
    # 50 frames -> 3 whole patches; the last 2 frames are dropped.
    assert tokens.shape == (2, 2 * 3, 256)
    assert coords.shape == (6, 2)
    for n, (row, col) in enumerate(np.asarray(coords)):
        expected = spec[:, row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16].reshape(2, -1)
        np.testing.assert_array_equal(np.asarray(tokens[:, n]), expected)
    assert {tuple(c) for c in np.asarray(coords)} == {(r, c) for r in range(2) for c in range(3)}


def test_patchify_rejects_bad_shapes():
    with pytest.raises(ValueError, match="mel bins"):
        patching.patchify(jnp.zeros((1, 30, 64)))
    with pytest.raises(ValueError, match="fewer than one patch"):
        patching.patchify(jnp.zeros((1, 32, 15)))


def test_patchout_keeps_tokens_with_their_own_coordinates():
    spec = jnp.asarray(np.random.default_rng(1).normal(size=(4, 32, 160)), jnp.float32)
    tokens, coords = patching.patchify(spec)
    kept, kept_coords = patching.patchout(jax.random.key(0), tokens, coords, num_keep=5)
    assert kept.shape == (4, 5, 256) and kept_coords.shape == (4, 5, 2)
    lookup = {tuple(c): i for i, c in enumerate(np.asarray(coords))}
    for b in range(4):
        rows = [lookup[tuple(c)] for c in np.asarray(kept_coords[b])]
        assert len(set(rows)) == 5, "a token was kept twice"
        np.testing.assert_array_equal(np.asarray(kept[b]), np.asarray(tokens[b, rows]))
    subsets = {tuple(map(tuple, np.asarray(kept_coords[b]))) for b in range(4)}
    assert len(subsets) > 1, "every example got the same subset"


def test_patchout_is_uniform_over_tokens():
    tokens = jnp.zeros((2000, 10, 1))
    coords = jnp.stack([jnp.zeros(10, jnp.int32), jnp.arange(10)], axis=-1)
    _, kept = patching.patchout(jax.random.key(3), tokens, coords, num_keep=3)
    counts = np.bincount(np.asarray(kept[..., 1]).ravel(), minlength=10)
    # Each token is kept with probability 3/10: 600 +- 3 sigma (sigma ~ 20.5).
    assert np.all(np.abs(counts - 600) < 62), counts


def test_patchout_jits_with_static_num_keep():
    traces = []

    def fn(rng, tokens, coords, num_keep):
        traces.append(num_keep)
        return patching.patchout(rng, tokens, coords, num_keep)

    jitted = jax.jit(fn, static_argnums=3)
    tokens, coords = jnp.ones((2, 12, 4)), jnp.asarray(patching.grid_coords(3, 4))
    for seed in range(3):
        jitted(jax.random.key(seed), tokens, coords, 4)
    assert traces == [4]


@pytest.mark.parametrize("n,frac,expected", [(128, 0.1, 13), (8, 0.1, 1), (10, 1.0, 10)])
def test_num_kept(n, frac, expected):
    assert patching.num_kept(n, frac) == expected


def test_num_kept_rejects_bad_fraction():
    with pytest.raises(ValueError, match="keep fraction"):
        patching.num_kept(10, 0.0)

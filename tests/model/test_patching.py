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


def _padded_grid(rows: int, cols: int, padded_cols: int, batch: int = 1):
    """tokens [B, rows * padded_cols, 1] (each its own index), coords, real [B, N]."""
    coords = jnp.asarray(patching.grid_coords(rows, padded_cols))
    tokens = jnp.broadcast_to(
        jnp.arange(len(coords), dtype=jnp.float32)[:, None], (batch, len(coords), 1)
    )
    real = jnp.broadcast_to(coords[:, 1] < cols, (batch, len(coords)))
    return tokens, coords, real


def test_patchout_of_a_padded_grid_keeps_its_share_of_the_real_tokens_whatever_the_padding():
    """8 x 10 real patches, padded to 12, 16 or not at all: round(0.3 x 80) = 24 real tokens
    are kept, the same ones in the same order (keyed by their coordinates), then the rest
    of the K slots, masked; another key chooses others."""
    chosen = {}
    for padded_cols in (10, 12, 16):
        tokens, coords, real = _padded_grid(8, 10, padded_cols)
        got_tokens, got_coords, kept = patching.patchout_real(
            jax.random.key(5), tokens, coords, real, 0.3
        )
        assert kept.shape == (1, patching.num_kept(8 * padded_cols, 0.3))
        assert int(kept.sum()) == 24 and bool(kept[0, :24].all())
        picked = np.asarray(got_coords[0, :24])
        assert (picked[:, 1] < 10).all() and len({tuple(c) for c in picked}) == 24
        index = picked[:, 0] * padded_cols + picked[:, 1]  # in the original order
        assert (np.diff(index) > 0).all()
        np.testing.assert_array_equal(np.asarray(got_tokens[0, :24, 0]), index)
        chosen[padded_cols] = picked
    np.testing.assert_array_equal(chosen[12], chosen[10])
    np.testing.assert_array_equal(chosen[16], chosen[10])
    tokens, coords, real = _padded_grid(8, 10, 12)
    other = patching.patchout_real(jax.random.key(6), tokens, coords, real, 0.3)[1]
    assert {tuple(c) for c in np.asarray(other[0, :24])} != {tuple(c) for c in chosen[10]}


def test_patchout_of_a_padded_grid_is_uniform_over_the_real_tokens():
    """Each of 10 real tokens (of 16, 6 padding) is kept with probability 3/10 over keys."""
    tokens, coords, real = _padded_grid(1, 10, 16)
    keys = jax.random.split(jax.random.key(0), 2000)
    draw = jax.vmap(lambda key: patching.patchout_real(key, tokens, coords, real, 0.3))
    _, got_coords, kept = draw(keys)
    assert (kept.sum(axis=(1, 2)) == 3).all()
    columns = np.asarray(got_coords[..., 1])[np.asarray(kept)]
    counts = np.bincount(columns, minlength=16)
    assert (counts[10:] == 0).all()
    # 600 +- 3 sigma (sigma ~ 20.5), as for plain patchout.
    assert np.all(np.abs(counts[:10] - 600) < 62), counts


@pytest.mark.parametrize("n,frac,expected", [(128, 0.1, 13), (8, 0.1, 1), (10, 1.0, 10)])
def test_num_kept(n, frac, expected):
    assert patching.num_kept(n, frac) == expected


def test_num_kept_rejects_bad_fraction():
    with pytest.raises(ValueError, match="keep fraction"):
        patching.num_kept(10, 0.0)

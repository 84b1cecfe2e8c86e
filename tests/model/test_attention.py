"""Dense, blockwise and fused attention against an independent reference.

The reference builds the bias with `oracles.alibi_bias_1d/2d` + `prepend_zero_bias` (scipy
distances) and does a written-out softmax; it shares no code with `attention.py`.
"""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from myna_rpe_jax.model import attention, blockwise, patching, positional, tile_skip, vit
from tests.model import oracles


def reference_attention(q, k, v, bias=None):
    """softmax(q k^T / sqrt(Dh) + bias) v written out: q, k, v [B, N, H, Dh], bias [B, H, N, N]."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    weights = jnp.exp(logits - logits.max(-1, keepdims=True))
    weights = weights / weights.sum(-1, keepdims=True)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def patchout_coords(rng, batch, num_keep, rows=8):
    """Different random subsets of half of a rows x cols grid per example: [B, K, 2] float32."""
    grid = patching.grid_coords(rows, max(8, -(-2 * num_keep // rows)))
    keep = [np.sort(rng.choice(len(grid), num_keep, replace=False)) for _ in range(batch)]
    return np.stack([grid[k] for k in keep]).astype(np.float32)


def make_case(kind, num_tokens, seed=0, batch=2, heads=4, head_dim=8, cls=True):
    """(q, k, v, AlibiBias or None, reference bias [B, H, N, N] or None) for one scheme.

    With `cls`, token 0 is a CLS: zero bias to and from everything, not rotated by RoPE.
    Patch coordinates are patchout-style: an irregular subset of a grid.
    """
    rng = np.random.default_rng(seed)
    q, k, v = (
        jnp.asarray(rng.normal(size=(batch, num_tokens, heads, head_dim)), jnp.float32)
        for _ in range(3)
    )
    num_prefix = int(cls)
    coords = patchout_coords(rng, batch, num_tokens - num_prefix)
    all_coords = np.concatenate([np.zeros((batch, num_prefix, 2), np.float32), coords], 1)
    is_patch = jnp.asarray(np.arange(num_tokens)[None].repeat(batch, 0) >= num_prefix)
    slopes = positional.alibi_slopes(heads)
    with_cls = lambda b: jnp.asarray(oracles.prepend_zero_bias(b, num_prefix), jnp.float32)
    if kind in ("alibi2d", "alibi2d_euclidean"):
        metric = "euclidean" if kind.endswith("euclidean") else "manhattan"
        ref = with_cls(oracles.alibi_bias_2d(coords, slopes, metric))
        bias = positional.AlibiBias(jnp.asarray(all_coords), is_patch, jnp.asarray(slopes), metric)
        return q, k, v, bias, ref
    if kind == "alibi1d":
        time = all_coords[..., positional.TIME, None]
        ref = with_cls(oracles.alibi_bias_1d(coords[..., positional.TIME], slopes))
        return q, k, v, positional.AlibiBias(jnp.asarray(time), is_patch, jnp.asarray(slopes)), ref
    if kind == "rope":
        rotate = lambda t: positional.apply_rope(
            t.swapaxes(1, 2), jnp.asarray(all_coords)[:, None], 100.0, is_patch[:, None]
        ).swapaxes(1, 2)
        return rotate(q), rotate(k), v, None, None
    raise ValueError(kind)


def dense_bias(coords, slopes, metric="manhattan", is_patch=None):
    """AlibiBias over one example: coords [N, C] -> [H, N, N]."""
    coords = jnp.asarray(coords, jnp.float32)[None]
    is_patch = jnp.ones(coords.shape[:2], bool) if is_patch is None else is_patch[None]
    return positional.AlibiBias(coords, is_patch, jnp.asarray(slopes), metric).dense()[0]


def random_coords(rng, n, rows=8, cols=40):
    return np.stack([rng.integers(0, rows, n), rng.integers(0, cols, n)], -1).astype(np.int32)


@pytest.mark.parametrize("metric", ["manhattan", "euclidean"])
def test_alibi_2d_bias_matches_scipy_distances(metric):
    coords = random_coords(np.random.default_rng(0), 30)
    slopes = positional.alibi_slopes(6)
    expected = oracles.alibi_bias_2d(coords, slopes, metric)
    np.testing.assert_allclose(dense_bias(coords, slopes, metric), expected, rtol=1e-6, atol=1e-6)


def test_alibi_2d_bias_properties():
    coords = random_coords(np.random.default_rng(1), 25)
    slopes = positional.alibi_slopes(4)
    bias = np.asarray(dense_bias(coords, slopes))
    np.testing.assert_allclose(bias, dense_bias(coords + np.array([3, 17]), slopes))
    np.testing.assert_allclose(bias, bias.swapaxes(-1, -2))
    np.testing.assert_array_equal(np.diagonal(bias, axis1=-2, axis2=-1), 0.0)
    assert np.all(bias <= 0), "ALiBi must penalise distance, never reward it"
    # Steeper heads penalise more.
    order = np.argsort(slopes)
    assert np.all(np.diff(bias.sum((1, 2))[order]) <= 0)


def test_alibi_bias_of_kept_tokens_is_a_submatrix_of_the_full_bias():
    coords = jnp.asarray(patching.grid_coords(8, 12))
    slopes = positional.alibi_slopes(6)
    full = np.asarray(dense_bias(coords, slopes))
    tokens = jnp.zeros((3, coords.shape[0], 1))
    _, kept = patching.patchout(jax.random.key(0), tokens, coords, num_keep=10)
    index = {tuple(c): i for i, c in enumerate(np.asarray(coords))}
    for b in range(3):
        rows = np.array([index[tuple(c)] for c in np.asarray(kept[b])])
        np.testing.assert_allclose(dense_bias(kept[b], slopes), full[:, rows][:, :, rows])


def test_alibi_1d_bias_matches_numpy():
    positions = np.array([0, 3, 3, 7, 1])
    slopes = positional.alibi_slopes(2)
    expected = -slopes[:, None, None] * np.abs(positions[:, None] - positions[None, :])[None]
    np.testing.assert_allclose(dense_bias(positions[:, None], slopes), expected)
    np.testing.assert_allclose(oracles.alibi_bias_1d(positions, slopes), expected)


def test_cls_gets_zero_bias_to_and_from_every_token():
    coords = random_coords(np.random.default_rng(2), 6)
    slopes = positional.alibi_slopes(4)
    is_patch = jnp.arange(6) > 0
    bias = np.asarray(dense_bias(coords, slopes, is_patch=is_patch))
    np.testing.assert_array_equal(bias[:, 0, :], 0.0)
    np.testing.assert_array_equal(bias[:, :, 0], 0.0)
    np.testing.assert_allclose(bias[:, 1:, 1:], dense_bias(coords[1:], slopes))
    np.testing.assert_allclose(
        oracles.prepend_zero_bias(bias[:, 1:, 1:]), bias, err_msg="the oracle's CLS padding"
    )


KINDS = ["alibi2d", "alibi2d_euclidean", "alibi1d", "rope"]


def jitted_blockwise(q, k, v, bias, block_size):
    return jax.jit(blockwise.blockwise_attention, static_argnums=4)(q, k, v, bias, block_size)


@pytest.mark.parametrize(
    "kind,num_tokens,block_size", [(kind, 37, 16) for kind in KINDS] + [("alibi2d", 100, 32)]
)
def test_blockwise_values_and_gradients_equal_reference(kind, num_tokens, block_size):
    """Odd lengths (the last tile is padded), patchout coordinates and a CLS token."""
    q, k, v, bias, ref_bias = make_case(kind, num_tokens)
    weights = jnp.asarray(np.random.default_rng(2).normal(size=q.shape), jnp.float32)
    ref_loss = lambda q, k, v: jnp.sum(reference_attention(q, k, v, ref_bias) * weights)
    loss = lambda q, k, v: jnp.sum(
        blockwise.blockwise_attention(q, k, v, bias, block_size) * weights
    )
    expected, expected_grads = jax.value_and_grad(ref_loss, (0, 1, 2))(q, k, v)
    got, grads = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))(q, k, v)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    for name, g, e in zip("qkv", grads, expected_grads, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5, err_msg=f"d loss / d {name}")


@pytest.mark.parametrize(
    "kind,num_tokens,block_size",
    [(kind, 100, 32) for kind in KINDS[1:]]
    # Divisible by the block (no padding), and shorter than one block.
    + [("alibi2d", 64, 16), ("alibi2d", 5, 16)],
)
def test_blockwise_and_dense_outputs_equal_reference(kind, num_tokens, block_size):
    q, k, v, bias, ref_bias = make_case(kind, num_tokens)
    expected = reference_attention(q, k, v, ref_bias)
    np.testing.assert_allclose(
        attention.dense_attention(q, k, v, bias), expected, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        jitted_blockwise(q, k, v, bias, block_size), expected, rtol=1e-5, atol=1e-5
    )


def key_mask_case(kind, num_tokens, block_size, seed=5):
    """A case plus a key mask [B, N]: example 0 loses a random third of its keys, example 1
    its whole first key tile (so the online softmax starts on a tile with no valid key)."""
    case = make_case(kind, num_tokens, seed=seed)
    rng = np.random.default_rng(seed)
    mask = np.ones((2, num_tokens), bool)
    mask[0, 1:] = rng.random(num_tokens - 1) > 1 / 3
    mask[1, :block_size] = False
    return case, jnp.asarray(mask)


def reference_over_kept_keys(q, k, v, ref_bias, mask):
    """Attention of every query over only the kept keys, per example: no masking involved."""
    rows = []
    for b, keep in enumerate(np.asarray(mask)):
        bias = None if ref_bias is None else ref_bias[b : b + 1][..., keep]
        rows.append(reference_attention(q[b : b + 1], k[b : b + 1, keep], v[b : b + 1, keep], bias))
    return jnp.concatenate(rows)


@pytest.mark.parametrize("kind", KINDS)
def test_key_mask_equals_attention_over_the_kept_keys_only(kind):
    num_tokens, block_size = 45, 16
    (q, k, v, bias, ref_bias), mask = key_mask_case(kind, num_tokens, block_size)
    weights = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)
    ref_loss = lambda q, k, v: jnp.sum(reference_over_kept_keys(q, k, v, ref_bias, mask) * weights)
    expected, expected_grads = jax.value_and_grad(ref_loss, (0, 1, 2))(q, k, v)
    for name, fn in [
        ("dense", lambda q, k, v: attention.dense_attention(q, k, v, bias, mask)),
        ("blockwise", lambda q, k, v: blockwise.blockwise_attention(q, k, v, bias, 16, mask)),
    ]:
        loss = lambda q, k, v, fn=fn: jnp.sum(fn(q, k, v) * weights)
        got, grads = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))(q, k, v)
        np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=name)
        for axis, g, e in zip("qkv", grads, expected_grads, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5, err_msg=f"{name} d/d{axis}")
        # A masked key has no influence, so no gradient either.
        assert not np.any(np.asarray(grads[1])[~np.asarray(mask)])


def test_blockwise_without_cls_and_with_large_scores():
    # Scores of several hundred: the running maximum has to rescale earlier tiles exactly.
    q, k, v, bias, ref_bias = make_case("alibi2d", 50, seed=3, cls=False)
    q = q * 40.0
    expected = reference_attention(q, k, v, ref_bias)
    np.testing.assert_allclose(jitted_blockwise(q, k, v, bias, 16), expected, rtol=1e-4, atol=1e-4)


def test_blockwise_keeps_half_precision_dtype():
    q, k, v, bias, ref_bias = make_case("alibi2d", 40, seed=4)
    half = lambda t: t.astype(jnp.bfloat16)
    out = jitted_blockwise(half(q), half(k), half(v), bias, 16)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        out.astype(jnp.float32), reference_attention(q, k, v, ref_bias), atol=0.05
    )


def compiled_temp_bytes(fn, *args) -> int:
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("differentiate", [False, True])
def test_blockwise_memory_is_linear_in_tokens(differentiate):
    """XLA's own buffer accounting: the dense [H, N, N] tiles never appear, forward or backward."""

    heads, small, large = 4, 1024, 4096

    def temp_bytes(num_tokens):
        q = jnp.zeros((1, num_tokens, heads, 8))
        coords = jnp.asarray(patchout_coords(np.random.default_rng(0), 1, num_tokens))
        slopes = jnp.asarray(positional.alibi_slopes(heads))
        bias = positional.AlibiBias(coords, jnp.ones((1, num_tokens), bool), slopes)
        fn = lambda q, k, v: blockwise.blockwise_attention(q, k, v, bias, 64).sum()
        return compiled_temp_bytes(jax.grad(fn, (0, 1, 2)) if differentiate else fn, q, q, q)

    assert temp_bytes(small) < 0.1 * heads * small**2 * 4
    # 4x the tokens: 16x the memory if quadratic; at most 4x if linear (plus fixed tiles).
    assert temp_bytes(large) < 4 * temp_bytes(small)


def test_dense_memory_is_quadratic_for_contrast():
    q, k, v, bias, _ = make_case("alibi2d", 512, batch=1)
    assert compiled_temp_bytes(attention.dense_attention, q, k, v, bias) >= 4 * 512**2 * 4


def uses_loop(fn, *args) -> bool:
    """Whether fn's program has a loop (blockwise attention), nested calls included."""
    return re.search(r"\b(scan|while)\[", str(jax.make_jaxpr(fn)(*args))) is not None


@pytest.mark.parametrize("kind", ["alibi2d", "rope"])
def test_attention_switches_to_blockwise_above_threshold(kind):
    q, k, v, bias, ref_bias = make_case(kind, 70)
    expected = reference_attention(q, k, v, ref_bias)
    for threshold, goes_blockwise in [(70, False), (69, True)]:
        fn = lambda q, k, v, t=threshold: attention.attention(
            q, k, v, bias, block_size=32, blockwise_threshold=t
        )
        assert uses_loop(fn, q, k, v) == goes_blockwise
        np.testing.assert_allclose(fn(q, k, v), expected, rtol=1e-5, atol=1e-5)


def test_fused_attention_layout_matches_reference():
    q, k, v, _, _ = make_case("rope", 30)
    np.testing.assert_allclose(
        attention.fused_attention(q, k, v, implementation="xla"),
        reference_attention(q, k, v),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("num_tokens", [1, 5, 37, 512, 513, 2049, 30001])
@pytest.mark.parametrize("block_size", [1, 16, 512])
def test_tiles_are_as_few_as_the_block_size_allows_and_barely_padded(num_tokens, block_size):
    block, num_tiles = blockwise.tile_layout(num_tokens, block_size)
    assert block <= block_size and num_tiles == -(-num_tokens // block_size)
    assert 0 <= block * num_tiles - num_tokens < num_tiles


def test_blockwise_rejects_bad_block_size():
    q, k, v, bias, _ = make_case("alibi2d", 20)
    with pytest.raises(ValueError, match="block_size"):
        blockwise.blockwise_attention(q, k, v, bias, 0)


@pytest.mark.parametrize("posemb", [("alibi2d",), ("rope", "freq")])
def test_encoder_embeds_a_long_track_blockwise_with_the_same_result(posemb):
    """A track longer than the training chunk goes through the normal encoder call."""
    cfg = ml_collections.ConfigDict(dict(variant="tiny", posemb=posemb))
    # 8 rows x 21 time patches + CLS = 169 tokens; 341 frames leave 5 frames over.
    spec = jax.random.uniform(jax.random.key(0), (2, 128, 341), minval=-80.0, maxval=0.0)
    dense = vit.encoder_from_config(cfg)
    params = dense.init({"params": jax.random.key(1)}, spec[:, :, :32], train=False)
    cfg.blockwise_threshold, cfg.attention_block_size = 100, 48
    blockwise_encoder = vit.encoder_from_config(cfg)
    run = lambda encoder: jax.jit(lambda s: encoder.apply(params, s, train=False))
    assert uses_loop(run(blockwise_encoder), spec)
    (out, aux), (expected, _) = run(blockwise_encoder)(spec), run(dense)(spec)
    assert aux["tokens"].shape[:2] == (2, 8 * 21)
    np.testing.assert_allclose(out, expected, atol=2e-5)


# ---- exact ALiBi tile skipping -----------------------------------------------------------------
# Steep slopes make far tiles skippable at a few hundred tokens (the model's slopes need tracks).
STEEP_SLOPES = [4.0, 1.0, 0.25, 1 / 64]


def skip_case(kind, num_tokens=700, block_size=64, seed=7, **case):
    """A long key-masked case with steep slopes: example 0 loses a random fifth of its keys,
    example 1 its whole first key tile after the CLS (the running max starts on masked keys);
    `case`: more arguments of make_case."""
    q, k, v, bias, _ = make_case(kind, num_tokens, seed=seed, **case)
    mask = np.ones((2, num_tokens), bool)
    mask[0, 1:] = np.random.default_rng(seed).random(num_tokens - 1) > 0.2
    mask[1, 1 : block_size + 1] = False
    bias = bias.replace(slopes=jnp.asarray(STEEP_SLOPES), tile_skip=True)
    return q, k, v, bias, jnp.asarray(mask)


@pytest.mark.parametrize("kind", ["alibi2d", "alibi2d_euclidean", "alibi1d"])
def test_tile_skipping_leaves_values_and_gradients_unchanged(kind):
    block_size = 64
    q, k, v, bias, mask = skip_case(kind, block_size=block_size)
    forward, backward, total = blockwise.count_skipped_tiles(q, k, v, bias, block_size, mask)
    assert 0.1 * total < forward < total and 0.1 * total < backward < total
    weights = jnp.asarray(np.random.default_rng(3).normal(size=q.shape), jnp.float32)

    def value_and_grads(alibi):
        loss = lambda q, k, v: jnp.sum(
            blockwise.blockwise_attention(q, k, v, alibi, block_size, mask) * weights
        )
        return jax.jit(jax.value_and_grad(loss, (0, 1, 2)))(q, k, v)

    got, grads = value_and_grads(bias)
    expected, expected_grads = value_and_grads(bias.replace(tile_skip=False))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    for name, g, e in zip("qkv", grads, expected_grads, strict=True):
        scale = np.abs(e).max()
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6 * scale, err_msg=f"d / d {name}")
    dense = attention.dense_attention(q, k, v, bias, mask)
    skipped = blockwise.blockwise_attention(q, k, v, bias, block_size, mask)
    np.testing.assert_allclose(skipped, dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["alibi2d", "alibi2d_euclidean", "alibi1d"])
def test_tile_score_bound_is_above_every_score_of_the_tile(kind):
    """The property the skip rests on, against the dense scores (CLS and masked keys included);
    tiles with the CLS get no distance credit."""
    block = 32
    q, k, v, bias, mask = skip_case(kind, num_tokens=256, block_size=block)
    bounds = tile_skip.tile_bounds(q, k, bias, mask, block)
    scores = np.asarray(jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1]) + bias.dense())
    for i in range(256 // block):
        for j in range(256 // block):
            bound = np.asarray(tile_skip.score_bound(bounds, bias.slopes, i, j, block))
            tile = scores[:, :, i * block : (i + 1) * block, j * block : (j + 1) * block]
            tile = np.where(
                np.asarray(mask)[:, None, None, j * block : (j + 1) * block], tile, -np.inf
            )
            assert np.all(tile.max(-1) <= bound + 1e-4), (i, j)
            if i == 0 or j == 0:
                np.testing.assert_array_equal(bounds.distance[:, i, j], 0.0)


def test_model_slopes_skip_tiles_of_a_long_track_in_time_order():
    """With the S/16 slopes and a whole-track grid (row-major tokens), tiles are skipped once
    the tokens are in time order; results equal the unskipped kernel."""
    rows, cols, heads = 4, 1024, 6
    coords = np.concatenate([np.zeros((1, 2)), patching.grid_coords(rows, cols)])[None]
    num_tokens = coords.shape[1]
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(1, num_tokens, heads, 8)), jnp.float32) for _ in "qkv")
    is_patch = jnp.asarray(np.arange(num_tokens) > 0)[None]
    slopes = jnp.asarray(positional.alibi_slopes(heads))
    bias = positional.AlibiBias(jnp.asarray(coords, jnp.float32), is_patch, slopes, tile_skip=True)
    forward, _, total = blockwise.count_skipped_tiles(q, k, v, bias, 256)
    assert forward > 0.05 * total
    got = blockwise.blockwise_attention(q, k, v, bias, 256)
    expected = blockwise.blockwise_attention(q, k, v, bias.replace(tile_skip=False), 256)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

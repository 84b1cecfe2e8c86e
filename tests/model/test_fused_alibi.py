"""The fused Pallas ALiBi kernel against the independent reference of test_attention.

On CPU the kernel runs in Pallas interpret mode (the same program); lowering it for a GPU
(`lowering_platforms=("cuda",)`, no GPU needed) checks that Pallas turns it into one Triton
kernel, which is as far as a machine without a GPU can go.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from myna_rpe_jax.model import attention, fused_alibi, vit
from tests.model.test_attention import (
    key_mask_case,
    make_case,
    reference_attention,
    reference_over_kept_keys,
    skip_case,
)

# Odd lengths (the last tile padded), patchout coordinates, a CLS token; "rope" has no bias.
CASES = [("alibi2d", 37, 16), ("alibi2d_euclidean", 70, 32), ("alibi1d", 37, 16), ("rope", 20, 16)]


def fused(block):
    return jax.jit(lambda q, k, v, bias, mask=None: fused_alibi.fused_alibi_attention(
        q, k, v, bias, mask, block=block
    ))  # fmt: skip


@pytest.mark.parametrize("kind,num_tokens,block", CASES)
def test_values_and_gradients_equal_reference(kind, num_tokens, block):
    q, k, v, bias, ref_bias = make_case(kind, num_tokens)
    weights = jnp.asarray(np.random.default_rng(2).normal(size=q.shape), jnp.float32)
    ref_loss = lambda q, k, v: jnp.sum(reference_attention(q, k, v, ref_bias) * weights)
    loss = lambda q, k, v: jnp.sum(
        fused_alibi.fused_alibi_attention(q, k, v, bias, block=block) * weights
    )
    expected, expected_grads = jax.value_and_grad(ref_loss, (0, 1, 2))(q, k, v)
    got, grads = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))(q, k, v)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    for name, g, e in zip("qkv", grads, expected_grads, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5, err_msg=f"d loss / d {name}")


@pytest.mark.parametrize("kind", ["alibi2d", "alibi1d"])
def test_key_mask_equals_attention_over_the_kept_keys_only(kind):
    """Example 1 loses its whole first key tile: the online softmax starts on masked keys."""
    (q, k, v, bias, ref_bias), mask = key_mask_case(kind, 45, 16)
    got = fused(16)(q, k, v, bias, mask)
    expected = reference_over_kept_keys(q, k, v, ref_bias, mask)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_large_scores_and_half_precision():
    q, k, v, bias, ref_bias = make_case("alibi2d", 50, seed=3, cls=False)
    expected = reference_attention(q * 40.0, k, v, ref_bias)
    np.testing.assert_allclose(fused(16)(q * 40.0, k, v, bias), expected, rtol=1e-4, atol=1e-4)
    half = lambda t: t.astype(jnp.bfloat16)
    out = fused(16)(half(q), half(k), half(v), bias)
    assert out.dtype == jnp.bfloat16
    expected = reference_attention(*(half(t).astype(jnp.float32) for t in (q, k, v)), ref_bias)
    np.testing.assert_allclose(out.astype(jnp.float32), expected, atol=3e-2)


@pytest.mark.parametrize("kind", ["alibi2d", "alibi2d_euclidean", "alibi1d"])
def test_tile_skipping_leaves_values_and_gradients_unchanged(kind):
    """Steep slopes, masked keys, a CLS: the kernel skips a share of its tiles (counted by the
    kernel itself) and its output and gradients equal the kernel's without skipping."""
    q, k, v, bias, mask = skip_case(kind, num_tokens=500, block_size=32)
    skipped, total = fused_alibi.count_skipped_tiles(q, k, v, bias, mask, block=32)
    assert 0.1 * total < skipped < total
    weights = jnp.asarray(np.random.default_rng(3).normal(size=q.shape), jnp.float32)

    def outputs_and_grads(alibi):
        run = lambda q, k, v: fused_alibi.fused_alibi_attention(q, k, v, alibi, mask, block=32)
        out, vjp = jax.vjp(jax.jit(run), q, k, v)
        return out, vjp(weights)

    (got, grads), (expected, expected_grads) = (
        outputs_and_grads(bias), outputs_and_grads(bias.replace(tile_skip=False))
    )  # fmt: skip
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    for name, g, e in zip("qkv", grads, expected_grads, strict=True):
        scale = np.abs(e).max()
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6 * scale, err_msg=f"d / d {name}")
    dense = attention.dense_attention(q, k, v, bias, mask)
    np.testing.assert_allclose(got, dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("tile_skip", [False, True])
def test_lowers_to_one_triton_kernel_for_gpu(dtype, tile_skip):
    """Forward and backward lower for CUDA: the forward is a Triton custom call (the backward
    is XLA's blockwise one), with and without tile skipping (a branch per key tile)."""
    q, k, v, bias, _ = make_case("alibi2d", 300, head_dim=64)
    bias = bias.replace(tile_skip=tile_skip)
    q, k, v = (t.astype(dtype) for t in (q, k, v))
    loss = lambda q, k, v: jnp.sum(
        fused_alibi.fused_alibi_attention(q, k, v, bias, interpret=False).astype(jnp.float32)
    )
    lowered = jax.jit(jax.grad(loss, (0, 1, 2))).trace(q, k, v).lower(lowering_platforms=("cuda",))
    assert lowered.as_text().count("xla.gpu.triton") == 1


def test_encoder_with_the_pallas_kernel_embeds_a_long_track_as_before():
    cfg = ml_collections.ConfigDict(dict(variant="tiny", posemb=("alibi2d",)))
    spec = jax.random.uniform(jax.random.key(0), (1, 128, 181), minval=-80.0, maxval=0.0)
    params = vit.encoder_from_config(cfg).init({"params": jax.random.key(1)}, spec, train=False)
    cfg.blockwise_threshold = 50  # 8 x 11 + 1 = 89 tokens: past it
    run = lambda kernel: (
        lambda s: vit.encoder_from_config(dict(cfg, attention_kernel=kernel)).apply(
            params, s, train=False
        )[0]
    )
    assert "pallas_call" in str(jax.make_jaxpr(run("pallas"))(spec))
    assert "pallas_call" not in str(jax.make_jaxpr(run("xla"))(spec))
    # The default, "auto", is blockwise off GPU: interpret mode would be far slower.
    assert vit.encoder_from_config(cfg).attention_kernel == "auto"
    assert "pallas_call" not in str(jax.make_jaxpr(run("auto"))(spec))
    np.testing.assert_allclose(run("pallas")(spec), run("xla")(spec), atol=2e-5)


def test_bad_settings_say_what_to_use_instead():
    q, k, v, bias, _ = make_case("alibi2d", 20, head_dim=12)
    with pytest.raises(ValueError, match="power-of-two head dimension.*attention_kernel='xla'"):
        fused_alibi.fused_alibi_attention(q, k, v, bias)
    with pytest.raises(ValueError, match="attention_kernel must be one of"):
        vit.encoder_from_config(dict(variant="tiny", attention_kernel="triton"))
    with pytest.raises(ValueError, match="power-of-two head dimension.*got 12"):
        vit.encoder_from_config(
            dict(variant="tiny", num_heads=4, width=48, attention_kernel="pallas")
        )
    with pytest.raises(ValueError, match="attention kernel must be 'xla' or 'pallas'"):
        attention.attention(q, k, v, bias, kernel="auto")  # resolved by the encoder first
    with pytest.raises(ValueError, match="attention kernel must be one of"):
        attention.resolve_kernel("triton", alibi=True, head_dim=64, train=False)


@pytest.mark.parametrize(
    "backend,alibi,head_dim,train,expected",
    [
        ("gpu", True, 64, False, "pallas"),  # an ALiBi model embedding on a GPU
        ("gpu", True, 64, True, "xla"),  # training: jit cannot partition the custom call
        ("gpu", False, 64, False, "xla"),  # no ALiBi bias to fuse (cuDNN may take it)
        ("gpu", True, 48, False, "xla"),  # a head dimension the kernel does not take
        ("cpu", True, 64, False, "xla"),  # interpret mode would be far slower
    ],
)
def test_auto_kernel_is_pallas_only_for_alibi_inference_on_gpu(
    backend, alibi, head_dim, train, expected
):
    got = attention.resolve_kernel(
        "auto", alibi=alibi, head_dim=head_dim, train=train, backend=backend
    )
    assert got == expected
    for chosen in ("xla", "pallas"):  # a kernel named explicitly is kept
        assert (
            attention.resolve_kernel(
                chosen, alibi=alibi, head_dim=head_dim, train=train, backend=backend
            )
            == chosen
        )


@pytest.mark.parametrize(
    "tile_skip,kernel,expected",
    [
        (None, "pallas", True),  # unset: the fused kernel skips (15-32% faster on an H200)
        (None, "xla", False),  # unset: blockwise does not (36-43% slower there)
        (False, "pallas", False),  # set: as set
        (True, "xla", True),
    ],
)
def test_tile_skipping_defaults_to_the_fused_kernel_only(tile_skip, kernel, expected):
    assert attention.resolve_tile_skip(tile_skip, kernel) is expected


@pytest.mark.parametrize("kernel", ["pallas", "xla"])
@pytest.mark.parametrize("tile_skip", [None, False, True])
def test_encoder_attends_with_the_tile_skipping_its_kernel_takes(kernel, tile_skip):
    """Skipping sorts the tokens in time order first (`blockwise.skip_order`), so a sort in
    the encoder's program says it skips; the embedding is the same either way."""
    cfg = dict(variant="tiny", posemb=("alibi2d",), blockwise_threshold=50)  # 89 tokens
    spec = jax.random.uniform(jax.random.key(0), (1, 128, 181), minval=-80.0, maxval=0.0)
    params = vit.encoder_from_config(cfg).init({"params": jax.random.key(1)}, spec, train=False)

    def embed(**fields):
        encoder = vit.encoder_from_config(dict(cfg, **fields))
        return lambda s: encoder.apply(params, s, train=False)[0]

    run = embed(attention_kernel=kernel, alibi_tile_skip=tile_skip)
    skips = "sort" in str(jax.make_jaxpr(run)(spec))
    assert skips is attention.resolve_tile_skip(tile_skip, kernel)
    reference = embed(attention_kernel="xla", alibi_tile_skip=False)
    np.testing.assert_allclose(run(spec), reference(spec), atol=2e-5)

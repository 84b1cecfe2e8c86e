"""Log-length attention scaling (`model.length_scaling`): the formula, the attention it
scales (against a numpy softmax), and that training and padded tracks are unaffected."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from myna_rpe_jax.model import vit


def tiny_encoder(**overrides):
    cfg = tiny.get_config().model
    cfg.update(max_time_patches=4, **overrides)  # 64-frame training chunks
    return vit.encoder_from_config(cfg)


def spec(batch, frames, seed=0):
    x = np.random.default_rng(seed).uniform(-80, 0, size=(batch, 128, frames))
    return jnp.asarray(x, jnp.float32)


def test_length_scale_is_log_n_over_log_n_train_and_never_below_one():
    n = np.array([1, 5, 17, 18, 100, 5000])
    got = np.asarray(vit.length_scale(jnp.asarray(n), 17))
    np.testing.assert_allclose(got, np.maximum(np.log(n) / np.log(17), 1.0), rtol=1e-6)
    assert got[2] == 1.0 and got[3] > 1.0


def test_train_tokens_are_the_patchout_kept_patches_plus_cls():
    encoder = tiny_encoder()  # 8 x 4 patches, keep 0.5
    assert encoder.train_tokens(8) == 16 + 1
    assert tiny_encoder(patchout_keep=1.0).train_tokens(8) == 32 + 1


def test_scaled_attention_matches_a_numpy_softmax_with_scaled_logits():
    layer = vit.SelfAttention(num_heads=2)
    x = jax.random.normal(jax.random.key(0), (2, 7, 8))
    is_patch = jnp.ones((2, 7), bool)
    params = layer.init(jax.random.key(1), x, None, None, is_patch)
    scale = jnp.asarray([1.0, 1.7])
    got = layer.apply(params, x, None, None, is_patch, logit_scale=scale)

    p = jax.tree.map(np.asarray, params["params"])
    xn = np.asarray(x, np.float64)
    proj = lambda name: np.einsum("bnd,dhk->bnhk", xn, p[name]["kernel"]) + p[name]["bias"]
    q, k, v = proj("query"), proj("key"), proj("value")
    logits = (
        np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(4) * np.asarray(scale)[:, None, None, None]
    )
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", weights, v)
    want = np.einsum("bqhd,hdw->bqw", out, p["out"]["kernel"]) + p["out"]["bias"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def attention_scales(encoder, params, x, **kwargs) -> list[np.ndarray]:
    """The logit_scale [B] every SelfAttention of `encoder` receives on x (None: unscaled)."""
    seen = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, vit.SelfAttention) and context.method_name == "__call__":
            scale = args[5] if len(args) > 5 else kwargs.get("logit_scale")
            seen.append(None if scale is None else np.asarray(scale))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        encoder.apply(params, x, train=False, **kwargs)
    return seen


@pytest.mark.parametrize("posemb", [("alibi2d",), ("rope",)])
def test_training_is_unchanged_and_long_inputs_are_scaled(posemb):
    plain, scaled = tiny_encoder(posemb=posemb), tiny_encoder(posemb=posemb, length_scaling=True)
    x = spec(2, 64)
    params = plain.init({"params": jax.random.key(0), "patchout": jax.random.key(1)}, x, train=True)
    rngs = {"patchout": jax.random.key(2)}
    np.testing.assert_array_equal(
        plain.apply(params, x, train=True, rngs=rngs)[0],
        scaled.apply(params, x, train=True, rngs=rngs)[0],
    )
    long = spec(2, 512, seed=1)
    assert not np.allclose(
        plain.apply(params, long, train=False)[0],
        scaled.apply(params, long, train=False)[0],
        atol=1e-4,
    )
    # Every layer gets log N / log N_train: N = 8 x 32 patches + CLS, N_train = 16 kept + CLS.
    scales = attention_scales(scaled, params, long)
    assert len(scales) == scaled.depth and attention_scales(plain, params, long) == [None] * 2
    for got in scales:
        np.testing.assert_allclose(got, [np.log(257) / np.log(17)] * 2, rtol=1e-6)


def test_padding_does_not_change_the_scale():
    """A 160-frame track padded to 256 is scaled by its own token count, not the padded one."""
    encoder = tiny_encoder(length_scaling=True)
    x = spec(1, 256, seed=3)
    params = encoder.init(
        {"params": jax.random.key(0), "patchout": jax.random.key(1)}, x, train=True
    )
    alone = encoder.apply(params, x[:, :, :160], train=False)[0]
    padded = encoder.apply(params, x, train=False, lengths=jnp.asarray([160]))[0]
    np.testing.assert_allclose(padded, alone, rtol=1e-4, atol=2e-5)
    for got in attention_scales(encoder, params, x, lengths=jnp.asarray([160])):
        np.testing.assert_allclose(got, [np.log(8 * 10 + 1) / np.log(17)], rtol=1e-6)

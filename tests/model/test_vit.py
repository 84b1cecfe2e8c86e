import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import tiny
from myna_rpe_jax.model import vit

RELATIVE = [("alibi2d",), ("alibi1d", "freq"), ("rope",), ("sinusoidal",), ("alibi2d", "rope")]
# Every combination validate_posemb accepts: at most one absolute table, at most one ALiBi.
ALL_POSEMB = [
    tuple(name for name in combo if name)
    for combo in itertools.product(
        (None, "alibi1d", "alibi2d"), (None, "learned", "sinusoidal", "freq"), (None, "rope")
    )
    if any(combo)
]


def tiny_encoder(**overrides):
    cfg = tiny.get_config().model
    cfg.update(overrides)
    return vit.encoder_from_config(cfg)


def spec(batch, frames, seed=0):
    x = np.random.default_rng(seed).uniform(-80, 0, size=(batch, 128, frames))
    return jnp.asarray(x, jnp.float32)


def init(encoder, x):
    return encoder.init({"params": jax.random.key(0), "patchout": jax.random.key(1)}, x, train=True)


@pytest.mark.parametrize("posemb", RELATIVE)
def test_relative_schemes_run_on_four_times_longer_input(posemb):
    encoder = tiny_encoder(posemb=posemb)
    params = init(encoder, spec(2, 256))
    cls, aux = encoder.apply(params, spec(1, 4 * 256), train=False)
    assert cls.shape == (1, 64)
    assert aux["tokens"].shape == (1, 8 * 64, 64)
    assert np.all(np.isfinite(cls))


def test_learned_table_refuses_longer_input_with_clear_error():
    encoder = tiny_encoder(posemb=("learned",), max_time_patches=16)
    params = init(encoder, spec(2, 256))
    with pytest.raises(ValueError, match="learned absolute position table.*cannot extrapolate"):
        encoder.apply(params, spec(1, 4 * 256), train=False)


def test_alibi2d_encoder_is_invariant_to_reversing_patch_columns():
    """Reversing the order of 16-frame blocks keeps every |dt|, so 2-D ALiBi sees the same
    set of pairwise distances and the CLS output must not change."""
    encoder = tiny_encoder(posemb=("alibi2d",))
    x = spec(2, 160)
    params = init(encoder, x)
    reversed_blocks = x.reshape(2, 128, 10, 16)[:, :, ::-1].reshape(2, 128, 160)
    a = encoder.apply(params, x, train=False)[0]
    b = encoder.apply(params, reversed_blocks, train=False)[0]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    shifted = jnp.roll(x.reshape(2, 128, 10, 16), 1, axis=2).reshape(2, 128, 160)
    assert not np.allclose(a, encoder.apply(params, shifted, train=False)[0], atol=1e-3)


def test_patchout_keeps_the_configured_fraction_and_uses_its_rng():
    encoder = tiny_encoder(patchout_keep=0.25)
    x = spec(2, 256)
    params = init(encoder, x)
    out1, aux = encoder.apply(params, x, train=True, rngs={"patchout": jax.random.key(5)})
    out2, _ = encoder.apply(params, x, train=True, rngs={"patchout": jax.random.key(6)})
    assert aux["coords"].shape == (2, 32, 2)  # 0.25 of 8 x 16 patches
    assert not np.allclose(out1, out2)
    with pytest.raises(Exception, match="patchout"):
        encoder.apply(params, x, train=True)


def test_jit_traces_once_per_input_shape():
    encoder = tiny_encoder()
    params = init(encoder, spec(2, 64))
    traces = []

    @jax.jit
    def embed(params, x):
        traces.append(x.shape)
        return encoder.apply(params, x, train=False)[0]

    for seed in range(3):
        embed(params, spec(2, 64, seed))
    embed(params, spec(2, 128))
    embed(params, spec(2, 128, 1))
    assert traces == [(2, 128, 64), (2, 128, 128)]


@pytest.mark.parametrize(
    "posemb,match",
    [
        (("alibi3d",), "unknown positional scheme"),
        (("alibi1d", "alibi2d"), "'alibi1d' and 'alibi2d' contradict"),
        (("learned", "sinusoidal"), "contradict"),
        (("rope", "rope"), "twice"),
    ],
)
def test_bad_posemb_names_raise(posemb, match):
    with pytest.raises(ValueError, match=match):
        tiny_encoder(posemb=posemb)


def test_bad_config_fields_raise_with_their_name():
    with pytest.raises(ValueError, match="widht"):
        vit.encoder_from_config(ml_collections.ConfigDict(dict(variant="tiny", widht=3)))
    with pytest.raises(ValueError, match="unknown model variant 'M/16'"):
        vit.encoder_from_config(ml_collections.ConfigDict(dict(variant="M/16")))
    with pytest.raises(ValueError, match="alibi_metric"):
        tiny_encoder(alibi_metric="chebyshev")


def test_variants_have_the_published_sizes():
    encoder = vit.encoder_from_config(ml_collections.ConfigDict(dict(variant="S/16")))
    assert (encoder.width, encoder.depth, encoder.num_heads, encoder.mlp_dim) == (384, 12, 6, 1536)
    assert encoder.patch_size == 16
    shapes = jax.eval_shape(
        lambda: encoder.init({"params": jax.random.key(0)}, jnp.zeros((1, 128, 96)), train=False)
    )
    num_params = sum(np.prod(p.shape) for p in jax.tree.leaves(shapes))
    assert 21e6 < num_params < 22.5e6, num_params  # ViT-S: ~21.4M without a classifier head.


def test_bfloat16_compute_keeps_float32_params():
    encoder = tiny_encoder(dtype="bfloat16")
    params = init(encoder, spec(2, 64))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    cls, _ = encoder.apply(params, spec(2, 64), train=False)
    assert cls.dtype == jnp.float32 and np.all(np.isfinite(cls))


@pytest.mark.parametrize("posemb", RELATIVE + [("learned",), ("freq",)])
@pytest.mark.parametrize("threshold", [4096, 64])  # dense, blockwise
def test_padding_with_lengths_gives_each_tracks_unpadded_output(posemb, threshold):
    """Tracks of 96 and 160 frames padded to 256 (junk in the padding): each CLS equals the
    track's own unpadded CLS, for every scheme and both attention paths."""
    encoder = tiny_encoder(posemb=posemb, blockwise_threshold=threshold, attention_block_size=48)
    params = init(encoder, spec(2, 256))
    lengths = [96, 160]
    padded = spec(2, 256, seed=3)
    alone = [
        encoder.apply(params, padded[i : i + 1, :, :length], train=False)[0][0]
        for i, length in enumerate(lengths)
    ]
    cls, aux = jax.jit(lambda x, n: encoder.apply(params, x, train=False, lengths=n))(
        padded, jnp.asarray(lengths)
    )
    np.testing.assert_allclose(cls, np.stack(alone), rtol=1e-4, atol=2e-5)
    np.testing.assert_array_equal(aux["valid"].sum(1), [8 * 6, 8 * 10])
    unmasked = encoder.apply(params, padded, train=False)[0]
    assert not np.allclose(unmasked[0], alone[0], atol=1e-3)  # the padding would matter


def test_lengths_count_only_whole_patches():
    encoder = tiny_encoder()
    x = spec(1, 128)
    params = init(encoder, x)
    run = lambda n: encoder.apply(params, x, train=False, lengths=jnp.asarray([n]))
    assert int(run(47)[1]["valid"].sum()) == 8 * 2  # 47 frames: two whole 16-frame patches
    np.testing.assert_allclose(run(47)[0], run(32)[0], atol=1e-6)


def test_all_posemb_lists_every_valid_combination():
    assert len(ALL_POSEMB) == 23
    for posemb in ALL_POSEMB:
        vit.validate_posemb(posemb)


def residual_dtypes(encoder, params, x, train):
    """Dtypes of every block's output (the residual stream), of the final norm and of the
    returned tokens."""
    capture = lambda module, _: isinstance(module, vit.EncoderBlock | nn.LayerNorm)
    (_, aux), state = encoder.apply(
        params,
        x,
        train=train,
        rngs={"patchout": jax.random.key(2)},
        capture_intermediates=capture,
        mutable=["intermediates"],
    )
    found = state["intermediates"]
    blocks = [found[f"block_{i}"]["__call__"][0].dtype for i in range(encoder.depth)]
    assert len(blocks) == encoder.depth >= 2
    return {*blocks, found["final_norm"]["__call__"][0].dtype, aux["tokens"].dtype}


# bfloat16 keeps 8 significant bits: unit roundoff u = 2^-8. The tiny encoder rounds the
# stream some 20 times in sequence (patch embedding, 2 x (norm, q/k/v, attention, output,
# residual, norm, 2 MLP layers, residual), final norm); independent roundings add up like
# sqrt(20) u ~ 0.017, the worst measured over all schemes was 0.016. The bound is 8u = 0.031;
# a float32 stream in either model would not reach it, a scheme computed wrong in bfloat16
# (an unscaled table, a bias in the wrong dtype) would exceed it.
BF16_REL_ERROR = 8 * 2.0**-8
BF16_MIN_COSINE = 0.999  # 1 - rel^2 / 2 for rel = 0.031 is 0.9995


@pytest.mark.parametrize("posemb", ALL_POSEMB, ids="+".join)
def test_bfloat16_encoder_keeps_a_bfloat16_stream_and_agrees_with_float32(posemb):
    float32 = tiny_encoder(posemb=posemb)
    bfloat16 = tiny_encoder(posemb=posemb, dtype="bfloat16")
    x = spec(4, 128)
    params = init(float32, x)
    for train in (False, True):  # train=True: patchout, the same kept tokens in both
        assert residual_dtypes(float32, params, x, train) == {jnp.dtype(jnp.float32)}
        assert residual_dtypes(bfloat16, params, x, train) == {jnp.dtype(jnp.bfloat16)}
        run = lambda encoder, train=train: encoder.apply(
            params, x, train=train, rngs={"patchout": jax.random.key(2)}
        )[0]
        a, b = np.asarray(run(float32), np.float64), np.asarray(run(bfloat16), np.float64)
        assert run(bfloat16).dtype == jnp.float32
        norms = np.linalg.norm(a, axis=1)
        cosine = np.sum(a * b, axis=1) / (norms * np.linalg.norm(b, axis=1))
        relative = np.linalg.norm(a - b, axis=1) / norms
        assert cosine.min() > BF16_MIN_COSINE, (train, cosine)
        assert relative.max() < BF16_REL_ERROR, (train, relative)
        assert relative.max() > 2.0**-12, "the bfloat16 encoder must really compute in bfloat16"

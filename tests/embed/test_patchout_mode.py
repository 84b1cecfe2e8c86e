"""The `patchout` embedding mode: the mean of masked passes over whole tracks."""

import jax
import numpy as np

from configs import tiny
from myna_rpe_jax.embed.embedder import Embedder
from myna_rpe_jax.model import vit


def encoder_and_params(**overrides):
    cfg = tiny.get_config().model
    cfg.update(max_time_patches=4, **overrides)
    encoder = vit.encoder_from_config(cfg)
    sample = np.zeros((1, 128, 64), np.float32)
    rngs = {"params": jax.random.key(0), "patchout": jax.random.key(1)}
    return encoder, encoder.init(rngs, sample, train=True)["params"]


def mels(frames=(160, 96, 250)):
    rng = np.random.default_rng(0)
    return [rng.uniform(-80, 0, (128, n)).astype(np.float16) for n in frames]


def test_patchout_mode_is_the_mean_of_its_masked_passes_on_each_track_alone():
    encoder, params = encoder_and_params()
    embedder = Embedder(encoder, params, 64, patchout_passes=3, max_padding=0.0)
    tracks = mels()
    got = embedder.embed(tracks, "patchout")
    for row, mel in zip(got, tracks, strict=True):
        frames = mel.shape[1] // 16 * 16
        passes = [
            encoder.apply(
                {"params": params},
                mel[None, :, :frames].astype(np.float32),
                train=True,
                lengths=np.array([frames]),  # every frame real: patchout_real's choice
                rngs={"patchout": jax.random.fold_in(jax.random.key(0), i)},
            )[0][0]
            for i in range(3)
        ]
        np.testing.assert_allclose(row, np.mean(passes, axis=0), rtol=1e-4, atol=1e-5)
    assert not np.allclose(got, embedder.embed(tracks, "full"), atol=1e-3)
    np.testing.assert_array_equal(got, embedder.embed(tracks, "patchout"))  # reproducible


def test_patchout_mode_does_not_depend_on_the_padding():
    """Tracks padded to their length buckets (max_padding 0.5: 160 frames to 192, 250 to 256;
    0.25: 250 to 256) or not at all: the same real patches are kept, so the same embeddings
    (before, patchout drew from the padded grid, padding included)."""
    encoder, params = encoder_and_params()
    tracks = mels((160, 250, 96))
    got = {
        padding: Embedder(encoder, params, 64, patchout_passes=2, max_padding=padding).embed(
            tracks, "patchout"
        )
        for padding in (0.0, 0.25, 0.5)
    }
    np.testing.assert_allclose(got[0.25], got[0.0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[0.5], got[0.0], rtol=1e-4, atol=1e-5)


def test_patchout_mode_keeping_every_patch_is_the_full_mode():
    encoder, params = encoder_and_params(patchout_keep=1.0)
    embedder = Embedder(encoder, params, 64, patchout_passes=2)  # padded buckets, masked
    tracks = mels()
    np.testing.assert_allclose(
        embedder.embed(tracks, "patchout"), embedder.embed(tracks, "full"), rtol=1e-4, atol=1e-5
    )


def test_patchout_mode_does_not_depend_on_the_batch_or_the_device_count():
    # Five same-length tracks share a bucket: on one device they are one batch, on four one
    # device holds two of them. Each must be embedded as it would be alone.
    encoder, params = encoder_and_params()
    tracks = mels((96,) * 5)
    alone = Embedder(encoder, params, 64, patchout_passes=2, devices=jax.devices()[:1])
    expected = np.concatenate([alone.embed([mel], "patchout") for mel in tracks])
    assert not np.allclose(expected[0], expected[1], atol=1e-3)  # the tracks differ
    for devices in (jax.devices()[:1], jax.devices()):
        embedder = Embedder(encoder, params, 64, patchout_passes=2, devices=devices)
        got = embedder.embed(tracks, "patchout")
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_patchout_mode_with_the_fused_kernel_equals_the_xla_kernels():
    # 60 tokens kept of 120 > the threshold: the Pallas kernel (interpret mode here) runs
    # under patchout_mean's vmap.
    tracks, got = mels((250, 96)), {}
    for kernel in ("xla", "pallas"):
        encoder, params = encoder_and_params(
            attention_kernel=kernel, blockwise_threshold=16, patchout_keep=0.5
        )
        got[kernel] = Embedder(encoder, params, 64, patchout_passes=2).embed(tracks, "patchout")
    np.testing.assert_allclose(got["pallas"], got["xla"], rtol=1e-4, atol=1e-5)

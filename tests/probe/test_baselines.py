"""probe baselines: hand-made features against numpy/scipy/librosa references and pure tones;
the random-init encoder against the train state a fresh run starts from."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import scipy.fft

from myna_rpe_jax.data.audio import MelConfig, log_mel
from myna_rpe_jax.data.keys import PITCH_CLASSES
from myna_rpe_jax.model import vit
from myna_rpe_jax.probe import baselines


def random_db(n_mels: int = 32, frames: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-80, 0, (n_mels, frames)).astype(np.float16)


def test_logmel_stats_are_band_means_then_stds():
    mel = random_db()
    x = mel.astype(np.float64)
    centred = x - x.sum(axis=1, keepdims=True) / x.shape[1]
    expected = np.r_[x.sum(axis=1) / x.shape[1], np.sqrt((centred**2).mean(axis=1))]
    np.testing.assert_allclose(baselines.logmel_stats(mel), expected, rtol=1e-12)


def test_mfcc_stats_are_the_orthonormal_dct_of_the_db_bands():
    mel = random_db(n_mels=40, frames=30, seed=1)
    mfcc = scipy.fft.dct(mel.astype(np.float64), type=2, norm="ortho", axis=0)[:20]
    expected = np.r_[mfcc.mean(axis=1), mfcc.std(axis=1)]
    np.testing.assert_allclose(baselines.mfcc_stats(mel), expected, rtol=1e-6, atol=1e-8)
    assert baselines.mfcc_stats(mel, n_mfcc=13).shape == (26,)


def test_band_pitch_classes_follow_the_filterbank_peaks():
    """Each band's class is that of its filter's peak frequency (librosa's filterbank), for
    bands narrow enough that the peak FFT bin lies within a semitone of the centre."""
    cfg = MelConfig(sample_rate=16000, n_fft=4096, hop_length=160, win_length=1024, n_mels=64)
    classes = baselines.band_pitch_classes(cfg)
    basis = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels)
    peaks = librosa.fft_frequencies(sr=cfg.sample_rate, n_fft=cfg.n_fft)[basis.argmax(axis=1)]
    semitones = 12 * np.log2(peaks / 440.0) + 57  # 0 = C0
    exact = np.abs(semitones - np.round(semitones)) < 0.3  # not near a class boundary
    assert exact.sum() > 20
    np.testing.assert_array_equal(classes[exact], np.round(semitones[exact]).astype(int) % 12)
    assert classes.shape == (64,) and classes.min() >= -1 and classes.max() <= 11


@pytest.mark.parametrize("name,octave", [("A", 4), ("C", 5), ("Eb", 4), ("G", 5), ("B", 6)])
def test_a_pure_tones_mel_chroma_peaks_at_its_pitch_class(name, octave):
    cfg = MelConfig()  # the run defaults: 44.1 kHz, 128 bands
    pitch = PITCH_CLASSES.index(name)
    freq = 440.0 * 2 ** ((pitch - 9) / 12 + octave - 4)
    t = np.arange(int(cfg.sample_rate * 1.0)) / cfg.sample_rate
    mel = log_mel(np.sin(2 * np.pi * freq * t), cfg)
    chroma = baselines.mel_chroma(mel, baselines.band_pitch_classes(cfg))
    assert chroma.shape == (12,) and chroma.sum() == pytest.approx(1.0)
    assert int(np.argmax(chroma)) == pitch, dict(zip(PITCH_CLASSES, chroma.round(3), strict=True))


def test_mel_chroma_is_the_mean_power_per_class():
    classes = np.array([-1, 0, 0, 3, 11, 3])
    power = np.array([5.0, 1.0, 3.0, 4.0, 2.0, 0.0])
    mel = np.repeat(10 * np.log10(np.maximum(power, 1e-10))[:, None], 4, axis=1)
    expected = np.zeros(12)
    expected[[0, 3, 11]] = [2.0, 2.0, 2.0]
    np.testing.assert_allclose(baselines.mel_chroma(mel, classes), expected / 6, atol=1e-9)
    np.testing.assert_allclose(baselines.mel_chroma(mel, np.full(6, -1)), 1 / 12, atol=1e-9)
    with pytest.raises(ValueError, match="one entry per mel band"):
        baselines.mel_chroma(mel, classes[:3])


def test_track_features_follow_the_feature_slices():
    cfg = MelConfig(n_mels=32)
    mel = random_db()
    classes = baselines.band_pitch_classes(cfg)
    features = baselines.track_features(mel, classes)
    slices = baselines.feature_slices(32)
    assert list(slices) == list(baselines.FEATURE_SETS)
    assert features.shape == (slices["chroma"][1],) and features.dtype == np.float32
    parts = [
        baselines.logmel_stats(mel),
        baselines.mfcc_stats(mel),
        baselines.mel_chroma(mel, classes),
    ]
    for (start, stop), part in zip(slices.values(), parts, strict=True):
        np.testing.assert_allclose(features[start:stop], part, rtol=1e-5, atol=1e-5)
    extractor = baselines.FeatureExtractor(cfg, "test")
    done = []
    rows = extractor.embed([mel, random_db(frames=70, seed=3)], on_done=done.append)
    assert rows.shape == (2, len(features)) and sum(done) == 2
    np.testing.assert_array_equal(rows[0], features)


def test_random_params_are_the_train_state_a_fresh_run_starts_from(tiny_config):
    import optax

    from myna_rpe_jax.train.step import init_state

    encoder = vit.encoder_from_config(tiny_config.model)
    sample = jnp.zeros(
        (1, tiny_config.model.n_mels, max(tiny_config.data.chunk_frames)), jnp.float32
    )
    state = jax.jit(lambda rng: init_state(encoder, optax.sgd(0.1), rng, sample))(
        jax.random.key(tiny_config.seed)
    )
    params = baselines.random_params(encoder, tiny_config)
    jax.tree.map(np.testing.assert_array_equal, params, state.params)
    tiny_config.seed += 1
    other = baselines.random_params(encoder, tiny_config)
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, params, other)))

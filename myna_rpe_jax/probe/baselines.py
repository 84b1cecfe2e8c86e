"""Baselines for the probes: hand-made features of the prepared log-mels, and the encoder's
architecture at random initialisation.

Hand-made features are computed from the dataset's own log-mels (float16 dB, [n_mels, T], made
with the run's `MelConfig`), one fixed-length vector per track:
- "log-mel stats": mean and standard deviation of every mel band over time, [2 * n_mels];
- "MFCC stats": mean and standard deviation over time of the first 20 MFCCs (the type-II
  orthonormal DCT of the dB mel bands, librosa's `feature.mfcc(S=...)`), [40];
- "chroma": the mel bands folded onto the 12 pitch classes (C = 0 .. B = 11): each band is
  assigned the pitch class of its centre frequency, the class's value is the mean power of its
  bands averaged over time, and the 12 values are normalised to sum to 1, [12]. Bands centred
  below C1 (32.7 Hz) carry no usable pitch and are left out.

`random_init_embedder` is the run's encoder with the parameters training starts from: the
same config and seed, initialised as `train.step.init_state` does (`encoder.init` on a
training-length input), embedded by the same `Embedder` in the same modes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import librosa
import ml_collections
import numpy as np

from myna_rpe_jax.data.audio import MelConfig
from myna_rpe_jax.embed.embedder import Embedder
from myna_rpe_jax.model import vit

N_MFCC = 20
FEATURE_SETS = ("log-mel stats", "MFCC stats", "chroma")
RANDOM_INIT = "random init"
# The lowest pitch a band centre is folded from: C1, 12 semitones above C0.
_C0_HZ = 440.0 * 2.0 ** (-57 / 12)
_LOWEST_PITCH_HZ = 2 * _C0_HZ


def _as_float(mel_db: np.ndarray) -> np.ndarray:
    mel_db = np.asarray(mel_db, np.float64)
    if mel_db.ndim != 2 or mel_db.shape[1] == 0:
        raise ValueError(f"expected a log-mel [n_mels, T] with T > 0, got shape {mel_db.shape}")
    return mel_db


def logmel_stats(mel_db: np.ndarray) -> np.ndarray:
    """mel_db [F, T] (dB) -> [2F]: per-band mean over time, then per-band std over time."""
    mel_db = _as_float(mel_db)
    return np.concatenate([mel_db.mean(axis=1), mel_db.std(axis=1)])


def mfcc_stats(mel_db: np.ndarray, n_mfcc: int = N_MFCC) -> np.ndarray:
    """mel_db [F, T] (dB) -> [2 * n_mfcc]: mean, then std over time of the MFCCs of mel_db."""
    mfcc = librosa.feature.mfcc(S=_as_float(mel_db), n_mfcc=n_mfcc)
    return np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)])


def band_pitch_classes(mel_config: MelConfig) -> np.ndarray:
    """The pitch class (0 = C .. 11 = B) of every mel band's centre frequency -> [n_mels] int,
    -1 for bands centred below C1. Centres as `librosa.filters.mel` places them (Slaney)."""
    fmax = mel_config.fmax or mel_config.sample_rate / 2
    edges = librosa.mel_frequencies(mel_config.n_mels + 2, fmin=mel_config.fmin, fmax=fmax)
    centres = edges[1:-1]
    semitones = np.round(12 * np.log2(np.maximum(centres, 1e-6) / _C0_HZ)).astype(int)
    return np.where(centres >= _LOWEST_PITCH_HZ, semitones % 12, -1)


def mel_chroma(mel_db: np.ndarray, pitch_classes: np.ndarray) -> np.ndarray:
    """mel_db [F, T] (dB), pitch_classes [F] (from `band_pitch_classes`) -> [12] summing to 1
    (uniform when no band has a pitch class): mean power over time and over the bands of each
    pitch class."""
    mel_db = _as_float(mel_db)
    if pitch_classes.shape != (mel_db.shape[0],):
        raise ValueError(
            f"pitch_classes {pitch_classes.shape} must have one entry per mel band"
            f" ({mel_db.shape[0]})"
        )
    power = librosa.db_to_power(mel_db).mean(axis=1)  # [F]
    used = pitch_classes >= 0
    total = np.bincount(pitch_classes[used], power[used], minlength=12)
    count = np.bincount(pitch_classes[used], minlength=12)
    chroma = total / np.maximum(count, 1)
    norm = chroma.sum()
    return chroma / norm if norm > 0 else np.full(12, 1 / 12)


def feature_slices(n_mels: int, n_mfcc: int = N_MFCC) -> dict[str, tuple[int, int]]:
    """Where each of FEATURE_SETS lies in a `track_features` vector: name -> (start, stop)."""
    sizes = (2 * n_mels, 2 * n_mfcc, 12)
    stops = np.cumsum(sizes)
    return {
        name: (int(stop - size), int(stop))
        for name, size, stop in zip(FEATURE_SETS, sizes, stops, strict=True)
    }


def track_features(mel_db: np.ndarray, pitch_classes: np.ndarray) -> np.ndarray:
    """mel_db [F, T] -> [2F + 2 * N_MFCC + 12] float32: every feature set, as feature_slices."""
    return np.concatenate(
        [logmel_stats(mel_db), mfcc_stats(mel_db), mel_chroma(mel_db, pitch_classes)]
    ).astype(np.float32)


class FeatureExtractor:
    """The hand-made features in the place of an `Embedder` (what `embed.collection` calls):
    `embed(mels)` -> [N, D] rows of `track_features`, for the run's mel settings."""

    def __init__(self, mel_config: MelConfig, mel_source: str):
        self.mel_config, self.mel_source = mel_config, mel_source
        self._pitch_classes = band_pitch_classes(mel_config)

    def embed(
        self,
        mels: Sequence[np.ndarray],
        mode: str = "features",
        on_done: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Features [N, D] float32 of N mels [n_mels, T_i]; mode is only a label here."""
        rows = []
        for mel in mels:
            rows.append(track_features(mel, self._pitch_classes))
            if on_done:
                on_done(1)
        return np.stack(rows)


def random_params(encoder, config: ml_collections.ConfigDict):
    """The parameters a fresh training run of `config` starts from (`vit.init_params` with
    the key of config.seed, on a [1, n_mels, max(chunk_frames)] input, as train/loop.py)."""
    sample = jnp.zeros((1, config.model.n_mels, max(config.data.chunk_frames)), jnp.float32)
    init = jax.jit(functools.partial(vit.init_params, encoder))
    return init(jax.random.key(config.seed), sample)


def random_init_embedder(trained: Embedder, config: ml_collections.ConfigDict) -> Embedder:
    """An Embedder like `trained` (same encoder, chunking, mel settings, batching) with the
    run's initial parameters (`random_params`) instead of the checkpoint's."""
    return Embedder(
        trained.encoder,
        random_params(trained.encoder, config),
        trained.chunk_frames,
        trained.max_tokens,
        trained.mel_config,
        trained.mel_source,
        trained.max_padding,
        trained.devices,
    )

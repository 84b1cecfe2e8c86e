"""librosa's resampling and dB conversion, without importing librosa's modules.

A fresh decoding process that imports librosa.core or librosa.filters (scipy.signal, numba)
spends ~2.5 s before its first clip, a hundred clips' worth of decoding; these two are all
the log-mel pipeline needs of them (the filterbank comes from the parent: audio.mel_plans).
tests/data/test_audio.py checks each against librosa's own.
"""

from __future__ import annotations

import numpy as np
import soxr


def resample(y: np.ndarray, source_rate: int, sample_rate: int) -> np.ndarray:
    """`librosa.resample(y, orig_sr=source_rate, target_sr=sample_rate, res_type="soxr_hq")`
    of mono `y: [samples]`: soxr's high-quality resampler, cut or zero-padded to
    ceil(samples * ratio) samples, in y's dtype."""
    out = soxr.resample(y, source_rate, sample_rate, quality="soxr_hq")
    length = int(np.ceil(len(y) * sample_rate / source_rate))
    return np.pad(out, (0, max(0, length - len(out))))[:length].astype(y.dtype, copy=False)


def power_to_db(power: np.ndarray, top_db: float | None, amin: float = 1e-10) -> np.ndarray:
    """`librosa.power_to_db(power, ref=np.max, top_db=top_db)`: dB relative to the maximum
    (powers below `amin` count as `amin`), floored `top_db` below the loudest value."""
    db = 10.0 * np.log10(np.maximum(amin, power))
    db -= 10.0 * np.log10(np.maximum(amin, power.max(initial=0.0)))
    return np.maximum(db, db.max() - top_db) if top_db is not None else db

"""Audio decoding and log-mel features, with failures classified into readable reasons.

Decoding uses soundfile (its bundled libsndfile reads wav/flac/ogg/opus/mp3/aiff) and falls
back to `librosa.load` (audioread, which needs ffmpeg) for other containers such as m4a.
A file that does not decode is "not decodable audio (<what its name and first bytes look
like>): <the library's reason>". What the C decoders print on the process's stderr while
they run (libmpg123's "Note: Illegal Audio-MPEG-Header ...") is captured: it becomes part of
the reason of a failed file and a debug log line of a good one, never terminal noise.
Features follow Myna-RPE: 44.1 kHz mono, n_fft 2048, window 1103 (25 ms), hop 441 (10 ms,
100 frames/s), 128 mel bins, power in dB relative to the track maximum with top_db 80, stored
as float16 `[n_mels, frames]` with values in [-top_db, 0].
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import struct
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator

import audioread
import librosa
import numpy as np
import scipy.fft
import soundfile as sf

from myna_rpe_jax.data import dsp
from myna_rpe_jax.data.formats import SOUNDFILE_EXTENSIONS

# Peak amplitude below which a track counts as silent: about one 16-bit LSB (-90 dBFS).
SILENCE_PEAK = 10 ** (-90 / 20)
# The STFT runs over blocks of this many frames (~10 s at 100 frames/s): bounded memory on
# long tracks, and a block's spectrum stays in cache for the mel product.
_BLOCK_FRAMES = 1024
_DECODER_TEXT_CHARS = 300  # of captured decoder output kept in a reason
# (offset, bytes, format) of the headers a file's first bytes are compared with.
_MAGIC = (
    (0, b"RIFF", "a WAV header"),
    (0, b"RF64", "a WAV (RF64) header"),
    (0, b"riff", "a W64 header"),
    (0, b"fLaC", "a FLAC header"),
    (0, b"OggS", "an Ogg header"),
    (0, b"ID3", "an MP3 ID3 tag"),
    (0, b"FORM", "an AIFF header"),
    (0, b".snd", "an AU header"),
    (4, b"ftyp", "an MP4/M4A header"),
)

log = logging.getLogger("myna_rpe_jax.audio")


class AudioError(Exception):
    """A file that cannot become a usable mel spectrogram.

    `reason` is a short text for logs and skip lists ("empty file (0 bytes)",
    "not decodable audio (...): ...", "too short: 0.4 s < 1.0 s", "silent: ..."); `path`
    names the file.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class MelConfig:
    """Log-mel feature settings (defaults: Myna-RPE)."""

    sample_rate: int = 44100
    n_fft: int = 2048
    win_length: int = 1103
    hop_length: int = 441
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    top_db: float = 80.0

    def __post_init__(self):
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"MelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.win_length > self.n_fft:
            raise ValueError(
                f"MelConfig.win_length ({self.win_length}) must be <= n_fft ({self.n_fft})"
            )
        nyquist = self.sample_rate / 2
        if self.fmax is not None and not self.fmin < self.fmax <= nyquist:
            raise ValueError(
                f"MelConfig needs fmin < fmax <= sample_rate / 2 = {nyquist}, "
                f"got fmin={self.fmin}, fmax={self.fmax}"
            )
        if self.top_db <= 0:
            raise ValueError(f"MelConfig.top_db must be positive, got {self.top_db}")

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length


def _wav_shortfall(path: str) -> tuple[int, int] | None:
    """(declared, present) data bytes of a RIFF/WAVE file whose data chunk is cut short.

    libsndfile silently shortens such files, so a download that stopped half way would
    otherwise pass as a shorter track. None when the file is complete, not RIFF, or uses a
    streaming placeholder size (0 or 0xFFFFFFFF).
    """
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"data":
                present = file_size - f.tell()
                if size in (0, 0xFFFFFFFF) or present >= size:
                    return None
                return size, present
            f.seek(size + (size & 1), os.SEEK_CUR)


@contextlib.contextmanager
def _captured_fd2(text: list[str]) -> Iterator[None]:
    """Sends what is written to file descriptor 2 (C libraries' stderr) during the block to a
    temporary file, then restores it and appends the text to `text`.

    fd 2 is one per process, so only the main thread captures: the build's decoding
    processes, or a single-threaded caller. In another thread (embed --audio's decoders) it
    does nothing, or it would also swallow what the main thread logs meanwhile (a skipped
    file's warning, the progress bar). Without a usable fd 2, it does nothing either.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with tempfile.TemporaryFile() as sink:
        if sys.stderr is not None:
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:
            yield
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text.append(sink.read().decode("utf-8", "replace"))


def _decoder_text(text: list[str]) -> str:
    """Captured decoder output as "; decoder output: <one line, shortened>", or ""."""
    line = " ".join(" ".join(text).split())
    if len(line) > _DECODER_TEXT_CHARS:
        line = line[: _DECODER_TEXT_CHARS - 3] + "..."
    return f"; decoder output: {line}" if line else ""


def format_guess(path: str) -> str:
    """What a file looks like from its name and first bytes, e.g. "named .mp3, starts with
    a WAV header" or "named .mp3, starts like text, no audio header"."""
    extension = os.path.splitext(path)[1].lower()
    name = f"named {extension}" if extension else "no extension"
    with open(path, "rb") as f:
        head = f.read(512)
    for offset, magic, header in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return f"{name}, starts with {header}"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return f"{name}, starts with an MPEG audio frame header"
    if head.lstrip()[:1] == b"<":
        return f"{name}, starts like HTML/XML (a saved web page?), no audio header"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return f"{name}, no known audio header"
    return f"{name}, starts like text, no audio header"


def _libsndfile_detail(err: sf.LibsndfileError) -> str:
    # libsndfile says "File does not exist or is not a regular file" of an existing file
    # whose format it cannot find (load_audio has checked that it exists and is a file).
    if "does not exist" in err.error_string:
        return "libsndfile finds no format it reads"
    return f"libsndfile: {err.error_string.rstrip('.')}"


def _audioread_backends() -> list | None:
    """audioread's backends, without the CoreAudio probe off macOS (None: audioread's own list).

    That probe is ctypes.util.find_library("AudioToolbox"), which on Linux runs
    `ld -o /dev/null` and, when ld fails, ld deletes its output: in a container whose /dev/null
    is a regular file, run as root, that removes /dev/null for every later process.
    """
    if sys.platform == "darwin":
        return None
    from audioread import ffdec, rawread

    return [rawread.RawAudioFile, *([ffdec.FFmpegAudioFile] if ffdec.available() else [])]


def _decode_fallback(path: str) -> tuple[np.ndarray, int]:
    """Decodes a container libsndfile does not read, via librosa/audioread (needs ffmpeg).

    The reader is opened here, so librosa does not try libsndfile (and its chatter) again.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # audioread is deprecated (librosa, Python): known
            with audioread.audio_open(path, _audioread_backends()) as reader:
                y, sr = librosa.load(reader, sr=None, mono=True, dtype=np.float32)
    except MemoryError:  # not the file's fault: the build stops (cache.UnexpectedDecodeError)
        raise
    except Exception as err:  # audioread raises many unrelated types; all mean "cannot decode"
        library = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        extension = os.path.splitext(path)[1] or "this file"
        raise AudioError(
            path,
            f"not decodable audio ({format_guess(path)}): {library} (libsndfile cannot read"
            f" {extension}; install ffmpeg or convert to wav/flac)",
        ) from err
    return y[:, None], int(sr)


def _decode(path: str, fallback: bool) -> tuple[np.ndarray, int]:
    """Decodes with libsndfile, or if it cannot open the file and `fallback`, with
    librosa/audioread: ([samples, channels] float32, sample rate)."""
    text: list[str] = []
    try:
        with _captured_fd2(text):
            handle = sf.SoundFile(path)
    except sf.LibsndfileError as err:
        if fallback:
            return _decode_fallback(path)
        detail = _libsndfile_detail(err) + _decoder_text(text)
        raise AudioError(path, f"not decodable audio ({format_guess(path)}): {detail}") from err
    with handle:
        declared = handle.frames
        try:
            with _captured_fd2(text):
                data = handle.read(dtype="float32", always_2d=True)
        except sf.LibsndfileError as err:
            detail = _libsndfile_detail(err) + _decoder_text(text)
            raise AudioError(path, f"truncated: decoding failed part way ({detail})") from err
        # Compressed formats (mp3 Xing header, flac STREAMINFO) declare their length; a cut
        # file decodes fewer frames. 1% slack for mp3 length estimates.
        if declared > 0 and len(data) < 0.99 * declared:
            raise AudioError(
                path,
                f"truncated: decoded {len(data) / handle.samplerate:.1f} s of the "
                f"{declared / handle.samplerate:.1f} s the header declares{_decoder_text(text)}",
            )
        if said := _decoder_text(text):  # on a file that decodes whole: noise
            log.debug("%s: decoded%s", path, said)
        return data, handle.samplerate


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Decodes `path`, mixes to mono and resamples to `sample_rate` (soxr high quality).

    Returns float32 `[samples]`. Raises AudioError for a missing, empty, undecodable or
    truncated file, for no samples, and for non-finite (NaN/inf) samples.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(path, "file does not exist")
    if not os.path.isfile(path):
        raise AudioError(path, "not a regular file (a folder?)")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty file (0 bytes)")
    extension = os.path.splitext(path)[1].lower()
    data, source_rate = _decode(path, fallback=extension not in SOUNDFILE_EXTENSIONS)
    shortfall = _wav_shortfall(path)
    if shortfall is not None:
        declared, present = shortfall
        raise AudioError(
            path, f"truncated: header declares {declared} data bytes, file holds {present}"
        )
    if len(data) == 0:
        raise AudioError(path, "truncated: decodes to 0 samples")
    y = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(y).all():
        raise AudioError(path, "non-finite samples (NaN or inf) in the decoded audio")
    if source_rate != sample_rate:
        y = dsp.resample(y, source_rate, sample_rate)
    return np.ascontiguousarray(y, dtype=np.float32)


# Decoding workers never import librosa's filters, core or scipy.signal (~2.5 s per fresh
# process): they get the parent's filterbank (`mel_plans`) and use data/dsp.py.


@dataclasses.dataclass(frozen=True)
class _MelPlan:
    """What mel_power needs per config: librosa's window and filterbank, and for each group
    of _GROUP mel filters the FFT bins [lo, hi) where any of them is non-zero."""

    window: np.ndarray  # [n_fft] float32, the hann window of win_length centred in n_fft
    basis: np.ndarray  # [n_mels, 1 + n_fft // 2] float32
    bands: tuple[tuple[int, int, int], ...]  # (first filter, lo bin, hi bin)


_GROUP = 8


_PLANS: dict[MelConfig, _MelPlan] = {}


def mel_plans(configs) -> dict[MelConfig, _MelPlan]:
    """The window and filterbank of each config, to hand to a fresh process (`install_plans`)
    so that it never imports librosa's filters (scipy.signal: ~1.5 s)."""
    return {cfg: _mel_plan(cfg) for cfg in configs}


def install_plans(plans: dict[MelConfig, _MelPlan]) -> None:
    _PLANS.update(plans)


def _mel_plan(cfg: MelConfig) -> _MelPlan:
    if cfg not in _PLANS:
        _PLANS[cfg] = _compute_plan(cfg)
    return _PLANS[cfg]


def _compute_plan(cfg: MelConfig) -> _MelPlan:
    window = librosa.filters.get_window("hann", cfg.win_length, fftbins=True)
    basis = librosa.filters.mel(
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        dtype=np.float32,
    )
    bands = []
    for first in range(0, cfg.n_mels, _GROUP):
        used = np.flatnonzero(basis[first : first + _GROUP].any(axis=0))
        bands.append((first, int(used[0]), int(used[-1]) + 1) if len(used) else (first, 0, 0))
    return _MelPlan(
        window=librosa.util.pad_center(window, size=cfg.n_fft).astype(np.float32),
        basis=basis,
        bands=tuple(bands),
    )


def mel_power(y: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """Mel power spectrogram `[n_mels, 1 + len(y) // hop]` float32 of mono `y: [samples]`.

    Equals `librosa.feature.melspectrogram(y=y, power=2, center=True, pad_mode="constant")`
    with cfg's parameters (same window and filterbank; tests check it), but faster: scipy's
    float32 FFT, and each group of mel filters multiplies only the FFT bins it covers (the
    filterbank is ~98% zeros). Frames go in blocks so long tracks need memory
    for one block of spectrum, not the whole track.
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"expected mono audio [samples] with samples > 0, got shape {y.shape}")
    plan = _mel_plan(cfg)
    hop = cfg.hop_length
    # Zero padding by n_fft // 2 on both sides reproduces librosa's centred frames.
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(y, cfg.n_fft // 2), cfg.n_fft)
    num_frames = 1 + len(y) // hop
    out = np.zeros((cfg.n_mels, num_frames), dtype=np.float32)
    for start in range(0, num_frames, _BLOCK_FRAMES):
        stop = min(start + _BLOCK_FRAMES, num_frames)
        spec = scipy.fft.rfft(frames[start * hop : stop * hop : hop] * plan.window, axis=-1)
        power = spec.real**2 + spec.imag**2  # [block frames, n_fft // 2 + 1]
        for first, lo, hi in plan.bands:
            rows = slice(first, first + _GROUP)
            out[rows, start:stop] = plan.basis[rows, lo:hi] @ power[:, lo:hi].T
    return out


def log_mel(y: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """Log-mel spectrogram float16 `[n_mels, frames]` in dB relative to the track maximum.

    y: [samples] mono at cfg.sample_rate. Values lie in [-cfg.top_db, 0]. All-zero input
    gives all zeros (no NaN/-inf); `audio_to_mel` rejects silent tracks before this.
    """
    power = mel_power(y, cfg)
    db = dsp.power_to_db(power, cfg.top_db)
    return db.astype(np.float16)


def audio_to_mel(
    path: str | os.PathLike, cfg: MelConfig, min_seconds: float = 1.0
) -> tuple[np.ndarray, float]:
    """Decodes `path` into (log-mel float16 [n_mels, frames], duration in seconds).

    Raises AudioError for every reason `load_audio` does, for audio shorter than
    `min_seconds`, and for silent audio (peak below -90 dBFS).
    """
    y = load_audio(path, cfg.sample_rate)
    duration = len(y) / cfg.sample_rate
    if duration < min_seconds:
        raise AudioError(path, f"too short: {duration:.2f} s < {min_seconds:g} s")
    peak = float(np.max(np.abs(y)))
    if peak < SILENCE_PEAK:
        detail = f"peak {20 * np.log10(peak):.0f} dBFS < -90 dBFS" if peak else "all samples are 0"
        raise AudioError(path, f"silent: {detail}")
    return log_mel(y, cfg), duration

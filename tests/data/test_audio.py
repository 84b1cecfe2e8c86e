"""Tests for myna_rpe_jax.data.audio: features against librosa, resampling, and failure reasons."""

import ctypes.util
import os
import pickle
import subprocess
import sys
import threading

import audioread
import librosa
import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from myna_rpe_jax.data import audio, dsp
from myna_rpe_jax.data.demo import music

CFG = audio.MelConfig()
OTHER_CFG = audio.MelConfig(
    sample_rate=16000,
    n_fft=1024,
    win_length=800,
    hop_length=160,
    n_mels=64,
    fmin=30.0,
    fmax=7000.0,
    top_db=60.0,
)


def _librosa_log_mel(y: np.ndarray, cfg: audio.MelConfig) -> np.ndarray:
    """The reference: librosa's own mel spectrogram and dB conversion, float32."""
    power = librosa.feature.melspectrogram(
        y=y,
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        win_length=cfg.win_length,
        hop_length=cfg.hop_length,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        power=2.0,
    )
    return librosa.power_to_db(power, ref=np.max, top_db=cfg.top_db)


def _music(seconds: float, sample_rate: int, index: int = 0) -> np.ndarray:
    return music.render_track(music.track_spec(index), seconds, sample_rate)


def _sine(freq: float, seconds: float, sample_rate: int) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_mel_config_defaults_and_validation():
    assert CFG.frames_per_second == 100.0
    with pytest.raises(ValueError, match="win_length"):
        audio.MelConfig(win_length=4096)
    with pytest.raises(ValueError, match="fmax"):
        audio.MelConfig(fmax=30000.0)
    with pytest.raises(ValueError, match="hop_length"):
        audio.MelConfig(hop_length=0)


def test_audio_to_mel_equals_librosa(tmp_path):
    path = tmp_path / "track.wav"
    sf.write(path, _music(4.0, 44100), 44100, subtype="FLOAT")
    mel, duration = audio.audio_to_mel(path, CFG)
    y, _ = sf.read(path, dtype="float32")
    reference = _librosa_log_mel(y, CFG)
    assert mel.dtype == np.float16 and mel.shape == reference.shape == (128, 401)
    assert duration == pytest.approx(4.0)
    # float16 keeps ~11 bits: half a step at |x| = 80 dB is 0.03 dB.
    np.testing.assert_allclose(mel.astype(np.float32), reference, atol=0.04)
    assert mel.max() == 0 and mel.min() >= -CFG.top_db


@pytest.mark.parametrize("cfg", [CFG, OTHER_CFG])
def test_log_mel_blocks_match_librosa_on_long_audio(cfg):
    # Several STFT blocks long (audio._BLOCK_FRAMES), so block seams are covered.
    y = np.tile(_music(10.0, cfg.sample_rate, index=3), 3)[: int(25.37 * cfg.sample_rate)]
    mel = audio.log_mel(y, cfg)
    reference = _librosa_log_mel(y, cfg)
    assert mel.shape == reference.shape
    np.testing.assert_allclose(mel.astype(np.float32), reference, atol=0.04)


def test_log_mel_of_silence_is_finite():
    mel = audio.log_mel(np.zeros(44100, np.float32), CFG)
    assert np.isfinite(mel.astype(np.float32)).all()


def test_resampled_sine_matches_native_rate(tmp_path):
    for rate in (22050, 44100):
        sf.write(tmp_path / f"sine{rate}.wav", _sine(1000.0, 2.0, rate), rate, subtype="FLOAT")
    low, low_seconds = audio.audio_to_mel(tmp_path / "sine22050.wav", CFG)
    high, high_seconds = audio.audio_to_mel(tmp_path / "sine44100.wav", CFG)
    assert low.shape == high.shape and low_seconds == pytest.approx(high_seconds)
    peak_low, peak_high = low.argmax(axis=0), high.argmax(axis=0)
    np.testing.assert_array_equal(peak_low, peak_high)
    expected_bin = np.argmin(
        np.abs(librosa.mel_frequencies(CFG.n_mels + 2, fmax=22050)[1:-1] - 1000)
    )
    assert abs(int(np.median(peak_high)) - expected_bin) <= 1


@pytest.mark.parametrize(
    "length, source, target",
    [(44100, 44100, 16000), (12345, 22050, 16000), (1001, 48000, 16000), (777, 8000, 16000)],
)
def test_resample_equals_librosa(length, source, target):
    y = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    expected = librosa.resample(y, orig_sr=source, target_sr=target, res_type="soxr_hq")
    out = dsp.resample(y, source, target)
    assert out.dtype == expected.dtype and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("top_db", [80.0, 30.0, None])
def test_power_to_db_equals_librosa(top_db):
    power = np.random.default_rng(1).exponential(size=(16, 50)).astype(np.float32) ** 4
    power[0, :5] = 0.0  # below amin
    expected = librosa.power_to_db(power, ref=np.max, top_db=top_db)
    np.testing.assert_allclose(dsp.power_to_db(power, top_db), expected, rtol=1e-6, atol=1e-5)
    zeros = np.zeros((4, 3), np.float32)
    np.testing.assert_array_equal(
        dsp.power_to_db(zeros, top_db), librosa.power_to_db(zeros, ref=np.max, top_db=top_db)
    )


def test_a_process_given_the_mel_plans_never_imports_librosas_heavy_modules(tmp_path):
    """What makes a decoding worker start in a fraction of a second instead of ~2.5 s."""
    path = tmp_path / "clip.wav"
    sf.write(path, _music(2.0, 44100), 44100)
    plans = tmp_path / "plans.pkl"
    plans.write_bytes(pickle.dumps(audio.mel_plans([CFG])))
    script = (
        "import pickle, sys\n"
        "from myna_rpe_jax.data import audio\n"
        f"audio.install_plans(pickle.loads(open({str(plans)!r}, 'rb').read()))\n"
        f"mel, _ = audio.audio_to_mel({str(path)!r}, audio.MelConfig())\n"
        "heavy = [m for m in ('librosa.filters', 'librosa.core', 'scipy.signal', 'numba')"
        " if m in sys.modules]\n"
        "print(mel.shape, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(128, 201) []", out.stdout + out.stderr


def test_resampling_agrees_with_scipy_polyphase(tmp_path):
    # Tones well inside both resamplers' passbands (< 8 kHz of the 11.025 kHz Nyquist),
    # where any correct 2x upsampler must give the same signal.
    rng = np.random.default_rng(0)
    y = sum(_sine(f, 3.0, 22050) * rng.uniform(0.1, 0.3) for f in rng.uniform(50, 8000, 12))
    path = tmp_path / "tones.wav"
    sf.write(path, y, 22050, subtype="FLOAT")
    ours = audio.load_audio(path, 44100)
    reference = scipy.signal.resample_poly(y.astype(np.float64), 2, 1)
    assert len(ours) == len(reference)
    interior = slice(2000, -2000)  # the two resamplers treat the edges differently
    error = ours[interior] - reference[interior]
    assert np.sqrt(np.mean(error**2)) < 2e-3 * np.sqrt(np.mean(reference[interior] ** 2))


def test_stereo_is_mixed_to_mono(tmp_path):
    left, right = _sine(440.0, 1.5, 44100), _sine(660.0, 1.5, 44100)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_24")
    np.testing.assert_allclose(audio.load_audio(path, 44100), (left + right) / 2, atol=1e-6)


def test_flac_and_mp3_decode_like_wav(tmp_path):
    y = _music(3.0, 44100, index=2)
    for extension in ("wav", "flac", "mp3"):
        sf.write(tmp_path / f"x.{extension}", y, 44100)
    wav = audio.load_audio(tmp_path / "x.wav", 44100)
    # Both hold 16-bit samples; libsndfile may round the two encodings a step apart.
    np.testing.assert_allclose(audio.load_audio(tmp_path / "x.flac", 44100), wav, atol=2**-15)
    # An unfamiliar extension still goes to libsndfile first, which sniffs the contents.
    (tmp_path / "x.bin").write_bytes((tmp_path / "x.wav").read_bytes())
    np.testing.assert_array_equal(audio.load_audio(tmp_path / "x.bin", 44100), wav)
    mp3 = audio.load_audio(tmp_path / "x.mp3", 44100)
    assert abs(len(mp3) - len(wav)) < 0.05 * 44100  # encoder padding
    # Lossy, so the same signal within the codec's error: aligned at the lag of best match.
    n = min(len(mp3), len(wav)) - 2048
    lag = max(
        range(-1024, 1025), key=lambda k: np.dot(mp3[1024 + k : 1024 + k + n], wav[1024 : 1024 + n])
    )
    shifted, reference = mp3[1024 + lag : 1024 + lag + n], wav[1024 : 1024 + n]
    assert np.corrcoef(shifted, reference)[0, 1] > 0.95
    snr = 10 * np.log10(np.sum(reference**2) / np.sum((shifted - reference) ** 2))
    assert snr > 15, snr


def _bad_files(tmp_path) -> dict[str, tuple[str, str]]:
    """name -> (path, expected start of AudioError.reason), each written here."""
    good = tmp_path / "good.wav"
    sf.write(good, _music(3.0, 22050), 22050, subtype="PCM_16")
    data = good.read_bytes()
    files = {
        "empty": ("empty.wav", b""),
        "random bytes": ("random.wav", np.random.default_rng(0).bytes(20000)),
        "text": ("notes.wav", b"this is not audio\n" * 200),
        "cut in header": ("header.wav", data[:30]),
        "cut in data": ("cut.wav", data[: len(data) // 2]),
        "no samples": ("nosamples.wav", data[:44]),
        "unknown format": ("random.xyz", np.random.default_rng(1).bytes(5000)),
    }
    for name, contents in files.values():
        (tmp_path / name).write_bytes(contents)
    flac = tmp_path / "good.flac"
    sf.write(flac, _music(3.0, 22050), 22050)
    (tmp_path / "cut.flac").write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    sf.write(tmp_path / "short.wav", _music(0.4, 22050), 22050)
    sf.write(tmp_path / "silent.wav", np.zeros(44100, np.float32), 22050)
    nan = _music(2.0, 22050)
    nan[1000] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 22050, subtype="FLOAT")
    expected = {
        "missing": ("does_not_exist.wav", "file does not exist"),
        "empty": ("empty.wav", "empty file"),
        "random bytes": ("random.wav", "not decodable audio (named .wav, no known audio header)"),
        "text": ("notes.wav", "not decodable audio (named .wav, starts like text"),
        "cut in header": ("header.wav", "not decodable audio (named .wav, starts with a WAV"),
        "cut in data": ("cut.wav", "truncated"),
        "no samples": ("nosamples.wav", "truncated"),
        "cut flac": ("cut.flac", "truncated"),
        "unknown format": ("random.xyz", "not decodable audio (named .xyz"),
        "too short": ("short.wav", "too short: 0.40 s < 1 s"),
        "silent": ("silent.wav", "silent"),
        "nan": ("nan.wav", "non-finite"),
    }
    return {name: (os.fspath(tmp_path / path), reason) for name, (path, reason) in expected.items()}


def test_each_failure_has_its_reason(tmp_path):
    for name, (path, reason) in _bad_files(tmp_path).items():
        with pytest.raises(audio.AudioError) as info:
            audio.audio_to_mel(path, CFG)
        assert info.value.reason.startswith(reason), (name, info.value.reason)
        assert info.value.path == path and path in str(info.value)


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS probes CoreAudio with dyld, not ld")
def test_the_fallback_decoder_never_runs_the_ld_probe(tmp_path, monkeypatch):
    """audioread's CoreAudio probe, ctypes.util.find_library, runs `ld -o /dev/null`; a failing
    ld deletes its output, so where /dev/null is a regular file (CI's container, as root) every
    later subprocess with stdin=DEVNULL failed. Off macOS the probe must not run."""
    calls = []
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: calls.append(name))
    monkeypatch.setattr(audioread, "BACKENDS", [])  # audioread caches what it probed
    path = tmp_path / "random.xyz"
    path.write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(audio.AudioError, match="not decodable audio"):
        audio.audio_to_mel(path, CFG)
    assert calls == []


def test_running_out_of_memory_in_the_fallback_decoder_is_not_the_files_fault(
    tmp_path, monkeypatch
):
    """audioread's decoders raise many types, all read as "not decodable audio"; a MemoryError
    is not the file's fault and must reach the build (which stops) instead of being cached as
    a bad file. The wav is read by audioread's own raw reader, no ffmpeg needed."""
    path = tmp_path / "clip.wav"
    sf.write(path, np.zeros(16000, np.float32), 16000)

    def out_of_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 3.1 GiB")

    monkeypatch.setattr(librosa, "load", out_of_memory)
    with pytest.raises(MemoryError, match="3.1 GiB"):
        audio._decode_fallback(str(path))


def test_good_file_next_to_bad_ones_still_works(tmp_path):
    _bad_files(tmp_path)
    mel, duration = audio.audio_to_mel(tmp_path / "good.wav", CFG, min_seconds=2.5)
    assert mel.shape == (128, 301) and duration == pytest.approx(3.0)


def test_each_failure_leaves_nothing_on_the_c_level_stderr(tmp_path, capfd):
    for path, _ in _bad_files(tmp_path).values():
        with pytest.raises(audio.AudioError) as info:
            audio.audio_to_mel(path, CFG)
        # An existing file is never said not to exist (libsndfile's words for a .mp3 of junk).
        assert ("does not exist" in info.value.reason) == (not os.path.exists(path))
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize(
    "name, contents, guess",
    [
        ("random.mp3", np.random.default_rng(2).bytes(20000), "named .mp3, no known audio header"),
        ("lyrics.mp3", b"la la la, not audio\n" * 100, "named .mp3, starts like text"),
        ("page.mp3", b"<!DOCTYPE html><html>404</html>", "named .mp3, starts like HTML"),
        ("random.wav", np.random.default_rng(3).bytes(20000), "named .wav, no known audio header"),
    ],
)
def test_a_file_that_is_not_audio_is_named_so_and_the_decoder_kept_quiet(
    tmp_path, capfd, name, contents, guess
):
    path = tmp_path / name
    path.write_bytes(contents)
    with pytest.raises(audio.AudioError) as info:
        audio.load_audio(path, 44100)
    reason = info.value.reason
    assert reason.startswith(f"not decodable audio ({guess}"), reason
    assert "does not exist" not in reason and "libsndfile" in reason
    assert str(info.value) == f"{path}: {reason}"
    if name.endswith(".mp3"):  # libmpg123 tried it: what it printed is the reason's detail
        assert "decoder output: Note: Illegal Audio-MPEG-Header" in reason
    assert capfd.readouterr() == ("", "")


def test_a_cut_mp3_is_truncated_with_the_decoder_output_kept(tmp_path, capfd):
    sf.write(tmp_path / "whole.mp3", _music(3.0, 44100), 44100)
    whole = (tmp_path / "whole.mp3").read_bytes()
    (tmp_path / "cut.mp3").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(audio.AudioError, match="truncated: decoded 1.* decoder output: .+"):
        audio.load_audio(tmp_path / "cut.mp3", 44100)
    assert capfd.readouterr() == ("", "")


def test_a_missing_file_does_not_exist(tmp_path):
    with pytest.raises(audio.AudioError, match="nothing.mp3: file does not exist$"):
        audio.load_audio(tmp_path / "nothing.mp3", 44100)


@pytest.mark.parametrize(
    "head, guess",
    [
        (b"RIFF\0\0\0\0WAVEfmt ", "starts with a WAV header"),
        (b"fLaC\0\0\0\x22", "starts with a FLAC header"),
        (b"OggS\0\x02", "starts with an Ogg header"),
        (b"ID3\x04\0\0", "starts with an MP3 ID3 tag"),
        (b"\xff\xfb\x90\x64", "starts with an MPEG audio frame header"),
        (b"\0\0\0\x20ftypM4A ", "starts with an MP4/M4A header"),
        (b"  <html>", "starts like HTML/XML"),
        (b"just words", "starts like text"),
        (b"\x00\x9f\x92\x96", "no known audio header"),
    ],
)
def test_format_guess_reads_the_name_and_the_first_bytes(tmp_path, head, guess):
    path = tmp_path / "song.MP3"
    path.write_bytes(head)
    assert audio.format_guess(str(path)).startswith(f"named .mp3, {guess}")
    (tmp_path / "song").write_bytes(head)
    assert audio.format_guess(str(tmp_path / "song")).startswith(f"no extension, {guess}")


def test_captured_fd2_takes_c_level_writes_and_restores_stderr(capfd):
    text = []
    with audio._captured_fd2(text):
        os.write(2, b"Duh... from C\n")
    os.write(2, b"after\n")
    assert text == ["Duh... from C\n"]
    assert capfd.readouterr().err == "after\n"


def test_a_decoding_thread_never_captures_what_the_main_thread_writes(capfd):
    """embed --audio decodes in threads while the main thread logs (e.g. a skipped file's
    warning): fd 2 is the process's, so a thread's capture would swallow those lines."""
    inside, leave, text = threading.Event(), threading.Event(), []

    def decoder_thread():
        with audio._captured_fd2(text):
            inside.set()
            leave.wait(timeout=30)

    thread = threading.Thread(target=decoder_thread)
    thread.start()
    assert inside.wait(timeout=30)
    os.write(2, b"WARNING: skipped other.mp3\n")  # the main thread, meanwhile
    leave.set()
    thread.join(timeout=30)
    assert capfd.readouterr().err == "WARNING: skipped other.mp3\n" and text == []

"""Times the feature pipeline (decode + resample + log-mel [+ write]) per CPU core.

Writes a few generated demo tracks in each format and source sample rate, then runs
`myna_rpe_jax.data.audio` on them in this one process, pinned to one core with BLAS limited to one
thread, so the numbers are per core: a machine with C free cores prepares about C times as
much audio per second with one worker per core. Reported: seconds of audio processed per
wall second ("x real time") for decoding + resampling to 44.1 kHz, for the log-mel alone,
for both together, and for both plus writing the float16 array to disk with np.save.

    python benchmarks/data_prep.py                  # 3 tracks x 30 s, wav/flac/mp3
    python benchmarks/data_prep.py --tracks 2 --seconds 10 --formats wav
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import machine  # noqa: E402  benchmarks/machine.py
import numpy as np
import soundfile as sf
from threadpoolctl import threadpool_limits

from myna_rpe_jax.data import audio
from myna_rpe_jax.data.demo import music


def _pin_to_one_core() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity on this OS)"
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return f"pinned to core {core}"


def _time(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of `repeats` calls (the least disturbed by other processes)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def benchmark(files: list[str], cfg: audio.MelConfig, repeats: int, out_dir: str) -> dict:
    """Summed best times over `files` for each pipeline stage, and the audio seconds."""
    totals = {"decode": 0.0, "mel": 0.0, "both": 0.0, "write": 0.0}
    seconds = 0.0
    for path in files:
        decode, y = _time(lambda p=path: audio.load_audio(p, cfg.sample_rate), repeats)
        mel_time, mel = _time(lambda y=y: audio.log_mel(y, cfg), repeats)
        both, _ = _time(lambda p=path: audio.audio_to_mel(p, cfg), repeats)
        target = os.path.join(out_dir, os.path.basename(path) + ".npy")
        write, _ = _time(lambda m=mel, t=target: np.save(t, m), repeats)
        totals["decode"] += decode
        totals["mel"] += mel_time
        totals["both"] += both
        totals["write"] += both + write
        seconds += len(y) / cfg.sample_rate
    return {"seconds": seconds, **totals}


def _row(fmt: str, rate: int, tracks: list[np.ndarray], repeats: int, tmp: str) -> str:
    """One table row: `tracks` written as `fmt` at `rate`, then timed."""
    cfg = audio.MelConfig()
    files = [os.path.join(tmp, f"track{i}_{rate}.{fmt}") for i in range(len(tracks))]
    for path, y in zip(files, tracks, strict=True):
        sf.write(path, y, rate)
    audio.audio_to_mel(files[0], cfg)  # warm-up: imports, filterbank, FFT plans
    result = benchmark(files, cfg, repeats, tmp)
    stages = ("decode", "mel", "both", "write")
    speeds = [f"{result['seconds'] / result[stage]:.0f}x" for stage in stages]
    return f"| {fmt} | {rate} | " + " | ".join(speeds) + " |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--formats", default="wav,flac,mp3")
    parser.add_argument("--sample-rates", default="22050,44100", help="source rates, Hz")
    args = parser.parse_args(argv)

    pinned = _pin_to_one_core()
    cfg = audio.MelConfig()
    print(f"machine: {machine.describe()}; this run: {pinned}, 1 thread")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {sf.__libsndfile_version__=}"
    )
    print(
        f"{args.tracks} generated demo tracks x {args.seconds:g} s per row; features "
        f"{cfg.sample_rate} Hz, n_fft {cfg.n_fft}, hop {cfg.hop_length}, {cfg.n_mels} mels; "
        f"best of {args.repeats}"
    )
    header = ("format", "source Hz", "decode+resample", "log-mel", "total", "total+write")
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=1):
        for rate in (int(r) for r in args.sample_rates.split(",")):
            tracks = [
                music.render_track(music.track_spec(i), args.seconds, rate)
                for i in range(args.tracks)
            ]
            for fmt in args.formats.split(","):
                print(_row(fmt, rate, tracks, args.repeats, tmp), flush=True)
    print("\nx = seconds of audio per wall-clock second on one core (higher is faster).")


if __name__ == "__main__":
    main()

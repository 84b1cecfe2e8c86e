"""Times the feature pipeline (decode + resample + log-mel [+ write]) per CPU core.

Writes a few generated demo tracks in each format and source sample rate, then runs
`myna_rpe_jax.data.audio` on them in this one process, pinned to one core with BLAS limited to one
thread, so the numbers are per core: a machine with C free cores prepares about C times as
much audio per second with one worker per core. Reported: seconds of audio processed per
wall second ("x real time") for decoding + resampling to 44.1 kHz, for the log-mel alone,
for both together, and for both plus writing the float16 array to disk with np.save.

First, the whole pipeline through the real builder (`datasets.prepare` of a `folder` dataset:
decode + log-mel, cache, tfds array_record writing) beside decode + log-mel alone of the same
files, in one run, for every worker count up to the usable cores: alone with W workers is the
files shared among W already-started processes (the machine's own scaling, which memory
bandwidth and clock boost keep below W on most machines), the builder with W workers is
compared with it (the ratio is what writing and starting workers cost).

    python benchmarks/data_prep.py                  # 3 tracks x 30 s, wav/flac/mp3
    python benchmarks/data_prep.py --tracks 2 --seconds 10 --formats wav --pipeline-tracks 8
    python benchmarks/data_prep.py --small          # seconds: a smoke run of every section
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import tempfile
import time

import machine  # noqa: E402  benchmarks/machine.py
import numpy as np
import soundfile as sf
from threadpoolctl import threadpool_limits

from myna_rpe_jax.data import audio, datasets
from myna_rpe_jax.data.datasets import cache
from myna_rpe_jax.data.datasets.cache import usable_cores
from myna_rpe_jax.data.demo import music


def _start_timed_worker(plans: dict, warm_up: str) -> None:
    """A decoding process as the builder starts it, then warmed up on one file."""
    cache._start_worker(plans)
    audio.audio_to_mel(warm_up, audio.MelConfig())


def _mel_only(path: str) -> None:
    audio.audio_to_mel(path, audio.MelConfig())


def _wait(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def time_alone(files: list[str], workers: int) -> float:
    """Wall seconds of decode + log-mel of `files` in `workers` processes started (and warmed
    up) before the clock starts; workers == 1 runs in this process, one BLAS thread."""
    if workers == 1:
        with threadpool_limits(limits=1):
            start = time.perf_counter()
            for path in files:
                _mel_only(path)
            return time.perf_counter() - start
    context = multiprocessing.get_context("spawn")
    plans = audio.mel_plans([audio.MelConfig()])
    with context.Pool(workers, _start_timed_worker, (plans, files[0])) as pool:
        # One slow task per worker returns only once every worker is up and warm.
        while len(set(pool.map(_wait, [1.0] * workers, chunksize=1))) < workers:
            pass
        start = time.perf_counter()
        pool.map(_mel_only, files, chunksize=1)
        return time.perf_counter() - start


def pipeline_table(num_tracks: int, seconds: float, tmp: str) -> list[str]:
    """Table rows: decode + log-mel alone vs the real builder, 1..usable_cores() workers."""
    # Imported here, not at the top: every spawned decoding worker re-imports this script
    # (multiprocessing runs the parent's __main__), and TensorFlow would cost each seconds.
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    source = os.path.join(tmp, "pipeline_source")
    os.makedirs(source)
    files = []
    for i in range(num_tracks):
        files.append(os.path.join(source, f"track{i:04d}.wav"))
        sf.write(files[-1], music.render_track(music.track_spec(i), seconds, 44100), 44100)
    _mel_only(files[0])  # warm-up: imports, filterbank, FFT plans
    audio_s = num_tracks * seconds
    rows, first = [], {}
    for workers in range(1, usable_cores() + 1):
        alone = time_alone(files, workers)
        data_dir = os.path.join(tmp, f"prepared_{workers}")
        start = time.perf_counter()
        datasets.prepare("folder", source, data_dir, workers=workers, progress=False)
        built = time.perf_counter() - start
        first = first or {"alone": alone, "built": built}
        for name, wall, share, one_worker in (
            ("decode + log-mel alone", alone, "", first["alone"]),
            (
                "builder (decode + log-mel + write)",
                built,
                f"{100 * alone / built:.0f}%",
                first["built"],
            ),
        ):
            rows.append(
                f"| {name} | {workers} | {wall:.2f} | {audio_s / wall:.0f}x | {share} |"
                f" {one_worker / wall:.2f}x |"
            )
    return rows


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
    parser.add_argument("--pipeline-tracks", type=int, default=24, help="tracks for the builder")
    parser.add_argument("--small", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args(argv)
    if args.small:
        args.tracks, args.seconds, args.repeats = 1, 2.0, 1
        args.formats, args.sample_rates, args.pipeline_tracks = "wav", "44100", 2

    print(f"machine: {machine.describe()}; {usable_cores()} usable cores")
    print(
        f"\nWhole pipeline: {args.pipeline_tracks} generated tracks x {args.seconds:g} s, 44.1 kHz"
        " wav, through datasets.prepare('folder', ...) vs decode + log-mel alone; speed-up"
        " over one worker of the same pipeline"
    )
    header = ("pipeline", "workers", "wall s", "x real time", "vs alone, same workers", "speed-up")
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for row in pipeline_table(args.pipeline_tracks, args.seconds, tmp):
            print(row, flush=True)

    pinned = _pin_to_one_core()
    cfg = audio.MelConfig()
    print(f"\nPer core: this run {pinned}, 1 thread")
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

"""Writes the procedurally generated demo music set (audio + metadata.csv).

    python -m data_prep.make_demo --out /tmp/demo_music --tracks 96 --seconds 20

The set is deterministic for a seed; see myna_rpe_jax/data/demo/music.py for what it contains.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

from myna_rpe_jax import errors, files
from myna_rpe_jax.data.datasets.builder import DEFAULT_MIN_SECONDS
from myna_rpe_jax.data.demo import music

# One track is generated in memory whole: an hour at 16 kHz is 230 MB of float32.
MAX_SECONDS = 3600


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.make_demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--tracks", type=int, default=96, help="number of tracks (default 96)")
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="length of each track (default 20)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--sample-rate",
        type=int,
        default=music.SAMPLE_RATE,
        help=f"wav sample rate in Hz (default {music.SAMPLE_RATE})",
    )
    args = parser.parse_args(argv)
    if problem := files.output_problem(args.out, "folder"):
        parser.error(f"--out: {problem}")
    if args.seed < 0:  # numpy's generators take none
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.tracks < 1:
        parser.error(f"--tracks must be >= 1, got {args.tracks}")
    # Shorter tracks than the build's default --min-seconds would all be skipped there; NaN
    # fails too; longer ones than MAX_SECONDS would not fit in memory.
    if not DEFAULT_MIN_SECONDS <= args.seconds <= MAX_SECONDS:
        parser.error(
            f"--seconds must be at least {DEFAULT_MIN_SECONDS:g} (data_prep.build skips shorter"
            f" tracks) and at most {MAX_SECONDS}, got {args.seconds}"
        )
    if not 8000 <= args.sample_rate <= 192000:  # what audio files are written at
        parser.error(f"--sample-rate must be 8000 to 192000 Hz, got {args.sample_rate}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    rows = music.generate_demo(
        args.out,
        num_tracks=args.tracks,
        seconds=args.seconds,
        seed=args.seed,
        sample_rate=args.sample_rate,
        progress=True,
    )
    splits = collections.Counter(row["split"] for row in rows)
    artists = len({row["artist"] for row in rows})
    keys = len({row["key"] for row in rows})
    genres = len({row["genre"] for row in rows})
    print(
        f"wrote {len(rows)} tracks x {args.seconds:g} s to {args.out} in "
        f"{time.perf_counter() - start:.1f} s: {artists} artists, {keys}/24 keys, "
        f"{genres}/{len(music.DEMO_GENRES)} genres, splits "
        + ", ".join(f"{name} {splits[name]}" for name in ("train", "valid", "test"))
    )
    return 0


if __name__ == "__main__":
    sys.exit(
        errors.run_cli(
            main,
            (OSError,),  # e.g. an --out folder that cannot be written
            interrupted="the set is incomplete (metadata.csv is written last): rerun the command",
        )
    )

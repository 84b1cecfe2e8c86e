"""Embedding a collection of full tracks of many lengths: length buckets vs exact lengths.

python benchmarks/embed_lengths.py [--variant tiny] [--tracks 48] [--min-s 20] [--max-s 120]
                                   [--max-padding 0,0.05,0.125,0.25]

Full tracks all differ in length, and the encoder compiles once per input shape. `Embedder`
pads each track into a length bucket (masked out, so the embeddings do not change) to share
compiled programs. For every max_padding this times one pass over the collection (compilation
included: what a user waits for), a second pass (everything compiled: the compute the padding
adds) and counts the programs compiled. Random spectrograms and untrained weights: the time does
not depend on them. Embeddings of every setting are checked against exact lengths.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import machine  # noqa: E402  benchmarks/machine.py
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from myna_rpe_jax.data.chunks import crop_to_patches  # noqa: E402
from myna_rpe_jax.embed import embedder as embedder_lib  # noqa: E402
from myna_rpe_jax.model import vit  # noqa: E402

FRAMES_PER_SECOND = 100  # MelConfig defaults: 44.1 kHz, hop 441


def collection(tracks: int, min_s: float, max_s: float, seed: int = 0) -> list[np.ndarray]:
    """`tracks` random mels [128, T] with T uniform in [min_s, max_s] seconds."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(int(min_s * FRAMES_PER_SECOND), int(max_s * FRAMES_PER_SECOND), tracks)
    return [rng.uniform(-80, 0, (128, n)).astype(np.float16) for n in frames]


def timed_pass(embedder: embedder_lib.Embedder, mels: list[np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = embedder.embed(mels, "full")
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", type=machine.variant, default="tiny", help="tiny, S/16, B/16")
    parser.add_argument("--tracks", type=machine.at_least(1), default=48)
    seconds = machine.at_least(1.0, float)  # a track of at least one patch column
    parser.add_argument("--min-s", type=seconds, default=20.0, help="shortest track, seconds")
    parser.add_argument("--max-s", type=seconds, default=120.0, help="longest track, seconds")
    parser.add_argument(
        "--max-padding", type=machine.number_list(0.0, float), default=[0, 0.05, 0.125, 0.25]
    )
    args = parser.parse_args()
    if args.max_s <= args.min_s:
        parser.error(f"--max-s ({args.max_s:g}) must exceed --min-s ({args.min_s:g})")
    if max(args.max_padding) >= 1:
        parser.error(f"--max-padding values must be below 1, got {args.max_padding}")

    encoder = vit.encoder_from_config(ml_collections.ConfigDict(dict(variant=args.variant)))
    params = jax.jit(lambda: encoder.init(jax.random.key(0), np.zeros((1, 128, 64)), train=False))()
    mels = collection(args.tracks, args.min_s, args.max_s)
    # Full tracks are embedded cropped to whole patch columns (the rule of data/chunks.py).
    kept = [crop_to_patches(mel, encoder.patch_size).shape[1] for mel in mels]
    cropped = sum(kept)
    print(f"machine: {machine.describe()}; JAX {jax.__version__} on {jax.default_backend()}")
    print(
        f"{args.variant}, {args.tracks} tracks of {args.min_s:g}-{args.max_s:g} s"
        f" ({len(set(kept))} distinct lengths in whole patches)\n"
    )
    print(
        "| max_padding | programs | padding (of frames) | first pass s | second pass s | max diff |"
    )
    print("|---|---|---|---|---|---|")
    reference = None
    for max_padding in args.max_padding:
        embedder = embedder_lib.Embedder(
            encoder, params["params"], chunk_frames=256, max_padding=max_padding
        )
        padded = sum(embedder.bucket(frames) for frames in kept)
        first_s, out = timed_pass(embedder, mels)
        second_s, _ = timed_pass(embedder, mels)
        reference = out if reference is None else reference
        diff = float(np.abs(out - reference).max())
        print(
            f"| {max_padding:g} | {len(embedder.shapes_compiled)} | {padded / cropped - 1:.1%}"
            f" | {first_s:.1f} | {second_s:.1f} | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()

"""Embed audio files or a prepared dataset with a trained checkpoint: the command line.

    python -m myna_rpe_jax.embed --workdir=runs/tiny --audio ~/Music --output music.npz
    python -m myna_rpe_jax.embed --workdir=runs/tiny --dataset gtzan --data-dir ~/tfds \
        --output gtzan.npz --mode chunks --parquet

`--mode full` (default) embeds each track whole in one forward pass, `--mode chunks` averages
training-length chunks, `--mode patchout` averages masked passes over the whole track (see
`embedder`). Files that cannot be decoded are reported and skipped. The `.npz` written here
is what probe and playlist read (`file`).
"""

from __future__ import annotations

import argparse
import logging
import sys

from myna_rpe_jax import errors, files
from myna_rpe_jax.data.datasets import SPLITS
from myna_rpe_jax.data.datasets.common import canonical_split
from myna_rpe_jax.embed.collection import (
    add_embedder_flags,
    audio_embeddings,
    check_embedder_flags,
    console_logging,
    dataset_embeddings,
    embedder_settings,
    run_meta,
    save_parquet,
)
from myna_rpe_jax.embed.embedder import MODES, load_embedder
from myna_rpe_jax.embed.file import save_npz

log = logging.getLogger("myna_rpe_jax.embed")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m myna_rpe_jax.embed",
        description="Embed audio files or a prepared dataset with a trained checkpoint.",
    )
    parser.add_argument("--workdir", required=True, help="training workdir (config.json, ckpts)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio", help="an audio file or a folder of them (searched recursively)")
    source.add_argument("--dataset", help="a prepared dataset name (with --data-dir)")
    parser.add_argument("--data-dir", help="where prepared datasets live (with --dataset)")
    parser.add_argument("--splits", help=f"comma-separated splits (default: all of {SPLITS})")
    parser.add_argument("--output", required=True, help="the .npz file to write")
    parser.add_argument("--mode", choices=MODES, default="full", help="full, chunks or patchout")
    parser.add_argument("--parquet", action="store_true", help="also write OUTPUT.parquet")
    add_embedder_flags(parser)
    parser.add_argument("--workers", type=int, default=2, help="audio decoding threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _embed(args: argparse.Namespace) -> int:
    """Embeds and writes the .npz (and .parquet); raises on a missing input or bad split."""
    console_logging()
    progress = not args.no_progress
    embedder, config, step = load_embedder(args.workdir, args.step, **embedder_settings(args))
    if args.audio:
        result = audio_embeddings(embedder, args.audio, args.mode, args.workers, progress=progress)
    else:
        splits = args.splits.split(",") if args.splits else None
        result = dataset_embeddings(
            embedder, args.dataset, args.data_dir, args.mode, splits, progress=progress
        )
    result.meta.update(run_meta(args.workdir, step, args.mode, config, embedder))
    path = save_npz(args.output, result)
    written = [str(path)]
    if args.parquet:
        written.append(str(save_parquet(path.with_suffix(".parquet"), result)))
    dim = result.embeddings.shape[1]
    log.info(
        "embedded %d tracks (%s, step %d, dim %d; %d input shapes compiled) -> %s",
        len(result.track_ids),
        args.mode,
        step,
        dim,
        len(embedder.shapes_compiled),
        ", ".join(written),
    )
    if result.skipped:
        log.info("skipped %d file(s):\n  %s", len(result.skipped), "\n  ".join(result.skipped))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command; returns its exit status. A missing workdir or input, a bad split or an
    unwritable --output is one `error:` line on stderr and status 1 (errors.run_cli)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.dataset and not args.data_dir:
        parser.error("--dataset needs --data-dir (where it was prepared)")
    if args.audio and args.splits:
        parser.error("--splits selects splits of a --dataset; --audio embeds every file given")
    names = [canonical_split(name.strip()) for name in (args.splits or "").split(",")]
    if args.splits and len(set(names)) < len(names):  # "valid,validation" too
        twice = sorted({name for name in names if names.count(name) > 1})
        parser.error(
            f"--splits names {', '.join(twice)} more than once: each track is embedded once"
        )
    if args.audio and args.data_dir:  # said, not ignored: the user may have meant --dataset
        parser.error("--data-dir is where a --dataset was prepared; --audio reads its own path")
    if problem := files.output_problem(args.output):
        parser.error(f"--output: {problem}")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    check_embedder_flags(parser, args)
    return errors.run_cli(
        lambda: _embed(args),
        (OSError, ValueError),
        interrupted=f"nothing was written to {args.output} (it is written whole at the end)",
    )


if __name__ == "__main__":
    sys.exit(main())

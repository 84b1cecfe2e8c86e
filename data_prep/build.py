"""Prepare a dataset for training, embedding and probing.

    python -m data_prep.build --dataset gtzan --source ~/data/gtzan --data-dir ~/tfds \
        --workers 8

Stage 1 decodes every track and computes its log-mel in --workers processes, caching each
result so a killed run resumes; stage 2 writes tfds array_record files to
<data-dir>/myna_<dataset>/<config>/1.0.0/, with skipped.tsv (path<TAB>reason) listing every
file that could not be used. Run with --help for the layout each dataset expects.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from myna_rpe_jax import errors, files
from myna_rpe_jax.data.audio import MelConfig
from myna_rpe_jax.data.datasets import DATASET_NAMES, LayoutError
from myna_rpe_jax.data.datasets.cache import UnexpectedDecodeError, usable_cores
from myna_rpe_jax.data.datasets.registry import DATASETS


def _layouts() -> str:
    return "\n\n".join(
        f"{name} (--split-mode {' | '.join(spec.split_modes)}):\n{spec.layout}"
        for name, spec in DATASETS.items()
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.build",
        description="Prepare a dataset (log-mel spectrograms + labels) as tfds array_record.",
        epilog="Expected source layouts:\n\n" + _layouts(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    parser.add_argument("--source", required=True, help="your copy of the dataset (see below)")
    parser.add_argument("--data-dir", required=True, help="where prepared datasets live")
    parser.add_argument(
        "--workers",
        type=int,
        default=usable_cores(),
        help="decoding processes (default: the cores this process may use)",
    )
    parser.add_argument("--split-mode", default=None, help="see the layouts below")
    parser.add_argument("--seed", type=int, default=0, help="seed of random splits")
    parser.add_argument(
        "--min-seconds", type=float, default=1.0, help="skip tracks shorter than this"
    )
    parser.add_argument("--keep-cache", action="store_true", help="keep the stage-1 cache")
    parser.add_argument("--overwrite", action="store_true", help="rebuild a prepared dataset")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    defaults = MelConfig()
    mel = parser.add_argument_group("log-mel features (defaults: Myna-RPE)")
    mel.add_argument("--sample-rate", type=int, default=defaults.sample_rate)
    mel.add_argument("--n-fft", type=int, default=defaults.n_fft)
    mel.add_argument("--win-length", type=int, default=defaults.win_length)
    mel.add_argument("--hop-length", type=int, default=defaults.hop_length)
    mel.add_argument("--n-mels", type=int, default=defaults.n_mels)
    return parser


def usage_problem(args: argparse.Namespace) -> str | None:
    """What makes these flags unusable, found before any work (exit 2), or None."""
    if args.workers < 1:
        return f"--workers must be >= 1, got {args.workers}"
    if not 0 <= args.min_seconds < float("inf"):  # also NaN
        return f"--min-seconds must be >= 0 seconds, got {args.min_seconds}"
    modes = DATASETS[args.dataset].split_modes
    if args.split_mode is not None and args.split_mode not in modes:
        return (
            f"--split-mode {args.split_mode!r} is not one of {args.dataset}'s: {', '.join(modes)}"
        )
    if problem := files.output_problem(args.data_dir, "folder"):
        return f"--data-dir: {problem}"
    return None


def _build(args: argparse.Namespace, mel: MelConfig) -> int:
    from myna_rpe_jax.data.datasets import prepare  # imports TensorFlow Datasets: after --help

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        summary = prepare(
            args.dataset,
            args.source,
            args.data_dir,
            workers=args.workers,
            split_mode=args.split_mode,
            seed=args.seed,
            mel=mel,
            min_seconds=args.min_seconds,
            keep_cache=args.keep_cache,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    for warning in caught:
        if str(warning.message) not in summary.notes:
            print(f"warning: {warning.message}", file=sys.stderr)
    print(summary.describe())
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command; returns its exit status: 2 for log-mel flags that make no MelConfig, a
    --source that is not the dataset's layout (LayoutError) and one with other tracks than
    the dataset already prepared in --data-dir (SourceMismatchError); 1 for anything else
    that stops a build (a --data-dir inside the source, an annotation file that is not
    UTF-8, a split a probe needs left empty, nothing decodable, a failure that is not a
    file's, a folder that cannot be written). Each is one `error:` line (errors.run_cli)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if problem := usage_problem(args):
        parser.error(problem)
    try:
        mel = MelConfig(
            sample_rate=args.sample_rate,
            n_fft=args.n_fft,
            win_length=args.win_length,
            hop_length=args.hop_length,
            n_mels=args.n_mels,
        )
    except ValueError as err:  # e.g. --win-length above --n-fft: a usage error (status 2)
        parser.error(str(err))
    expected = (LayoutError, ValueError, UnexpectedDecodeError, OSError)
    return errors.run_cli(lambda: _build(args, mel), expected)


if __name__ == "__main__":
    sys.exit(main())

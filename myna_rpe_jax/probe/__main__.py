"""Linear probes of a trained checkpoint: the command line (see `evaluate` for what it does).

    python -m myna_rpe_jax.probe --workdir=runs/alibi2d \
        --tasks gtzan,giantsteps_key,emomusic,mtg_jamendo --data-dir ~/tfds --output probes/alibi2d
    python -m myna_rpe_jax.probe --workdir=runs/tiny --tasks demo --output probes/tiny
    python -m myna_rpe_jax.probe --workdir=runs/tiny --tasks demo --output probes/tiny \
        --no-baselines   # the encoder's rows only (default: also random init and features)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from myna_rpe_jax import errors, files
from myna_rpe_jax.embed.collection import (
    add_embedder_flags,
    check_embedder_flags,
    console_logging,
    embedder_settings,
)
from myna_rpe_jax.embed.embedder import DEFAULT_MODES, MODES
from myna_rpe_jax.probe.evaluate import BASELINES, BENCHMARKS, PROBE_DATASETS, run
from myna_rpe_jax.probe.report import markdown, not_probed

log = logging.getLogger("myna_rpe_jax.probe")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m myna_rpe_jax.probe",
        description="Linear probes of a trained checkpoint (full tracks and chunks).",
    )
    parser.add_argument("--workdir", required=True, help="training workdir")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    parser.add_argument(
        "--tasks",
        default=",".join(BENCHMARKS),
        help=f"comma-separated datasets from {', '.join(PROBE_DATASETS)} (default: benchmarks)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="where the datasets were prepared (default: the run's data root; for demo, the"
        " run's demo set)",
    )
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument(
        "--modes",
        default=",".join(DEFAULT_MODES),
        help="comma-separated: full (whole tracks, one pass), chunks (Myna's chunk average),"
        " patchout (mean of masked passes over the whole track)",
    )
    parser.add_argument(
        "--length-scaling",
        choices=("on", "off"),
        default=None,
        help="log-length attention scaling past the training token count (default: the run's"
        " config.model.length_scaling)",
    )
    parser.add_argument(
        "--baselines",
        default=",".join(BASELINES),
        help="comma-separated rows beside the encoder's: random (the architecture at random"
        " init, one more embedding pass per mode), features (log-mel, MFCC and chroma"
        ' statistics); "" for none',
    )
    parser.add_argument(
        "--no-baselines", action="store_true", help="the encoder's rows only (--baselines '')"
    )
    add_embedder_flags(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _probe(args: argparse.Namespace, modes: list[str], kinds: list[str]) -> int:
    """Probes and writes the results; 1 when no task could be probed. Raises on a missing
    workdir or checkpoint, an unknown task."""
    console_logging()
    out = Path(args.output)
    results = run(
        args.workdir,
        [name for name in args.tasks.split(",") if name],
        args.output,
        args.data_dir,
        args.step,
        modes,
        progress=not args.no_progress,
        baseline_kinds=kinds,
        length_scaling=None if args.length_scaling is None else args.length_scaling == "on",
        **embedder_settings(args),
    )
    # What this run wrote, not the file: another probe into the same --output may replace it.
    log.info("\n%s", markdown(results))
    missing = not_probed(results)
    kept = not results["written"]  # nothing probed, and out had results.json: kept
    if not kept:
        log.info("wrote %s, %s, %s", out / "results.json", out / "results.md", out / "results.png")
    if len(missing) == len(results["tasks"]):
        where = "the build commands above" if kept else f"'Not probed' in {out}/results.md"
        log.error(
            "error: none of the tasks %s could be probed: %s (see %s)%s",
            ",".join(missing),
            "; ".join(entry["reason"] for entry in missing.values()),
            where,
            f"; {out} keeps its earlier results" if kept else "",
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command; returns its exit status. A missing workdir or checkpoint, an unknown task
    or an unwritable --output is one `error:` line on stderr and status 1 (errors.run_cli)."""
    parser = _parser()
    args = parser.parse_args(argv)
    tasks = [name for name in args.tasks.split(",") if name]
    if not tasks or any(name not in PROBE_DATASETS for name in tasks):
        parser.error(f"--tasks must list some of {', '.join(PROBE_DATASETS)}, got {args.tasks!r}")
    modes = [mode for mode in args.modes.split(",") if mode]
    if not modes or any(mode not in MODES for mode in modes):
        parser.error(f"--modes must list some of {MODES}, got {args.modes!r}")
    kinds = [] if args.no_baselines else [kind for kind in args.baselines.split(",") if kind]
    if any(kind not in BASELINES for kind in kinds):
        parser.error(f"--baselines must list some of {BASELINES} (or be ''), got {kinds}")
    if problem := files.output_problem(args.output, "folder"):
        parser.error(f"--output: {problem}")
    check_embedder_flags(parser, args)
    return errors.run_cli(
        lambda: _probe(args, modes, kinds),
        (OSError, ValueError),
        interrupted=f"the embeddings finished so far are cached in {args.output}/embeddings:"
        " rerun the same command to go on from them",
    )


if __name__ == "__main__":
    sys.exit(main())

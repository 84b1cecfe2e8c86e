"""Representation quality at a fixed budget: which recipe choices make the encoder better.

python benchmarks/quality.py [--steps 600] [--seeds 0,1] [--cells base,rope,...] [--small]

Every cell is configs/tiny.py on the default demo set (576 tracks of 6 s; probes on its 192
test tracks) with one choice changed, trained for the same steps and batch with the real
`loop.train`, then probed with the real `probe.evaluate.run` (linear probes: fit on train,
regularisation chosen on valid, test scored once):

- positional schemes: 2-D ALiBi (the base), 1-D ALiBi + learned frequency table, RoPE, 2-D
  sinusoidal, the learned absolute table;
- recipe: 10% patchout (the paper's; the base keeps 50%), 96-frame crops (the base: 256),
  variable-length crops (96 and 256, one bucket per step), SogCLR, + k-means, + convex hull.
  (Myna's vertical 128x2 patches and the hybrid do not fit this code: its patches are square.)

Every cell is probed as Myna does (`chunks`: the mean of training-length chunk embeddings)
and, where the scheme extrapolates, on whole tracks in one pass (`full`), with the options
aimed at the train-short / embed-long gap: log-length attention scaling (`+ls`,
`model.length_scaling`) and inference-time patchout (`patchout`: the mean of 8 masked passes).
Beside them: each scheme's architecture at its random initialisation (same seed) and the
hand-made features (log-mel, MFCC and chroma statistics). Scores are test scores in percent
(R² x 100), mean ± half the range over seeds. Writes OUT/results.{md,json,png}; a cell whose
results exist in OUT is reused, so an interrupted study resumes.
--small: two cells, a few steps on a small demo set (the test suite runs it).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging as std_logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import machine  # noqa: E402  benchmarks/machine.py
import ml_collections  # noqa: E402
from absl import logging  # noqa: E402

from configs import tiny  # noqa: E402
from myna_rpe_jax import files  # noqa: E402
from myna_rpe_jax.model import positional  # noqa: E402
from myna_rpe_jax.probe import evaluate  # noqa: E402
from myna_rpe_jax.train import loop  # noqa: E402

# cell -> (what it changes, config overrides as (dotted field, value)).
CELLS = {
    "base": ("2-D ALiBi, 50% patchout, 256-frame crops, InfoNCE", ()),
    "alibi1d+freq": (
        "1-D ALiBi + learned frequency table",
        (("model.posemb", ("alibi1d", "freq")),),
    ),
    "rope": ("RoPE (2-D)", (("model.posemb", ("rope",)),)),
    "sinusoidal": ("2-D sinusoidal table", (("model.posemb", ("sinusoidal",)),)),
    "learned": ("learned absolute table", (("model.posemb", ("learned",)),)),
    "keep10": ("10% patchout (the paper's)", (("model.patchout_keep", 0.1),)),
    "crop96": ("96-frame crops", (("data.chunk_frames", (96,)),)),
    "varlen": ("96- and 256-frame crops", (("data.chunk_frames", (96, 256)),)),
    "sogclr": ("SogCLR loss", (("loss.name", "sogclr"),)),
    "kmeans": ("+ k-means term (0.1)", (("loss.kmeans_weight", 0.1),)),
    "hull": ("+ convex-hull term (0.05)", (("loss.hull_weight", 0.05),)),
}
SCHEME_CELLS = ("base", "alibi1d+freq", "rope", "sinusoidal", "learned")
# The columns of the tables: (title, probe table column).
COLUMNS = (
    ("genre", "Demo genre Acc"),
    ("key", "Demo key Acc"),
    ("tags PR-AUC", "Demo tags PR-AUC"),
    ("arousal R²", "Demo arousal R²"),
)
WHOLE_MODES = ("full", "full+ls", "patchout", "patchout+ls")
RANDOM_ROW = "random init (chunks)"
FEATURE_ROWS = ("log-mel stats", "MFCC stats", "chroma")


def cell_config(cell: str, seed: int, args: argparse.Namespace) -> ml_collections.ConfigDict:
    config = tiny.get_config()
    config.seed, config.total_steps, config.eval_every = seed, args.steps, 0
    config.batch_size = args.batch_size
    config.log_every = max(1, args.steps // 10)
    config.checkpoint_every = args.steps
    config.data.update(demo_tracks=args.demo_tracks, demo_seconds=args.demo_seconds)
    config.data.data_dir = args.data_dir or ""
    # The study's base crop is the paper's 256 frames; configs/tiny.py took 96 from this study.
    config.data.chunk_frames = (256,)
    for field, value in CELLS[cell][1]:
        section, name = field.split(".")
        config[section][name] = value
    return config


def probe_cell(run_dir: Path, config, with_random: bool, with_features: bool) -> dict:
    """Probe table rows of one trained run: mode -> column -> score (percent), and baselines."""
    kinds = (("random",) if with_random else ()) + (("features",) if with_features else ())
    extrapolates = positional.extrapolates(config.model.posemb)
    modes = ("chunks", "full", "patchout") if extrapolates else ("chunks",)
    common = dict(progress=False, intervals=False, length_scaling=False)
    plain = evaluate.run(
        str(run_dir), ["demo"], run_dir / "probe", modes=modes, baseline_kinds=kinds, **common
    )
    rows = {}
    for label, scores in plain["table"].items():
        mode = label.rsplit("(", 1)[-1].rstrip(")")
        key = mode if label.startswith(plain["model"]) else label
        rows[key] = scores
    if extrapolates:
        common["length_scaling"] = True
        scaled = evaluate.run(
            str(run_dir), ["demo"], run_dir / "probe-ls", modes=("full", "patchout"), **common
        )
        for label, scores in scaled["table"].items():
            rows[label.rsplit("(", 1)[-1].rstrip(")") + "+ls"] = scores
    return rows


def run_cell(cell: str, seed: int, args: argparse.Namespace, first: bool) -> dict:
    """Trains and probes one (cell, seed), or reads its results from an earlier run."""
    config = cell_config(cell, seed, args)
    digest = hashlib.sha1(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()
    run_dir = Path(args.out) / f"{cell}-seed{seed}-{args.steps}steps-{digest[:10]}"
    done = run_dir / "cell.json"
    if done.exists():
        return json.loads(done.read_text())
    start = time.perf_counter()
    loop.train(config, str(run_dir))
    train_s = time.perf_counter() - start
    rows = probe_cell(run_dir, config, cell in SCHEME_CELLS, first)
    probe_s = time.perf_counter() - start - train_s
    result = {"cell": cell, "seed": seed, "train_s": train_s, "probe_s": probe_s, "rows": rows}
    done.write_text(json.dumps(result, indent=1))
    return result


def summary(values: list[float | None]) -> str:
    """mean ± half the range over seeds, in percent with one decimal."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean = statistics.mean(values)
    spread = (max(values) - min(values)) / 2
    return f"{mean:.1f}" + (f" ± {spread:.1f}" if len(values) > 1 else "")


def table(lines: list[tuple[str, list[dict]]]) -> str:
    """A markdown table: one row per (label, per-seed score dicts), one column per COLUMNS."""
    header = ["row", *(title for title, _ in COLUMNS)]
    out = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for label, seeds in lines:
        cells = [summary([seed.get(column) for seed in seeds]) for _, column in COLUMNS]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def recipe_rows(results: dict[str, list[dict]]) -> list[tuple[str, list[dict]]]:
    """Every cell's chunk-average row and its one-pass row, then the baselines."""
    lines = []
    for cell, seeds in results.items():
        lines.append((f"{cell}: {CELLS[cell][0]} (chunks)", [s["rows"]["chunks"] for s in seeds]))
        if "full" in seeds[0]["rows"]:
            lines.append((f"{cell} (full)", [s["rows"]["full"] for s in seeds]))
        if RANDOM_ROW in seeds[0]["rows"]:
            random_rows = [s["rows"][RANDOM_ROW] for s in seeds]
            lines.append((f"{cell} at random init (chunks)", random_rows))
    first = next(iter(results.values()))[0]["rows"]  # the first cell also probed the features
    lines += [(label, [first[label]]) for label in FEATURE_ROWS if label in first]
    return lines


def gap_rows(results: dict[str, list[dict]]) -> list[tuple[str, list[dict]]]:
    """For every cell that extrapolates: chunk average, then each whole-track mode."""
    lines = []
    for cell, seeds in results.items():
        if "full" not in seeds[0]["rows"]:
            continue
        for mode in ("chunks", *WHOLE_MODES):
            lines.append((f"{cell} {mode}", [s["rows"][mode] for s in seeds]))
    return lines


def genre_key_mean(seeds: list[dict], mode: str) -> float:
    """The mean over seeds of the mean of genre and key accuracy in `mode`."""
    columns = ("Demo genre Acc", "Demo key Acc")
    return statistics.mean(s["rows"][mode][column] for s in seeds for column in columns)


def one_pass_verdicts(results: dict[str, list[dict]]) -> list[str]:
    """Per extrapolating cell: the best whole-track mode against the chunk average (genre+key)."""
    verdicts = []
    for cell, seeds in results.items():
        if "full" not in seeds[0]["rows"]:
            continue
        score = functools.partial(genre_key_mean, seeds)
        best = max(WHOLE_MODES, key=score)
        verdicts.append(
            f"- {cell}: chunks {score('chunks'):.1f}, full {score('full'):.1f}, best one-pass"
            f" {best} {score(best):.1f} (mean of genre and key accuracy)"
        )
    return verdicts


def write_plot(path: Path, results: dict[str, list[dict]]) -> None:
    """Genre and key accuracy of every cell (chunks and full), seed spread as error bars,
    the hand-made features as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
    cells = list(results)
    for ax, (title, column) in zip(axes, COLUMNS[:2], strict=True):
        for offset, mode in ((-0.2, "chunks"), (0.2, "full")):
            means, errs, xs = [], [], []
            for i, cell in enumerate(cells):
                values = [s["rows"][mode][column] for s in results[cell] if mode in s["rows"]]
                if values:
                    xs.append(i + offset)
                    means.append(statistics.mean(values))
                    errs.append((max(values) - min(values)) / 2)
            ax.bar(xs, means, width=0.4, yerr=errs, label=mode, capsize=3)
        first = results[cells[0]][0]["rows"]
        for label, style in zip(FEATURE_ROWS[:2], ("--", ":"), strict=True):
            if label in first:
                ax.axhline(first[label][column], color="k", linestyle=style, label=label)
        randoms = [
            s["rows"][RANDOM_ROW][column] for s in results[cells[0]] if RANDOM_ROW in s["rows"]
        ]
        if randoms:
            label = f"{cells[0]} at random init"
            ax.axhline(statistics.mean(randoms), color="grey", linestyle="-.", label=label)
        ax.set_xticks(range(len(cells)), cells, rotation=45, ha="right")
        ax.set_title(f"demo {title} accuracy (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    parser.add_argument("--cells", default=",".join(CELLS), help=f"from {list(CELLS)}")
    parser.add_argument("--batch-size", type=int, default=tiny.get_config().batch_size)
    parser.add_argument("--demo-tracks", type=int, default=576)
    parser.add_argument("--demo-seconds", type=float, default=6.0)
    parser.add_argument("--data-dir", default=None, help="demo data root (default: the cache)")
    parser.add_argument("--out", default="runs/quality", help="output folder")
    parser.add_argument(
        "--small",
        action="store_true",
        help="seconds: two cells, 4 steps (in place of --steps, --seeds, --cells, --batch-size"
        " and the demo sizes)",
    )
    args = parser.parse_args(argv)
    if args.small:  # the sizes are --small's; the suite's demo set needs these
        args.steps, args.seeds, args.cells = 4, "0", "base,learned"
        # The test suite's demo set (tests/conftest.py), when --data-dir points at it.
        args.demo_tracks, args.demo_seconds, args.batch_size = 24, 4.0, 8
        args.out = args.out if args.out != "runs/quality" else "runs/quality-small"
    cells = [c for c in args.cells.split(",") if c]
    unknown = [c for c in cells if c not in CELLS]
    if unknown or not cells:
        parser.error(f"unknown cell(s) {unknown or args.cells!r}; choose from {list(CELLS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        parser.error(f"--seeds must list whole numbers >= 0, got {args.seeds!r}")
    if args.steps < 1 or args.batch_size < 2 or args.demo_tracks < 1 or args.demo_seconds <= 0:
        parser.error(
            "--steps, --demo-tracks and --demo-seconds must be positive, --batch-size >= 2"
        )
    if problem := files.output_problem(args.out, "folder"):  # before hours of training
        parser.error(f"--out: {problem}")
    logging.set_verbosity(logging.WARNING)
    std_logging.getLogger("myna_rpe_jax").setLevel(std_logging.WARNING)

    results: dict[str, list[dict]] = {}
    for cell in cells:
        for seed in seeds:
            print(f"[{cell}, seed {seed}] {CELLS[cell][0]}", flush=True)
            result = run_cell(cell, seed, args, first=not results)
            results.setdefault(cell, []).append(result)
            chunks = result["rows"]["chunks"]
            shown = ", ".join(f"{t} {chunks.get(c)}" for t, c in COLUMNS)
            print(f"  {result['train_s']:.0f} s train, {result['probe_s']:.0f} s probe;"
                  f" chunks: {shown}", flush=True)  # fmt: skip

    minutes = sum(r["train_s"] + r["probe_s"] for rs in results.values() for r in rs) / 60
    setup = (
        f"Machine: {machine.describe()}; jax {jax.__version__} on {jax.devices()[0].device_kind}."
        f"\nBudget per cell: configs/tiny.py (width 64, depth 2), {args.steps} steps of batch"
        f" {args.batch_size} on the demo set ({args.demo_tracks} tracks x"
        f" {args.demo_seconds:g} s); seeds {seeds}; {minutes:.1f} min in all. Test scores in"
        " percent (R² x 100), mean ± half the range over seeds."
    )
    report = "\n\n".join(
        [
            setup,
            "## Recipe choices\n\n" + table(recipe_rows(results)),
            "## One pass over the whole track vs the chunk average\n\n"
            + table(gap_rows(results))
            + "\n\n"
            + "\n".join(one_pass_verdicts(results)),
        ]
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("\n" + report)
    (out / "results.md").write_text(report + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}))
    write_plot(out / "results.png", results)
    print(f"\nwrote {out / 'results.md'}, {out / 'results.json'}, {out / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

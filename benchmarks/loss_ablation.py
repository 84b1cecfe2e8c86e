"""Loss ablation: the tiny model on the demo set, with and without each extra loss term.

python benchmarks/loss_ablation.py [--steps 200] [--seeds 0] [--out runs/loss_ablation] \
    [--variants infonce,kmeans,hull,kmeans_hull,sogclr] [--kmeans-weight 0.1] ...

Trains configs/tiny.py once per variant and seed (same data, steps and seed for every variant:
only config.loss differs), probes each final checkpoint on the demo set's tasks with
`myna_rpe_jax.probe` (whole-track embeddings; train split to fit, valid to choose the
regularisation, test reported), and prints a markdown table of the test scores side by side,
also written to OUT/results.md (OUT/results.json holds every number). A finished run is reused
when the script is rerun with the same settings (the run folder's name holds a hash of the
config). The default takes a few minutes on 2 CPU cores; for a more telling comparison use
e.g. --steps 1000 --seeds 0,1,2 --demo-tracks 384.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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
from myna_rpe_jax.probe import evaluate  # noqa: E402
from myna_rpe_jax.train import loop  # noqa: E402

# variant -> (contrastive loss, k-means term on, convex-hull term on)
VARIANTS = {
    "infonce": ("info_nce", False, False),
    "kmeans": ("info_nce", True, False),
    "hull": ("info_nce", False, True),
    "kmeans_hull": ("info_nce", True, True),
    "sogclr": ("sogclr", False, False),
    "sogclr_kmeans_hull": ("sogclr", True, True),
}
DEFAULT_VARIANTS = "infonce,kmeans,hull,kmeans_hull,sogclr"
TRAIN_COLUMNS = {"loss_kmeans": "train k-means", "loss_hull": "train hull"}


def variant_config(variant: str, seed: int, args: argparse.Namespace) -> ml_collections.ConfigDict:
    """configs/tiny.py with the variant's loss terms and the run's settings."""
    name, kmeans, hull = VARIANTS[variant]
    config = tiny.get_config()
    config.seed, config.eval_every = seed, 0  # probed once at the end, below
    config.loss.update(
        name=name,
        kmeans_weight=args.kmeans_weight if kmeans else 0.0,
        hull_weight=args.hull_weight if hull else 0.0,
        num_clusters=args.num_clusters,
    )
    config.data.update(demo_tracks=args.demo_tracks, data_dir=args.data_dir or "")
    config.batch_size = args.batch_size
    config.total_steps = args.steps
    config.log_every = max(1, args.steps // 10)  # the last summary averages the last 10%
    config.checkpoint_every = args.steps
    return config


def train_and_probe(config: ml_collections.ConfigDict, run_dir: Path) -> dict:
    """Trains (or reuses) one run, probes its final checkpoint; returns both summaries."""
    history_file = run_dir / "history.json"
    start = time.perf_counter()
    if history_file.exists():
        history = json.loads(history_file.read_text())
    else:
        history = loop.train(config, str(run_dir))
        history_file.write_text(json.dumps(history, indent=1))
    train_s = time.perf_counter() - start
    results = evaluate.run(
        str(run_dir), ["demo"], run_dir / "probe", modes=("full",), progress=False
    )
    scores = next(iter(results["table"].values()))
    probes = results["tasks"]["demo"]["modes"]["full"]["probes"]
    test_sizes = {p["num_examples"]["test"] for p in probes.values() if p["status"] == "ok"}
    return {
        "final_train": history[-1],
        "train_s": train_s,
        "probe": {title.removeprefix("Demo "): value for title, value in scores.items()},
        "test_tracks": max(test_sizes, default=0),
    }


def mean_std(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def markdown_table(runs: dict[str, list[dict]]) -> str:
    """One row per variant: mean (± std over seeds) of each probe's test score, in percent,
    then the final (unweighted) values of the extra train terms."""
    first = next(iter(runs.values()))[0]
    titles = list(first["probe"])
    header = ["variant", *titles, *TRAIN_COLUMNS.values()]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for variant, seeds in runs.items():
        cells = [mean_std([run["probe"][title] for run in seeds]) for title in titles]
        cells += [
            mean_std([run["final_train"].get(key) for run in seeds]).replace("–", "off")
            for key in TRAIN_COLUMNS
        ]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_setup(args: argparse.Namespace, runs: dict[str, list[dict]]) -> str:
    devices = jax.devices()
    first = next(iter(runs.values()))[0]
    minutes = sum(run["train_s"] for seeds in runs.values() for run in seeds) / 60
    return (
        f"Machine: {machine.describe()};"
        f" jax {jax.__version__} on {len(devices)} x {devices[0].device_kind}.\n"
        f"Model configs/tiny.py (ViT tiny: width 64, depth 2; 2-D ALiBi; 50% patchout);"
        f" {args.steps} steps of batch {args.batch_size}, 256-frame chunks, on the demo set"
        f" ({args.demo_tracks} tracks x {tiny.get_config().data.demo_seconds:g} s,"
        f" {first['test_tracks']} test tracks);"
        f" seeds {args.seeds}. Terms when on: k-means weight {args.kmeans_weight}, hull"
        f" weight {args.hull_weight}, {args.num_clusters} clusters; SogCLR gamma 0.9; all"
        f" temperature 0.1. Training took {minutes:.1f} min in all.\n"
        "Probe scores: test split, percent (R² x 100); regularisation chosen on valid."
        " Train terms: final unweighted value, averaged over the last 10% of steps."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument(
        "--variants", default=DEFAULT_VARIANTS, help=f"comma-separated from {list(VARIANTS)}"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--demo-tracks", type=int, default=96)
    parser.add_argument("--kmeans-weight", type=float, default=0.1)
    parser.add_argument("--hull-weight", type=float, default=0.05)
    parser.add_argument("--num-clusters", type=int, default=10)
    parser.add_argument("--data-dir", default=None, help="demo data root (default: the cache)")
    parser.add_argument("--out", default="runs/loss_ablation", help="output folder")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    logging.set_verbosity(logging.WARNING)  # keep the console to the per-run lines below

    out = Path(args.out)
    runs: dict[str, list[dict]] = {}
    for variant in variants:
        for seed in seeds:
            config = variant_config(variant, seed, args)
            # Every setting is in the name (through the config's hash): a run is reused only
            # when it was made with exactly this config.
            digest = hashlib.sha1(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()
            tag = f"{variant}-seed{seed}-{args.steps}steps-{digest[:10]}"
            print(f"[{variant}, seed {seed}] training + probing in {out / tag}", flush=True)
            run = train_and_probe(config, out / tag)
            runs.setdefault(variant, []).append(run)
            shown = ", ".join(f"{k} {v}" for k, v in run["probe"].items())
            print(f"  {run['train_s']:.0f} s training; test: {shown}", flush=True)

    report = f"{describe_setup(args, runs)}\n\n{markdown_table(runs)}\n"
    print("\n" + report)
    (out / "results.md").write_text(report, encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    print(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

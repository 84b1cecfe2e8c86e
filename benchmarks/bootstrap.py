"""Times the probe's bootstrap intervals: vectorised over resamples vs scoring each copy.

Generated probe outputs shaped like the benchmarks' test splits: MTG-Jamendo-like tags (N
tracks x 50 tags, scores with ties), GiantSteps-like keys (accuracy + MIREX) and
EmoMusic-like regression (R^2). For each, the intervals of `probe.bootstrap` (1,000
resamples by default, as `probe` reports them) beside the per-resample loop it replaced:
every resampled copy of the arrays scored by `metrics.scorer`, timed on --loop-resamples of
the same resamples and scaled to the full count. The largest difference between the two
scores over those resamples is printed too (float rounding only).

    python benchmarks/bootstrap.py                       # MTG-sized: 11,000 x 50 tags
    python benchmarks/bootstrap.py --small               # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import time

import machine  # noqa: E402  benchmarks/machine.py
import numpy as np

from myna_rpe_jax.probe import bootstrap, metrics


def _outputs(kind: str, n: int, rng) -> tuple[list[str], np.ndarray, np.ndarray]:
    if kind == "tags":
        y_true = (rng.random((n, 50)) < np.linspace(0.01, 0.3, 50)).astype(np.float32)
        return ["roc_auc", "pr_auc"], y_true, np.round(y_true + rng.normal(size=(n, 50)), 2)
    if kind == "keys":
        y_true = rng.integers(0, 24, n)
        return ["accuracy", "mirex"], y_true, np.where(rng.random(n) < 0.6, y_true, 0)
    y_true = rng.normal(size=n)
    return ["r2"], y_true, 0.7 * y_true + rng.normal(0, 0.7, n)


def row(kind: str, n: int, resamples: int, loop_resamples: int) -> str:
    rng = np.random.default_rng(0)
    names, y_true, y_pred = _outputs(kind, n, rng)
    start = time.perf_counter()
    bootstrap.bootstrap_intervals(names, y_true, y_pred, num_resamples=resamples)
    vectorised = time.perf_counter() - start
    counts = bootstrap.resample_counts(rng, loop_resamples, n)
    weighted = bootstrap.resampled_scores(names, y_true, y_pred, counts)
    score = metrics.scorer(names)
    start = time.perf_counter()
    plain = []
    for b in range(loop_resamples):
        picked = np.repeat(np.arange(n), counts[b])
        plain.append(score(y_true[picked], y_pred[picked]))
    loop = (time.perf_counter() - start) * resamples / loop_resamples
    diff = max(abs(weighted[m][b] - plain[b][m]) for m in names for b in range(loop_resamples))
    shape = f"{n} x 50" if kind == "tags" else str(n)
    return (
        f"| {kind} ({', '.join(names)}) | {shape} | {vectorised:.2f} | {loop:.2f} |"
        f" {loop / vectorised:.0f}x | {diff:.1e} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    n = machine.at_least(2)  # a resample of one example has no spread
    parser.add_argument("--tags-n", type=n, default=11000, help="MTG-Jamendo test tracks")
    parser.add_argument("--keys-n", type=n, default=236, help="GiantSteps test tracks")
    parser.add_argument("--r2-n", type=n, default=125, help="EmoMusic test clips")
    parser.add_argument("--resamples", type=machine.at_least(1), default=1000)
    loop = machine.at_least(1)
    parser.add_argument("--loop-resamples", type=loop, default=50, help="timed, then scaled")
    parser.add_argument("--small", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args(argv)
    if args.small:
        args.tags_n, args.resamples, args.loop_resamples = 300, 40, 5
    print(f"machine: {machine.describe()}")
    print(
        f"\n{args.resamples} resamples; the loop timed on {args.loop_resamples} and scaled;"
        " diff: largest |vectorised - loop| score over those resamples"
    )
    header = ("scores", "test set", "vectorised s", "loop s", "speed-up", "diff")
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for kind, n in (("tags", args.tags_n), ("keys", args.keys_n), ("r2", args.r2_n)):
        print(row(kind, n, args.resamples, args.loop_resamples), flush=True)


if __name__ == "__main__":
    main()

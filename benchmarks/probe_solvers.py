"""Times the JAX probe solvers against scikit-learn over one regularisation sweep.

Generated data shaped like a probe (N train / test examples of D-dim standardised features):
multiclass logistic regression with 10 classes (GTZAN-like) and 24 (GiantSteps-like), ridge
with 2 targets (EmoMusic-like) and 50-label multi-label logistic regression (MTG-Jamendo-like).
Each solver fits the same sweep of regularisation values; scikit-learn uses the matching
parametrisation (LogisticRegression(C=1 / (l2 * N)), Ridge(alpha)) and the same gradient
tolerance. Reported: wall time of the whole sweep (compiled), JAX compile time (first call
minus a compiled call), the best test score over the sweep, and the largest relative gap
between the two solvers' objective values (positive: ours is higher).

    python benchmarks/probe_solvers.py                 # full sizes (a minute or two on CPU)
    python benchmarks/probe_solvers.py --n-train 300 --num-values 3 --tasks ridge
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import jax
import machine  # noqa: E402  benchmarks/machine.py
import numpy as np
import threadpoolctl
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression, Ridge

from myna_rpe_jax.probe import metrics as probe_metrics
from myna_rpe_jax.probe import solvers

TASKS = ("multiclass10", "multiclass24", "ridge", "multilabel50")


def _make_task(task: str, n: int, dim: int, seed: int):
    """Returns x [n, D] float64 (standardised later with train statistics) and targets."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    if task.startswith("multiclass"):
        classes = int(task.removeprefix("multiclass"))
        logits = x @ rng.standard_normal((dim, classes)) / np.sqrt(dim) * 3
        return x, (logits + rng.gumbel(size=logits.shape)).argmax(axis=1)
    if task == "ridge":
        return x, x @ rng.standard_normal((dim, 2)) / np.sqrt(dim) + rng.standard_normal((n, 2))
    labels = 50
    logits = x @ rng.standard_normal((dim, labels)) / np.sqrt(dim) * 2
    logits = logits + rng.logistic(size=logits.shape)
    prevalence = rng.uniform(0.03, 0.3, labels)
    offsets = [np.quantile(logits[:, c], 1 - prevalence[c]) for c in range(labels)]
    return x, (logits > np.array(offsets)).astype(np.int32)


def _timed(fn: Callable[[], object], repeats: int) -> tuple[object, float, float]:
    """(result, first-call seconds, best of `repeats` later calls)."""
    start = time.perf_counter()
    result = jax.block_until_ready(fn())
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return result, first, best


def _softmax_objective(w, b, x, y, l2):
    z = x @ w + b
    return np.mean(logsumexp(z, axis=1) - z[np.arange(len(y)), y]) + 0.5 * l2 * np.sum(w**2)


def _sigmoid_objective(w, b, x, y, l2):
    z = x @ w + b
    return np.mean(np.sum(np.logaddexp(0, z) - y * z, axis=1)) + 0.5 * l2 * np.sum(w**2)


def _ridge_objective(w, b, x, y, alpha):
    return np.sum((y - x @ w - b) ** 2) + alpha * np.sum(w**2)


_SKLEARN_MAX_ITER = 10_000


def _sklearn_logistic(x, y, l2, tol):
    model = LogisticRegression(C=1.0 / (l2 * len(x)), tol=tol, max_iter=_SKLEARN_MAX_ITER)
    return model.fit(x, y)


def _run_sklearn(task, x, y, values, tol):
    """Sweep with scikit-learn: w [L, D, C], b [L, C], L-BFGS steps [L], stalled [L], hit
    max_iter [L] (scikit-learn stops silently on small progress, so stalled is all False)."""
    ws, bs, steps = [], [], []
    for value in values:
        if task == "ridge":
            models = [Ridge(alpha=value).fit(x, y)]
        elif task == "multilabel50":
            models = [_sklearn_logistic(x, y[:, c], value, tol) for c in range(y.shape[1])]
        else:
            models = [_sklearn_logistic(x, y, value, tol)]
        ws.append(np.concatenate([m.coef_.T for m in models], axis=1))
        bs.append(np.concatenate([np.atleast_1d(m.intercept_) for m in models]))
        # Ridge has no iterations; for one-vs-rest count the slowest label.
        steps.append(max(int(np.max(getattr(m, "n_iter_", None) or 0)) for m in models))
    steps = np.array(steps)
    return np.stack(ws), np.stack(bs), steps, np.zeros(len(steps), bool), steps >= _SKLEARN_MAX_ITER


def _run_jax(task, x, y, values, tol):
    """Sweep with our solvers: w [L, D, C], b [L, C], L-BFGS steps [L], stalled [L] (at the
    float precision floor above tol), hit max_iter [L]."""
    if task == "ridge":
        w, b = solvers.ridge_regression_path(x, y, values)
        no = np.zeros(len(values), bool)
        return w, b, np.zeros(len(values), int), no, no
    if task == "multilabel50":
        fit = solvers.multilabel_logistic_regression_path(x, y, values, tol=tol, return_info=True)
    else:
        fit = solvers.logistic_regression_path(x, y, values, tol=tol, return_info=True)
    w, b, info = fit
    stalled, converged = np.asarray(info["stalled"]), np.asarray(info["converged"])
    return w, b, np.asarray(info["num_iter"]), stalled, ~(stalled | converged)


def _score(task, w, b, x_test, y_test) -> float:
    pred = np.asarray(x_test @ w + b)
    if task == "ridge":
        return float(np.mean(probe_metrics.r2_per_target(y_test, pred)))
    if task == "multilabel50":
        return probe_metrics.multilabel_scores(y_test, pred).roc_auc
    return probe_metrics.accuracy(y_test, pred.argmax(axis=1))


def _objective(task, w, b, x, y, value) -> float:
    fn = {"ridge": _ridge_objective, "multilabel50": _sigmoid_objective}.get(
        task, _softmax_objective
    )
    return float(fn(np.asarray(w, np.float64), np.asarray(b, np.float64), x, y, value))


def benchmark(task: str, args) -> list[tuple]:
    x, y = _make_task(task, args.n_train + args.n_test, args.dim, args.seed)
    train, test = slice(0, args.n_train), slice(args.n_train, None)
    # The probe's protocol: statistics from train only, applied to every split.
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    x64 = (x - mean) / std  # float64 for scikit-learn and the objective comparison
    dtype = np.float64 if args.x64 else np.float32
    x_train, x_test, y_train, y_test = x64[train].astype(dtype), x64[test], y[train], y[test]
    if task.startswith("multiclass") and len(np.unique(y_train)) < len(np.unique(y)):
        raise SystemExit(
            f"error: {task}: {len(np.unique(y)) - len(np.unique(y_train))} classes have no"
            f" training example among --n-train {args.n_train}; use more (e.g. 10 per class)"
        )
    bounds = (-1, 4) if task == "ridge" else (-5, 0)
    values = np.logspace(*bounds, args.num_values)

    ours, first, steady = _timed(
        lambda: _run_jax(task, x_train, y_train, values, args.tol), args.repeats
    )
    with threadpoolctl.threadpool_limits(args.sklearn_threads):
        start = time.perf_counter()
        theirs = _run_sklearn(task, x64[train], y_train, values, args.tol)
        sk_time = time.perf_counter() - start

    rows, objectives = [], []
    for name, (w, b, steps, stalled, hit_max_iter), seconds, compile_s in (
        ("jax", ours, steady, first - steady),
        ("sklearn", theirs, sk_time, 0.0),
    ):
        best = max(_score(task, w[i], b[i], x_test, y_test) for i in range(len(values)))
        objectives.append(
            np.array(
                [_objective(task, w[i], b[i], x64[train], y_train, v) for i, v in enumerate(values)]
            )
        )
        gap = np.max((objectives[-1] - objectives[0]) / np.abs(objectives[0]))
        rows.append(
            (
                task,
                name,
                seconds,
                compile_s,
                steps.sum(),
                stalled.sum(),
                hit_max_iter.sum(),
                best,
                gap,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> list[tuple]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # A fit needs every class in train (checked per task), a score a few test examples.
    parser.add_argument("--n-train", type=machine.at_least(2), default=1500)
    parser.add_argument("--n-test", type=machine.at_least(2), default=500)
    parser.add_argument("--dim", type=machine.at_least(1), default=384)
    nums = machine.at_least(1)
    parser.add_argument("--num-values", type=nums, default=8, help="regularisation values")
    tol = machine.at_least(1e-12, float)
    parser.add_argument("--tol", type=tol, default=1e-6, help="max |gradient| tolerance")
    parser.add_argument("--repeats", type=nums, default=2, help="compiled timing repeats")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--x64", action="store_true", help="run the JAX solvers in float64")
    parser.add_argument(
        "--sklearn-threads",
        type=int,
        default=None,
        help="BLAS/OpenMP threads for scikit-learn (default: its own; 1 avoids oversubscription "
        "on a busy machine)",
    )
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    args = parser.parse_args(argv)

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    device = jax.devices()[0]
    print(f"machine: {machine.describe()}; jax {jax.__version__} on {device}")
    print(
        f"N train {args.n_train}, N test {args.n_test}, D {args.dim}, "
        f"{args.num_values} values, tol {args.tol}, x64 {args.x64}, "
        f"sklearn threads {args.sklearn_threads or 'default'}"
    )
    columns = ("task", "solver", "sweep s", "compile s", "steps", "stall", "max_it", "best test")
    header = "{:<13} {:<8} {:>8} {:>9} {:>6} {:>5} {:>6} {:>9} {:>9}".format(*columns, "obj gap")
    print(header)
    print("-" * len(header))
    rows = []
    for task in args.tasks:
        for row in benchmark(task, args):
            rows.append(row)
            print("{:<13} {:<8} {:>8.3f} {:>9.2f} {:>6} {:>5} {:>6} {:>9.4f} {:>9.1e}".format(*row))
    print(
        "steps: L-BFGS steps summed over the sweep (sklearn one-vs-rest: slowest label per value);"
        " stall: fits stopped at the float precision floor above tol; max_it: fits that hit"
        " max_iter;\n"
        "obj gap: max over the sweep of (objective - jax objective) / |jax objective|, float64"
        " (positive: worse than jax)"
    )
    return rows


if __name__ == "__main__":
    main()

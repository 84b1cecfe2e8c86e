"""Linear probes of frozen embeddings: fit on train, choose regularisation on valid, score test.

The protocol fixes the flaws of public probe code (docs/design.md): features are
standardised with train statistics only, regression targets z-scored with train statistics,
and the regularisation strength is the grid point with the best *validation* score (ties go to
the stronger regularisation); test is scored once, with that strength.

One relative grid serves every task: for logistic probes it is the l2 of the per-sample mean
objective (mean loss + l2/2 ||w||^2); for ridge (whose objective is a sum over samples) alpha
= grid value * N_train, so per sample mean squared error + value ||w||^2 (twice the logistic
weight of the same value: a third of a decade, inside one grid step). Solvers are
deterministic (L-BFGS from zeros, closed-form ridge).
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from myna_rpe_jax.data.datasets import TaskSpec
from myna_rpe_jax.data.keys import KEY_NAMES
from myna_rpe_jax.probe import metrics as probe_metrics
from myna_rpe_jax.probe import solvers

REG_GRID = tuple(10.0**k for k in range(-5, 3))  # 1e-5 .. 1e2, one per decade
# The score each kind of task is selected on, and the metrics reported on test.
SELECTION_METRIC = {"multiclass": "accuracy", "regression": "r2", "multilabel": "roc_auc"}

Data = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (features [N, D], labels)


def task_metrics(spec: TaskSpec) -> tuple[str, ...]:
    """The test metrics a task reports (the keys of run_probe's "metrics" that are scores):
    a multiclass task over the 24 keys adds the MIREX weighted score to accuracy."""
    if spec.kind == "multiclass":
        return ("accuracy", "mirex") if spec.class_names == KEY_NAMES else ("accuracy",)
    return ("r2",) if spec.kind == "regression" else ("roc_auc", "pr_auc")


def _select(valid_scores: np.ndarray, grid: np.ndarray, metric: str) -> int:
    """Index of the best validation score; among ties, the strongest regularisation. A NaN
    score (e.g. R² of a fit that diverged) is never the best; all NaN is a ValueError."""
    finite = np.isfinite(valid_scores)
    if not finite.any():
        raise ValueError(
            f"the valid {metric} is NaN or infinite at every regularisation strength"
            f" ({', '.join(f'{v:g}' for v in valid_scores)}), so none can be chosen"
        )
    best = np.flatnonzero(finite & (valid_scores >= np.max(valid_scores[finite]) - 1e-12))
    return int(best[np.argmax(grid[best])])


def _multiclass(spec: TaskSpec, data: Data, grid: np.ndarray):
    (x, y), (xv, yv), (xt, yt) = data["train"], data["valid"], data["test"]
    w, b = solvers.logistic_regression_path(
        x, np.asarray(y, np.int32), grid, num_classes=spec.num_outputs
    )
    valid_pred = np.asarray(jnp.argmax(jnp.einsum("nd,ldc->lnc", xv, w) + b[:, None], -1))
    valid = np.array([probe_metrics.accuracy(yv, p) for p in valid_pred])

    def test(i: int) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
        pred = np.asarray(jnp.argmax(solvers.predict_logits(w[i], b[i], xt), -1))
        metrics = {"accuracy": probe_metrics.accuracy(yt, pred)}
        if "mirex" in task_metrics(spec):
            metrics["mirex"] = probe_metrics.mirex_key_score(yt, pred)
        return metrics, (np.asarray(yt), pred)

    return valid, test


def _regression(spec: TaskSpec, data: Data, grid: np.ndarray):
    (x, y), (xv, yv), (xt, yt) = data["train"], data["valid"], data["test"]
    # Targets z-scored with train statistics (R^2 itself is unchanged by the same affine map).
    mean, std = float(np.mean(y)), float(np.std(y)) or 1.0
    z = lambda t: (np.asarray(t, np.float64) - mean) / std
    w, b = solvers.ridge_regression_path(x, z(y), grid * len(x))
    valid_pred = np.asarray(jnp.einsum("nd,ld->ln", xv, w) + b[:, None])
    valid = np.array([probe_metrics.r2_per_target(z(yv), p)[0] for p in valid_pred])

    def test(i: int) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
        pred = np.asarray(xt @ w[i] + b[i])
        return {"r2": float(probe_metrics.r2_per_target(z(yt), pred)[0])}, (z(yt), pred)

    return valid, test


def _multilabel(spec: TaskSpec, data: Data, grid: np.ndarray):
    (x, y), (xv, yv), (xt, yt) = data["train"], data["valid"], data["test"]
    w, b = solvers.multilabel_logistic_regression_path(x, y, grid)
    valid_scores = np.asarray(jnp.einsum("nd,ldc->lnc", xv, w) + b[:, None])
    valid = np.array([probe_metrics.multilabel_scores(yv, s).roc_auc for s in valid_scores])

    def test(i: int) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
        logits = np.asarray(solvers.predict_logits(w[i], b[i], xt))
        scores = probe_metrics.multilabel_scores(yt, logits)
        return {
            "roc_auc": scores.roc_auc,
            "pr_auc": scores.pr_auc,
            "num_labels_scored": scores.num_labels_scored,
            "skipped_labels": list(scores.skipped_labels),
        }, (np.asarray(yt), logits)

    return valid, test


_PROBES: dict[str, Callable] = {
    "multiclass": _multiclass,
    "regression": _regression,
    "multilabel": _multilabel,
}


def nonfinite_problem(features: dict[str, np.ndarray]) -> str | None:
    """Which split's embeddings [N, D] hold NaN or inf, as a message; None if none do. Check
    before `standardize`, which would spread one bad row of train over every split."""
    for split, x in features.items():
        if bad := int((~np.isfinite(x)).any(axis=1).sum()):
            return (
                f"{bad} of the {len(x)} {split} embeddings hold NaN or inf (a checkpoint whose"
                " training diverged gives this): probe an earlier step (--step)"
            )
    return None


def standardize(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every split standardised with the mean and std of features["train"] [N, D]."""
    mean, std = solvers.standardize_fit(features["train"])
    return {
        split: np.asarray(solvers.standardize_apply(x, mean, std)) for split, x in features.items()
    }


def run_probe(spec: TaskSpec, data: Data, grid=REG_GRID) -> dict:
    """Fits a linear probe for one task on data["train"], selects on "valid", scores "test".

    data: split -> (standardised features [N, D], labels [N] or [N, C]).
    Returns {"kind", "metrics" (test), "selection": {"metric", "param" ("l2" or "alpha"),
    "grid" (its values), "valid_scores", "chosen"}, "num_examples", "test_outputs"}, where
    test_outputs = (y_true, predictions) are the test arrays the metrics were computed from
    (z-scored targets for regression, logits for multilabel), e.g. for a bootstrap.
    """
    missing = [split for split in ("train", "valid", "test") if split not in data]
    if missing:
        raise ValueError(f"a probe needs train, valid and test splits; missing {missing}")
    if problem := nonfinite_problem({split: x for split, (x, _) in data.items()}):
        raise ValueError(problem)
    grid = np.asarray(grid, np.float64)
    valid, test = _PROBES[spec.kind](spec, data, grid)
    chosen = _select(valid, grid, SELECTION_METRIC[spec.kind])
    param = "alpha" if spec.kind == "regression" else "l2"
    scale = len(data["train"][0]) if spec.kind == "regression" else 1
    metrics, test_outputs = test(chosen)
    return {
        "kind": spec.kind,
        "metrics": metrics,
        "selection": {
            "metric": f"valid {SELECTION_METRIC[spec.kind]}",
            "param": param,
            "grid": [float(g * scale) for g in grid],
            "valid_scores": [float(v) for v in valid],
            "chosen": float(grid[chosen] * scale),
        },
        "num_examples": {split: len(x) for split, (x, _) in data.items()},
        "test_outputs": test_outputs,
    }

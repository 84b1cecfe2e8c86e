"""Probe metrics in numpy: accuracy, MIREX key score, R^2, macro ROC-AUC and PR-AUC.

Definitions follow scikit-learn (accuracy_score, r2_score, roc_auc_score,
average_precision_score) so numbers are comparable with published probes; they are written
here so that the probe does not depend on scikit-learn at run time and so that labels which
cannot be scored (no positives or no negatives in the test split) are skipped and counted
instead of raising.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from myna_rpe_jax.data import keys


def _pair(y_true, y_pred, name: str) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(
            f"{name}: y_true {y_true.shape} and predictions {y_pred.shape} must have the same "
            "non-empty shape"
        )
    return y_true, y_pred


def accuracy(y_true, y_pred) -> float:
    """Fraction of exact matches; y_true, y_pred: [N] class indices."""
    y_true, y_pred = _pair(y_true, y_pred, "accuracy")
    return float(np.mean(y_true == y_pred))


def mirex_key_score(y_true, y_pred) -> float:
    """Mean MIREX weighted key score (1 same, 0.5 fifth above, 0.3 relative, 0.2 parallel).

    y_true, y_pred: [N] key indices as in `myna_rpe_jax.data.keys` (pitch class + 12 * minor).
    """
    y_true, y_pred = _pair(y_true, y_pred, "mirex_key_score")
    return keys.mirex_score(y_true, y_pred)


def r2_per_target(y_true, y_pred) -> np.ndarray:
    """Coefficient of determination 1 - SS_res / SS_tot for each target.

    y_true, y_pred: [N, T] (or [N], treated as T = 1). Returns [T]. A constant target scores
    1.0 if predicted exactly and 0.0 otherwise, as scikit-learn's r2_score does.
    """
    y_true, y_pred = _pair(y_true, y_pred, "r2_per_target")
    y_true = y_true.reshape(len(y_true), -1).astype(np.float64)
    y_pred = y_pred.reshape(len(y_pred), -1).astype(np.float64)
    ss_res = np.sum((y_true - y_pred) ** 2, axis=0)
    ss_tot = np.sum((y_true - y_true.mean(axis=0)) ** 2, axis=0)
    constant = ss_tot == 0
    r2 = 1.0 - ss_res / np.where(constant, 1.0, ss_tot)
    return np.where(constant, np.where(ss_res == 0, 1.0, 0.0), r2)


def _binary_inputs(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y_true, scores = _pair(y_true, scores, "binary ranking metric")
    if y_true.ndim != 1 or not np.all((y_true == 0) | (y_true == 1)):
        raise ValueError("y_true must be a [N] vector of 0/1 labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf: check the probe's predictions")
    if y_true.all() or not y_true.any():
        raise ValueError("y_true needs both positives and negatives to score a ranking")
    return y_true.astype(bool), scores.astype(np.float64)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of values: [N], tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts_group = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = ((starts + 1 + ends) / 2)[np.cumsum(starts_group) - 1]
    return ranks


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve: the probability that a random positive outscores a random
    negative, ties counting one half (Mann-Whitney U / (P * N)). y_true, scores: [N]."""
    y_true, scores = _binary_inputs(y_true, scores)
    num_pos, num_neg = int(y_true.sum()), int((~y_true).sum())
    rank_sum = _average_ranks(scores)[y_true].sum()
    return float((rank_sum - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


def average_precision(y_true, scores) -> float:
    """Step-wise area under the precision-recall curve, sum_k (R_k - R_{k-1}) P_k, with one
    threshold per distinct score (tied scores enter together). y_true, scores: [N]."""
    y_true, scores = _binary_inputs(y_true, scores)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, hits = scores[order], y_true[order]
    # The last index of each run of equal scores is where a threshold takes effect.
    last_of_group = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    true_pos = np.cumsum(hits)[last_of_group]
    predicted_pos = np.flatnonzero(last_of_group) + 1
    precision = true_pos / predicted_pos
    recall = true_pos / true_pos[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


@dataclasses.dataclass(frozen=True)
class MultilabelScores:
    """Macro averages over the labels that have positives and negatives in the test set."""

    roc_auc: float
    pr_auc: float
    num_labels_scored: int
    skipped_labels: tuple[int, ...]  # label indices with no positives or no negatives


def multilabel_scores(y_true, scores) -> MultilabelScores:
    """Macro ROC-AUC and PR-AUC (average precision) over labels.

    y_true: [N, C] 0/1, scores: [N, C] (logits or probabilities; only their order matters).
    Labels whose test column is all 0 or all 1 have no defined ROC-AUC: they are skipped and
    listed in `skipped_labels`. Raises ValueError if no label can be scored.
    """
    y_true, scores = _pair(y_true, scores, "multilabel_scores")
    if y_true.ndim != 2:
        raise ValueError(f"multilabel_scores expects [N, C] arrays, got shape {y_true.shape}")
    positives = (y_true == 1).sum(axis=0)
    scorable = (positives > 0) & (positives < len(y_true))
    if not scorable.any():
        raise ValueError("no label has both positives and negatives in this split")
    used = np.flatnonzero(scorable)
    return MultilabelScores(
        roc_auc=float(np.mean([roc_auc(y_true[:, c], scores[:, c]) for c in used])),
        pr_auc=float(np.mean([average_precision(y_true[:, c], scores[:, c]) for c in used])),
        num_labels_scored=len(used),
        skipped_labels=tuple(int(c) for c in np.flatnonzero(~scorable)),
    )


_CLASS_METRICS = {"accuracy": accuracy, "mirex": mirex_key_score}
METRIC_NAMES = (*_CLASS_METRICS, "r2", "roc_auc", "pr_auc")  # the reported test scores


def scorer(names: Sequence[str]) -> Callable[[np.ndarray, np.ndarray], dict[str, float]]:
    """The function (y_true, predictions) -> {name: score} of the reported test metrics
    `names` (keys of run_probe's "metrics"): class indices [N] (accuracy, mirex), targets [N]
    (r2), 0/1 labels and scores [N, C] (roc_auc, pr_auc, both from one `multilabel_scores`).
    """
    names = tuple(names)
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"no test score is defined for metric(s) {unknown}")

    def score(y_true, y_pred) -> dict[str, float]:
        out = {n: _CLASS_METRICS[n](y_true, y_pred) for n in names if n in _CLASS_METRICS}
        if "r2" in names:
            out["r2"] = float(r2_per_target(y_true, y_pred)[0])
        if "roc_auc" in names or "pr_auc" in names:
            ranked = multilabel_scores(y_true, y_pred)
            out.update({n: getattr(ranked, n) for n in ("roc_auc", "pr_auc") if n in names})
        return {n: out[n] for n in names}

    return score

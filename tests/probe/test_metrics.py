"""Probe metrics against scikit-learn, hand-worked MIREX scores and mir_eval's definition."""

import numpy as np
import pytest
from sklearn import metrics as skm

from myna_rpe_jax.data import keys
from myna_rpe_jax.probe import metrics as probe_metrics


def _key(name: str) -> int:
    return keys.KEY_NAMES.index(name)


def test_accuracy_matches_sklearn():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    assert probe_metrics.accuracy(y_true, y_pred) == pytest.approx(
        skm.accuracy_score(y_true, y_pred)
    )


def test_mirex_hand_worked_four_items():
    # exact, fifth above, relative minor, parallel minor -> (1 + 0.5 + 0.3 + 0.2) / 4
    reference = [_key("C major")] * 4
    estimate = [_key("C major"), _key("G major"), _key("A minor"), _key("C minor")]
    assert probe_metrics.mirex_key_score(reference, estimate) == pytest.approx(2.0 / 4)


@pytest.mark.parametrize(
    ("reference", "estimate", "expected"),
    [
        # Values from mir_eval.key.weighted_score's documentation (default settings):
        # the fifth must be *above* the reference, in the same mode.
        ("A minor", "E minor", 0.5),
        ("C major", "F major", 0.0),  # a fifth below: no credit unless descending allowed
        ("A minor", "C major", 0.3),  # relative major of a minor reference
        ("Eb minor", "Eb major", 0.2),
        ("C major", "D major", 0.0),
        ("C major", "G minor", 0.0),  # a fifth in a different mode earns nothing
        ("Bb major", "Bb major", 1.0),
    ],
)
def test_mirex_matches_mir_eval_definition(reference, estimate, expected):
    assert probe_metrics.mirex_key_score([_key(reference)], [_key(estimate)]) == expected


def test_r2_matches_sklearn_per_target():
    rng = np.random.default_rng(1)
    y_true = rng.standard_normal((50, 3))
    y_pred = y_true + 0.7 * rng.standard_normal((50, 3))
    expected = skm.r2_score(y_true, y_pred, multioutput="raw_values")
    np.testing.assert_allclose(probe_metrics.r2_per_target(y_true, y_pred), expected)
    np.testing.assert_allclose(
        probe_metrics.r2_per_target(y_true[:, 0], y_pred[:, 0]), expected[:1]
    )


def test_r2_constant_target_follows_sklearn():
    y_true = np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
    y_pred = np.array([[1.0, 2.0], [1.0, 3.5], [1.0, 4.0]])
    expected = skm.r2_score(y_true, y_pred, multioutput="raw_values")
    np.testing.assert_allclose(probe_metrics.r2_per_target(y_true, y_pred), expected)
    y_off = y_pred + np.array([0.5, 0.0])
    np.testing.assert_allclose(
        probe_metrics.r2_per_target(y_true, y_off),
        skm.r2_score(y_true, y_off, multioutput="raw_values"),
    )


@pytest.mark.parametrize("decimals", [None, 1, 0])  # 1 and 0 decimals create many ties
def test_binary_ranking_metrics_match_sklearn_with_ties(decimals):
    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 2, 300)
    scores = y_true * 0.8 + rng.standard_normal(300)
    if decimals is not None:
        scores = np.round(scores, decimals)
    assert probe_metrics.roc_auc(y_true, scores) == pytest.approx(
        skm.roc_auc_score(y_true, scores), abs=1e-12
    )
    assert probe_metrics.average_precision(y_true, scores) == pytest.approx(
        skm.average_precision_score(y_true, scores), abs=1e-12
    )


def test_all_tied_scores_give_chance_auc_and_base_rate_ap():
    y_true = np.array([1, 0, 0, 1, 0])
    scores = np.zeros(5)
    assert probe_metrics.roc_auc(y_true, scores) == 0.5
    assert probe_metrics.average_precision(y_true, scores) == pytest.approx(2 / 5)


def test_multilabel_macro_matches_sklearn_and_skips_degenerate_labels():
    rng = np.random.default_rng(3)
    y_true = (rng.random((120, 8)) < 0.3).astype(int)
    y_true[:, 2] = 0  # no positives
    y_true[:, 5] = 1  # no negatives
    scores = np.round(y_true * 0.5 + rng.standard_normal((120, 8)), 1)
    result = probe_metrics.multilabel_scores(y_true, scores)
    kept = [0, 1, 3, 4, 6, 7]
    assert result.skipped_labels == (2, 5)
    assert result.num_labels_scored == 6
    assert result.roc_auc == pytest.approx(
        skm.roc_auc_score(y_true[:, kept], scores[:, kept], average="macro"), abs=1e-12
    )
    assert result.pr_auc == pytest.approx(
        skm.average_precision_score(y_true[:, kept], scores[:, kept], average="macro"),
        abs=1e-12,
    )


def test_errors_are_explicit():
    with pytest.raises(ValueError, match="same"):
        probe_metrics.accuracy([0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="positives and negatives"):
        probe_metrics.roc_auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        probe_metrics.average_precision([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="no label"):
        probe_metrics.multilabel_scores(np.zeros((4, 2)), np.zeros((4, 2)))


def _coin_flips(n: int, p: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Predictions right with probability p: y_true [n], y_pred [n]."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, n)
    right = rng.random(n) < p
    return y_true, np.where(right, y_true, (y_true + 1) % 4)


def test_scorer_gives_the_metrics_of_each_task_kind():
    y_true, y_pred = _coin_flips(50, 0.6, seed=0)
    keys_scores = probe_metrics.scorer(["accuracy", "mirex"])(y_true, y_pred)
    assert keys_scores == {
        "accuracy": probe_metrics.accuracy(y_true, y_pred),
        "mirex": probe_metrics.mirex_key_score(y_true, y_pred),
    }
    rng = np.random.default_rng(0)
    target = rng.normal(size=40)
    assert probe_metrics.scorer(["r2"])(target, target + 0.1)["r2"] == pytest.approx(
        skm.r2_score(target, target + 0.1)
    )
    labels = (rng.random((40, 3)) < 0.4).astype(np.float32)
    logits = labels + rng.normal(size=(40, 3))
    ranked = probe_metrics.scorer(["roc_auc", "pr_auc"])(labels, logits)
    assert ranked["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, logits, average="macro"))
    assert ranked["pr_auc"] == pytest.approx(
        skm.average_precision_score(labels, logits, average="macro")
    )
    with pytest.raises(ValueError, match="no test score is defined"):
        probe_metrics.scorer(["f1"])

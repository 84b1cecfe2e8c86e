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


def _accuracy_interval(y_true, y_pred, **kwargs) -> tuple[float, float]:
    score = probe_metrics.scorer(["accuracy"])
    return probe_metrics.bootstrap_intervals(score, y_true, y_pred, **kwargs)["accuracy"]


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


def test_bootstrap_interval_contains_the_estimate_and_shrinks_like_one_over_sqrt_n():
    widths = {}
    for n in (100, 400, 1600):
        y_true, y_pred = _coin_flips(n, 0.7, seed=n)
        low, high = _accuracy_interval(y_true, y_pred)
        assert low <= probe_metrics.accuracy(y_true, y_pred) <= high
        widths[n] = high - low
    assert widths[100] / widths[400] == pytest.approx(2.0, rel=0.25)
    assert widths[400] / widths[1600] == pytest.approx(2.0, rel=0.25)


def test_bootstrap_interval_of_accuracy_matches_the_normal_approximation():
    y_true, y_pred = _coin_flips(4000, 0.7, seed=0)
    p = probe_metrics.accuracy(y_true, y_pred)
    low, high = _accuracy_interval(y_true, y_pred)
    half = 1.959964 * np.sqrt(p * (1 - p) / len(y_true))
    assert low == pytest.approx(p - half, abs=0.15 * half)
    assert high == pytest.approx(p + half, abs=0.15 * half)


@pytest.mark.parametrize("metrics", [("accuracy", "mirex"), ("r2",), ("roc_auc", "pr_auc")])
def test_bootstrap_intervals_agree_with_scipy_percentile_bootstrap(metrics):
    from scipy import stats

    rng = np.random.default_rng(1)
    n = 300
    if metrics[0] == "accuracy":
        y_true, y_pred = _coin_flips(n, 0.6, seed=2)
    elif metrics[0] == "r2":
        y_true = rng.normal(size=n)
        y_pred = 0.7 * y_true + rng.normal(0, 0.7, n)
    else:
        y_true = (rng.random((n, 3)) < 0.3).astype(np.float32)
        y_pred = y_true + rng.normal(0, 1.0, (n, 3))
    score = probe_metrics.scorer(metrics)
    ours = probe_metrics.bootstrap_intervals(score, y_true, y_pred, num_resamples=4000)
    assert list(ours) == list(metrics)
    for name in metrics:
        # scipy resamples the example indices; the statistic scores the examples they pick.
        theirs = stats.bootstrap(
            (np.arange(n),),
            lambda i, name=name: score(y_true[i], y_pred[i])[name],
            vectorized=False,
            n_resamples=4000,
            method="percentile",
            random_state=np.random.default_rng(7),
        ).confidence_interval
        width = ours[name][1] - ours[name][0]
        np.testing.assert_allclose(ours[name], (theirs.low, theirs.high), atol=0.05 * width)


def test_bootstrap_intervals_are_reproducible_and_skip_unscorable_resamples():
    y_true = np.zeros((12, 1))
    y_true[0] = 1  # one positive: resamples without it cannot be scored
    logits = np.linspace(1, 0, 12)[:, None]
    score = probe_metrics.scorer(["roc_auc"])
    first = probe_metrics.bootstrap_intervals(score, y_true, logits, seed=3)
    assert first == probe_metrics.bootstrap_intervals(score, y_true, logits, seed=3)
    assert first == {"roc_auc": (1.0, 1.0)}  # the positive outscores every negative, always
    with pytest.raises(ValueError, match="none of the 5 bootstrap resamples"):
        probe_metrics.bootstrap_intervals(score, np.zeros((4, 1)), logits[:4], num_resamples=5)
    with pytest.raises(ValueError, match="same non-zero number"):
        _accuracy_interval([1, 2], [1])

"""Bootstrap intervals: every weighted score equals the plain metric of the resampled arrays
(ties, unscorable labels and resamples included), and the intervals agree with scipy's."""

import numpy as np
import pytest

from myna_rpe_jax.probe import bootstrap
from myna_rpe_jax.probe import metrics as probe_metrics
from tests.probe.test_metrics import _coin_flips


def _accuracy_interval(y_true, y_pred, **kwargs) -> tuple[float, float]:
    return bootstrap.bootstrap_intervals(["accuracy"], y_true, y_pred, **kwargs)["accuracy"]


def _task_outputs(kind: str, n: int, rng) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(metric names, y_true, predictions) of one task kind, with tied predictions."""
    if kind == "keys":
        y_true = rng.integers(0, 24, n)
        y_pred = np.where(rng.random(n) < 0.5, y_true, (y_true + 7) % 24)  # right or a fifth
        return ["accuracy", "mirex"], y_true, y_pred
    if kind == "r2":
        y_true = rng.normal(size=n)
        return ["r2"], y_true, np.round(0.6 * y_true + rng.normal(0, 0.6, n), 1)
    y_true = (rng.random((n, 5)) < [0.05, 0.3, 0.5, 0.0, 1.0]).astype(np.float32)
    scores = np.round(y_true + rng.normal(0, 1.0, (n, 5)), 0)  # few distinct values: ties
    return ["roc_auc", "pr_auc"], y_true, scores


@pytest.mark.parametrize("kind", ["keys", "r2", "tags"])
def test_weighted_scores_equal_the_plain_metrics_of_each_resampled_copy(kind):
    rng = np.random.default_rng(0)
    names, y_true, y_pred = _task_outputs(kind, 30, rng)
    counts = bootstrap.resample_counts(rng, 200, len(y_true))
    assert (counts.sum(axis=1) == len(y_true)).all()
    weighted = bootstrap.resampled_scores(names, y_true, y_pred, counts)
    score = probe_metrics.scorer(names)
    unscorable = 0
    for b, row in enumerate(counts):
        picked = np.repeat(np.arange(len(y_true)), row)
        try:
            plain = score(y_true[picked], y_pred[picked])
        except ValueError:  # e.g. no tag with both positives and negatives in this resample
            unscorable += 1
            assert all(np.isnan(weighted[name][b]) for name in names)
            continue
        for name in names:
            assert weighted[name][b] == pytest.approx(plain[name], abs=1e-12), (name, b)
    if kind == "tags":
        # Some resamples lack the rare tag's positives: it is left out of their macro average,
        # as the plain metric leaves it out; the common tags keep every resample scorable.
        rare = y_true[:, 0] == 1
        assert (counts[:, rare].sum(axis=1) == 0).any() and unscorable == 0


def test_a_resample_with_no_scorable_label_is_nan():
    y_true = np.zeros((6, 1))
    y_true[0] = 1
    counts = np.array([[0, 2, 1, 1, 1, 1], [6, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    scores = bootstrap.resampled_scores(["roc_auc"], y_true, np.linspace(1, 0, 6)[:, None], counts)
    np.testing.assert_array_equal(scores["roc_auc"], [np.nan, np.nan, 1.0])


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
    ours = bootstrap.bootstrap_intervals(metrics, y_true, y_pred, num_resamples=4000)
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
    first = bootstrap.bootstrap_intervals(["roc_auc"], y_true, logits, seed=3)
    assert first == bootstrap.bootstrap_intervals(["roc_auc"], y_true, logits, seed=3)
    assert first == {"roc_auc": (1.0, 1.0)}  # the positive outscores every negative, always
    with pytest.raises(ValueError, match="none of the 5 bootstrap resamples"):
        bootstrap.bootstrap_intervals(["roc_auc"], np.zeros((4, 1)), logits[:4], num_resamples=5)
    with pytest.raises(ValueError, match="same non-zero number"):
        _accuracy_interval([1, 2], [1])

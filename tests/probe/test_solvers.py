"""Probe solvers against scikit-learn, optimality conditions, sweeps and compile counts.

Comparisons run in float64 (jax.enable_x64 inside each test) so that differences measure the
solvers, not float32 rounding; one test checks the float32 default separately.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit, log_expit, logsumexp, softmax
from sklearn.linear_model import LogisticRegression, Ridge

from myna_rpe_jax.probe import solvers

N, D, C = 240, 12, 4
# Tiny l2 on tiny, nearly separable data is ill-conditioned and needs thousands of L-BFGS
# steps (scikit-learn's too): stay in the range where both converge quickly.
L2S = (1e-1, 1e-2, 1e-3)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _multiclass_data(seed=0, n=N):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D)) + rng.standard_normal(D)
    y = (x @ rng.standard_normal((D, C)) + rng.gumbel(size=(n, C))).argmax(axis=1)
    return x, y


def _multilabel_data(seed=1, labels=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D))
    logits = x @ rng.standard_normal((D, labels)) + rng.logistic(size=(N, labels))
    return x, (logits > 0.5).astype(np.int32)


def _softmax_objective(w, b, x, y, l2, sample_weight):
    """Independent numpy form of the documented objective."""
    z = x @ w + b
    ce = logsumexp(z, axis=1) - z[np.arange(len(y)), y]
    return np.mean(sample_weight * ce) + 0.5 * l2 * np.sum(w**2)


def _centred(logits):
    logits = np.asarray(logits, np.float64)
    return logits - logits.mean(axis=1, keepdims=True)


def _sklearn_multinomial(x, y, l2, sample_weight=None):
    model = LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-10, max_iter=100_000)
    return model.fit(x, y, sample_weight=sample_weight)


@pytest.mark.parametrize("l2", L2S)
def test_multinomial_matches_sklearn(l2):
    x, y = _multiclass_data()
    w, b = solvers.logistic_regression(x, y, l2=l2)
    ref = _sklearn_multinomial(x, y, l2)
    ours = _centred(solvers.predict_logits(w, b, x))
    theirs = _centred(ref.decision_function(x))
    np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))
    np.testing.assert_allclose(ours, theirs, atol=1e-5 * max(1.0, np.abs(theirs).max()))
    ones = np.ones(N)
    ours_obj = _softmax_objective(np.asarray(w), np.asarray(b), x, y, l2, ones)
    assert ours_obj <= _softmax_objective(ref.coef_.T, ref.intercept_, x, y, l2, ones) + 1e-12
    assert abs(float(jnp.sum(b))) < 1e-10  # the documented bias convention


def test_multinomial_sample_weight_matches_sklearn():
    x, y = _multiclass_data(seed=2)
    weights = np.random.default_rng(3).uniform(0.2, 3.0, N)
    w, b = solvers.logistic_regression(x, y, l2=1e-2, sample_weight=weights)
    ref = _sklearn_multinomial(x, y, 1e-2, sample_weight=weights)
    np.testing.assert_allclose(
        _centred(solvers.predict_logits(w, b, x)), _centred(ref.decision_function(x)), atol=1e-5
    )


def test_multinomial_gradient_vanishes_at_solution():
    x, y = _multiclass_data(seed=4)
    l2 = 1e-3
    w, b, info = solvers.logistic_regression(x, y, l2=l2, tol=1e-10, return_info=True)
    w, b = np.asarray(w), np.asarray(b)
    residual = softmax(x @ w + b, axis=1) - np.eye(C)[y]  # KKT: d objective / d (w, b) = 0
    grad_w = x.T @ residual / N + l2 * w
    grad_b = residual.mean(axis=0)
    assert np.abs(grad_w).max() < 1e-9 and np.abs(grad_b).max() < 1e-9
    assert bool(info["converged"]) and int(info["num_iter"]) < 1000
    _, _, early = solvers.logistic_regression(x, y, l2=l2, max_iter=3, return_info=True)
    assert int(early["num_iter"]) == 3
    assert not bool(early["converged"]) and not bool(early["stalled"])


def test_multilabel_matches_per_label_sklearn():
    x, y = _multilabel_data()
    l2 = 1e-2
    w, b = solvers.multilabel_logistic_regression(x, y, l2=l2)
    for label in range(y.shape[1]):
        # Per label the objective is mean BCE + (l2 / 2)||w_c||^2 = sklearn's / (C_sk * N).
        ref = LogisticRegression(C=1.0 / (l2 * N), tol=1e-10, max_iter=100_000)
        ref.fit(x, y[:, label])
        np.testing.assert_allclose(w[:, label], ref.coef_[0], atol=1e-6)
        np.testing.assert_allclose(b[label], ref.intercept_[0], atol=1e-6)


def test_multilabel_gradient_vanishes_at_solution():
    x, y = _multilabel_data(seed=5)
    l2 = 1e-3
    w, b = solvers.multilabel_logistic_regression(x, y, l2=l2, tol=1e-10)
    residual = expit(x @ np.asarray(w) + np.asarray(b)) - y
    assert np.abs(x.T @ residual / N + l2 * np.asarray(w)).max() < 1e-9
    assert np.abs(residual.mean(axis=0)).max() < 1e-9
    # Sanity of the loss form itself: BCE via log-sigmoid equals the solver's objective.
    z = x @ np.asarray(w) + np.asarray(b)
    bce = -(y * log_expit(z) + (1 - y) * log_expit(-z)).sum(axis=1).mean()
    value = solvers.linear_objective(w, b, x, y.astype(float), np.ones(N), l2, "sigmoid")
    assert float(value) == pytest.approx(bce + 0.5 * l2 * np.sum(np.asarray(w) ** 2))


@pytest.mark.parametrize(("n", "targets"), [(80, 2), (9, 2), (80, None), (9, None)])
def test_ridge_matches_sklearn(n, targets):
    # n > D uses the primal system, n < D the dual one; targets None is a [N] vector.
    rng = np.random.default_rng(6)
    x = rng.standard_normal((n, D)) + 2.0
    y = rng.standard_normal((n,) if targets is None else (n, targets)) + 1.0
    for alpha in (1e-2, 1.0, 30.0):
        w, b = solvers.ridge_regression(x, y, alpha=alpha)
        ref = Ridge(alpha=alpha, solver="svd").fit(x, y)
        np.testing.assert_allclose(w, ref.coef_.T, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(b, ref.intercept_, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("n", [80, 9])
def test_ridge_path_and_vmap_equal_single_solves(n):
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((n, D)), rng.standard_normal((n, 2))
    alphas = jnp.array([1e-3, 1e-1, 10.0, 1e3])
    w_path, b_path = solvers.ridge_regression_path(x, y, alphas)
    w_vmap, b_vmap = jax.vmap(lambda a: solvers.ridge_regression(x, y, alpha=a))(alphas)
    for i, alpha in enumerate(alphas):
        w, b = solvers.ridge_regression(x, y, alpha=alpha)
        np.testing.assert_allclose(w_path[i], w, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(b_path[i], b, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(w_vmap[i], w, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(b_vmap[i], b, rtol=1e-12, atol=1e-14)


def test_logistic_paths_and_vmap_equal_single_solves():
    x, y = _multiclass_data()
    l2s = jnp.array(L2S)
    w_path, b_path, info = solvers.logistic_regression_path(x, y, l2s, return_info=True)
    w_vmap, b_vmap = jax.vmap(lambda l2: solvers.logistic_regression(x, y, l2=l2, num_classes=C))(
        l2s
    )
    assert bool(np.all(info["converged"]))
    for i, l2 in enumerate(L2S):
        w, b = solvers.logistic_regression(x, y, l2=l2)
        # Both reach the same unique optimum from different starting points (warm starts).
        np.testing.assert_allclose(w_path[i], w, atol=1e-6)
        np.testing.assert_allclose(b_path[i], b, atol=1e-6)
        np.testing.assert_allclose(w_vmap[i], w, atol=1e-6)
        np.testing.assert_allclose(b_vmap[i], b, atol=1e-6)
    xm, ym = _multilabel_data()
    w_path, b_path = solvers.multilabel_logistic_regression_path(xm, ym, l2s)
    for i, l2 in enumerate(L2S):
        w, b = solvers.multilabel_logistic_regression(xm, ym, l2=l2)
        np.testing.assert_allclose(w_path[i], w, atol=1e-6)
        np.testing.assert_allclose(b_path[i], b, atol=1e-6)


def test_compiles_once_per_shape_not_per_regularisation_value():
    x, y = _multiclass_data(seed=8)
    compiles = []

    def on_event(event, duration_secs, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    def sweep(values):
        jax.block_until_ready(solvers.logistic_regression(x, y, l2=values[0]))
        jax.block_until_ready(solvers.logistic_regression_path(x, y, values))
        jax.block_until_ready(solvers.ridge_regression(x, y.astype(float), alpha=values[0]))
        jax.block_until_ready(solvers.ridge_regression_path(x, y.astype(float), values))

    sweep(np.array([0.5, 0.2]))  # the first call per shape compiles
    jax.monitoring.register_event_duration_secs_listener(on_event)
    try:
        for low in np.logspace(-3, -1, 4):
            sweep(np.array([low, 3 * low]))
    finally:
        jax.monitoring.unregister_event_duration_listener(on_event)
    assert compiles == []


def test_float32_default_matches_float64_predictions():
    x, y = _multiclass_data(seed=9)
    w64, b64 = solvers.logistic_regression(x, y, l2=1e-2)
    with jax.enable_x64(False):
        w32, b32 = solvers.logistic_regression(x.astype(np.float32), y, l2=1e-2)
        assert w32.dtype == jnp.float32
        # An unreachable tol: the solver notices it cannot progress and stops, saying so.
        _, _, info = solvers.logistic_regression(
            x.astype(np.float32), y, l2=1e-2, tol=1e-15, return_info=True
        )
        assert bool(info["stalled"]) and not bool(info["converged"])
        assert int(info["num_iter"]) < 1000
    logits32 = solvers.predict_logits(w32, b32, x.astype(np.float32))
    logits64 = solvers.predict_logits(w64, b64, x)
    np.testing.assert_array_equal(np.argmax(logits32, 1), np.argmax(logits64, 1))
    np.testing.assert_allclose(_centred(logits32), _centred(logits64), atol=1e-3)


def test_standardize_uses_train_statistics():
    rng = np.random.default_rng(10)
    train = rng.normal(3.0, 2.0, (50, 4))
    train[:, 1] = 7.0  # constant feature: std 1, not a division by zero
    test = rng.normal(0.0, 1.0, (20, 4))
    mean, std = solvers.standardize_fit(train)
    z_train = np.asarray(solvers.standardize_apply(train, mean, std))
    np.testing.assert_allclose(z_train[:, [0, 2, 3]].mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z_train[:, [0, 2, 3]].std(0), 1.0, atol=1e-12)
    np.testing.assert_array_equal(z_train[:, 1], 0.0)
    expected = (test - train.mean(0)) / np.where(train.std(0) > 0, train.std(0), 1.0)
    np.testing.assert_allclose(solvers.standardize_apply(test, mean, std), expected)


def test_bad_inputs_raise_helpful_errors():
    x, y = _multiclass_data()
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 3\)"):
        solvers.logistic_regression(x, y, l2=1.0, num_classes=3)
    with pytest.raises(ValueError, match="integer class indices"):
        solvers.logistic_regression(x, y.astype(float), l2=1.0)
    with pytest.raises(ValueError, match="_path"):
        solvers.logistic_regression(x, y, l2=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        solvers.multilabel_logistic_regression(x, np.full((N, 2), 2), l2=1.0)
    with pytest.raises(ValueError, match="ridge needs"):
        solvers.ridge_regression(x, y[:-1].astype(float), alpha=1.0)

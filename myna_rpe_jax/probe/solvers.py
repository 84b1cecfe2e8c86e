"""Linear probe solvers in pure JAX: multinomial / multi-label logistic regression and ridge.

Every solver is jitted with the regularisation strength as a *traced* argument, so a sweep over
regularisation values compiles once per data shape, and `jax.vmap` over the strength works.
For sweeps prefer the `*_path` functions: the logistic ones solve from the strongest
regularisation down, warm-starting each solve from the last (no extra compilation); the ridge
one reuses a single eigendecomposition for every alpha. Solvers compute in the floating dtype of `x`
(float32 by default, float64 when `jax_enable_x64` is on and `x` is float64). They do not
standardise features: the probe fits `standardize_fit` on the train split only and applies the
same statistics to every split.

Objectives (N samples, D features, C classes/labels, T regression targets):
- `logistic_regression`: mean_i s_i * CE(softmax(x_i w + b), y_i) + (l2 / 2) ||w||^2,
  with sample weights s_i (default 1). The bias is not penalised. This is scikit-learn's
  multinomial `LogisticRegression(C=1 / (l2 * N))` divided by C * N. Softmax is invariant to
  adding a constant to every class bias, so the bias is returned centred (sum_c b_c = 0);
  compare against other solvers through logits with the per-row mean removed, or predictions.
  For C = 2 this is the symmetric softmax problem, not scikit-learn's binomial one.
- `multilabel_logistic_regression`: mean_i s_i * sum_c BCE(sigmoid(x_i w_c + b_c), y_ic)
  + (l2 / 2) ||w||^2. It separates per label into scikit-learn's binary
  `LogisticRegression(C=1 / (l2 * N))`, one per label.
- `ridge_regression`: ||y - x w - b||^2 + alpha ||w||^2 (sums, bias not penalised): exactly
  scikit-learn's `Ridge(alpha)`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

# Default stopping tolerance on max_i |d objective / d param_i|. float32 cannot resolve the
# gradient of a mean over ~1e3 samples much below 1e-6; float64 goes far tighter.
_DEFAULT_TOL = {jnp.dtype(jnp.float32): 1e-6, jnp.dtype(jnp.float64): 1e-9}
# Consecutive L-BFGS steps without a decrease of the objective after which we stop: the
# iterate is at the floating-point resolution of the objective and cannot improve further.
_MAX_STALLED_STEPS = 5


def _as_float(x) -> jax.Array:
    """x as a JAX array of a floating dtype (float32 unless it already is a wider float)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def standardize_fit(x_train: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-feature mean and standard deviation of the TRAIN features x_train: [N, D].

    Returns (mean [D], std [D]); constant features get std 1 so they map to 0, not NaN.
    """
    x_train = _as_float(x_train)
    std = jnp.std(x_train, axis=0)
    return jnp.mean(x_train, axis=0), jnp.where(std > 0, std, 1.0)


def standardize_apply(x: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """(x - mean) / std for x: [N, D] with the train statistics from `standardize_fit`."""
    return (_as_float(x) - mean) / std


def _softmax_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-sample CE for logits: [N, C] and one-hot targets: [N, C] -> [N]."""
    return jax.nn.logsumexp(logits, axis=-1) - jnp.sum(targets * logits, axis=-1)


def _sigmoid_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-sample BCE summed over labels, logits and targets: [N, C] -> [N]."""
    return jnp.sum(jnp.logaddexp(0.0, logits) - targets * logits, axis=-1)


_LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "softmax": _softmax_cross_entropy,
    "sigmoid": _sigmoid_cross_entropy,
}


def linear_objective(
    w: jax.Array,
    b: jax.Array,
    x: jax.Array,
    targets: jax.Array,
    sample_weight: jax.Array,
    l2: jax.Array,
    loss: str,
) -> jax.Array:
    """mean_i s_i * loss(x_i w + b, t_i) + (l2 / 2) ||w||^2.

    w: [D, C], b: [C], x: [N, D], targets: [N, C] (one-hot for "softmax", 0/1 for "sigmoid"),
    sample_weight: [N], loss: "softmax" or "sigmoid". Returns a scalar.
    """
    per_sample = _LOSSES[loss](x @ w + b, targets)
    return jnp.mean(sample_weight * per_sample) + 0.5 * l2 * jnp.sum(w * w)


def _max_abs(tree) -> jax.Array:
    return optax.tree.max(jax.tree.map(jnp.abs, tree))


@functools.partial(jax.jit, static_argnames=("loss", "memory_size"))
def _fit_linear(
    x: jax.Array,
    targets: jax.Array,
    sample_weight: jax.Array,
    l2: jax.Array,
    tol: jax.Array,
    init: tuple[jax.Array, jax.Array],
    max_iter: jax.Array,
    *,
    loss: str,
    memory_size: int = 10,
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """Minimises `linear_objective` with L-BFGS (zoom line search) from init = (w, b).

    Stops when the largest absolute gradient entry is <= tol, after max_iter steps, or after
    _MAX_STALLED_STEPS steps in a row without a decrease. l2, tol, init and max_iter are
    traced: one compilation serves every regularisation value and warm start.
    Returns (w [D, C], b [C], info).
    """
    l2 = jnp.asarray(l2, x.dtype)
    # Solve with centred features and bias b' = b + mean(x) @ w: the same objective (the bias
    # is unpenalised), but far better conditioned when features are not centred.
    x_mean = jnp.mean(x, axis=0)
    x_centred = x - x_mean
    centred = lambda p: linear_objective(p[0], p[1], x_centred, targets, sample_weight, l2, loss)
    solver = optax.lbfgs(
        memory_size=memory_size,
        linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=30),
    )
    value_and_grad = optax.value_and_grad_from_state(centred)

    def step(carry):
        params, state, stalled = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = solver.update(
            grad, state, params, value=value, grad=grad, value_fn=centred
        )
        decreased = optax.tree.get(state, "value") < value
        return optax.apply_updates(params, updates), state, jnp.where(decreased, 0, stalled + 1)

    def keep_going(carry):
        _, state, stalled = carry
        count = optax.tree.get(state, "count")
        grad_max = _max_abs(optax.tree.get(state, "grad"))
        # The state holds no gradient before the first step, hence count == 0.
        return (count == 0) | (
            (count < max_iter) & (grad_max > tol) & (stalled < _MAX_STALLED_STEPS)
        )

    init = (init[0], init[1] + x_mean @ init[0])
    (w, b), state, stalled = jax.lax.while_loop(keep_going, step, (init, solver.init(init), 0))
    grad_max = _max_abs(jax.grad(centred)((w, b)))  # what the stopping rule tested
    b = b - x_mean @ w
    info = {
        "num_iter": optax.tree.get(state, "count"),
        "grad_max": grad_max,
        "converged": grad_max <= tol,
        # Stopped at the float precision floor above tol (common in float32 for weak l2).
        "stalled": (grad_max > tol) & (stalled >= _MAX_STALLED_STEPS),
    }
    return w, b, info


def _prepare(x, sample_weight, tol) -> tuple[jax.Array, jax.Array, jax.Array]:
    x = _as_float(x)
    if x.ndim != 2:
        raise ValueError(f"x must be [N, D] features, got shape {x.shape}")
    n = x.shape[0]
    if sample_weight is None:
        sample_weight = jnp.ones((n,), x.dtype)
    sample_weight = jnp.asarray(sample_weight, x.dtype)
    if sample_weight.shape != (n,):
        raise ValueError(f"sample_weight must be [N={n}], got shape {sample_weight.shape}")
    tol = _DEFAULT_TOL[jnp.dtype(x.dtype)] if tol is None else tol
    return x, sample_weight, jnp.asarray(tol, x.dtype)


def _one_hot_labels(y, x: jax.Array, num_classes: int | None) -> jax.Array:
    """Checks integer class labels y: [N] and returns their one-hot [N, C] in x's dtype."""
    y, n = jnp.asarray(y), x.shape[0]
    if y.shape != (n,) or not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"y must be [N={n}] integer class indices, got {y.dtype}{y.shape}")
    if not isinstance(y, jax.core.Tracer):
        low, high = int(jnp.min(y)), int(jnp.max(y))
        num_classes = high + 1 if num_classes is None else num_classes
        if low < 0 or high >= num_classes:
            raise ValueError(f"class labels must lie in [0, {num_classes}), got [{low}, {high}]")
    elif num_classes is None:
        raise ValueError("pass num_classes when y is traced (inside jit or vmap over y)")
    return jax.nn.one_hot(y, num_classes, dtype=x.dtype)


def _binary_targets(y, x: jax.Array) -> jax.Array:
    """Checks multi-label targets y: [N, C] in {0, 1} and returns them in x's dtype."""
    y = jnp.asarray(y)
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be [N={x.shape[0]}, C] 0/1 labels, got shape {y.shape}")
    if not isinstance(y, jax.core.Tracer) and not bool(jnp.all((y == 0) | (y == 1))):
        raise ValueError("multi-label targets y must contain only 0 and 1")
    return y.astype(x.dtype)


def _zeros(x: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.zeros((x.shape[1], targets.shape[1]), x.dtype), jnp.zeros(targets.shape[1:], x.dtype)


def _finish(solution, loss: str, return_info: bool):
    w, b, info = solution
    if loss == "softmax":
        b = b - jnp.mean(b, axis=-1, keepdims=True)  # fix the softmax shift freedom
    return (w, b, info) if return_info else (w, b)


def _solve(x, targets, sample_weight, tol, l2, loss, max_iter, return_info):
    l2 = jnp.asarray(l2, x.dtype)
    if l2.ndim != 0:
        raise ValueError(f"l2 must be a scalar, got shape {l2.shape}: use the *_path function")
    init, max_iter = _zeros(x, targets), jnp.asarray(max_iter, jnp.int32)
    solution = _fit_linear(x, targets, sample_weight, l2, tol, init, max_iter, loss=loss)
    return _finish(solution, loss, return_info)


def _solve_path(x, targets, sample_weight, tol, l2s, loss, max_iter, return_info):
    """Solves for every l2 in l2s: [L], strongest first, each warm-started from the last.

    A Python loop over the one compiled solver: init is a traced argument, so this adds no
    compilation, and it beats `jax.vmap`, under which every member of the batch runs as
    many L-BFGS and line-search steps as the slowest one needs.
    """
    l2s = np.asarray(l2s, np.float64)
    if l2s.ndim != 1 or len(l2s) == 0:
        raise ValueError(f"l2s must be a non-empty [L] vector of values, got shape {l2s.shape}")
    init, max_iter = _zeros(x, targets), jnp.asarray(max_iter, jnp.int32)
    solutions = [None] * len(l2s)
    for i in np.argsort(-l2s):
        l2 = jnp.asarray(l2s[i], x.dtype)
        w, b, info = _fit_linear(x, targets, sample_weight, l2, tol, init, max_iter, loss=loss)
        init, solutions[i] = (w, b), (w, b, info)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *solutions)
    return _finish(stacked, loss, return_info)


def logistic_regression(
    x: jax.Array,
    y: jax.Array,
    *,
    l2: float | jax.Array,
    num_classes: int | None = None,
    sample_weight: jax.Array | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    return_info: bool = False,
):
    """Multinomial logistic regression (see the module docstring for the objective).

    x: [N, D] features, y: [N] int class indices in [0, num_classes) (num_classes defaults to
    max(y) + 1; pass it when some class is absent from this split, or when y is traced),
    l2: scalar (may be traced, e.g. under `jax.vmap`), sample_weight: [N] or None,
    tol: stop when max |gradient| <= tol (default 1e-6 in float32, 1e-9 in float64).
    Returns (w [D, C], b [C]) with b centred, plus if return_info an info dict: num_iter,
    grad_max, converged (grad_max <= tol) and stalled (no progress possible above tol at this
    float precision); neither converged nor stalled means max_iter was hit.
    """
    x, sample_weight, tol = _prepare(x, sample_weight, tol)
    targets = _one_hot_labels(y, x, num_classes)
    return _solve(x, targets, sample_weight, tol, l2, "softmax", max_iter, return_info)


def logistic_regression_path(
    x: jax.Array,
    y: jax.Array,
    l2s: jax.Array,
    *,
    num_classes: int | None = None,
    sample_weight: jax.Array | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    return_info: bool = False,
):
    """`logistic_regression` for every value in l2s: [L] (no extra compilation, warm starts).

    Returns (w [L, D, C], b [L, C]) (+ info with [L] entries if return_info).
    """
    x, sample_weight, tol = _prepare(x, sample_weight, tol)
    targets = _one_hot_labels(y, x, num_classes)
    return _solve_path(x, targets, sample_weight, tol, l2s, "softmax", max_iter, return_info)


def multilabel_logistic_regression(
    x: jax.Array,
    y: jax.Array,
    *,
    l2: float | jax.Array,
    sample_weight: jax.Array | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    return_info: bool = False,
):
    """Independent sigmoid per label (see the module docstring for the objective).

    x: [N, D] features, y: [N, C] in {0, 1}, l2: scalar (may be traced). Returns
    (w [D, C], b [C]) (+ info if return_info).
    """
    x, sample_weight, tol = _prepare(x, sample_weight, tol)
    targets = _binary_targets(y, x)
    return _solve(x, targets, sample_weight, tol, l2, "sigmoid", max_iter, return_info)


def multilabel_logistic_regression_path(
    x: jax.Array,
    y: jax.Array,
    l2s: jax.Array,
    *,
    sample_weight: jax.Array | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    return_info: bool = False,
):
    """`multilabel_logistic_regression` for every value in l2s: [L].

    Returns (w [L, D, C], b [L, C]) (+ info with [L] entries if return_info).
    """
    x, sample_weight, tol = _prepare(x, sample_weight, tol)
    targets = _binary_targets(y, x)
    return _solve_path(x, targets, sample_weight, tol, l2s, "sigmoid", max_iter, return_info)


def _centre(x: jax.Array, y: jax.Array):
    x_mean, y_mean = jnp.mean(x, axis=0), jnp.mean(y, axis=0)
    return x - x_mean, y - y_mean, x_mean, y_mean


def _ridge_inputs(x, y) -> tuple[jax.Array, jax.Array]:
    x = _as_float(x)
    y = jnp.asarray(y, x.dtype)
    if x.ndim != 2 or y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        raise ValueError(f"ridge needs x [N, D] and y [N] or [N, T], got {x.shape}, {y.shape}")
    return x, y


@jax.jit
def _ridge(x: jax.Array, y: jax.Array, alpha: jax.Array) -> tuple[jax.Array, jax.Array]:
    xc, yc, x_mean, y_mean = _centre(x, y)
    n, d = x.shape
    if n >= d:  # primal: (Xc^T Xc + alpha I) w = Xc^T yc, a D x D system
        gram = xc.T @ xc + alpha * jnp.eye(d, dtype=x.dtype)
        w = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(gram), xc.T @ yc)
    else:  # dual: w = Xc^T (Xc Xc^T + alpha I)^-1 yc, an N x N system
        kernel = xc @ xc.T + alpha * jnp.eye(n, dtype=x.dtype)
        w = xc.T @ jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(kernel), yc)
    return w, y_mean - x_mean @ w


def ridge_regression(
    x: jax.Array, y: jax.Array, *, alpha: float | jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Ridge regression by Cholesky, in primal (N >= D) or dual (N < D) form.

    x: [N, D], y: [N, T] or [N], alpha > 0 scalar (may be traced, e.g. under `jax.vmap`).
    Returns (w [D, T], b [T]), or (w [D], b []) for y: [N], like scikit-learn's Ridge.
    """
    x, y = _ridge_inputs(x, y)
    return _ridge(x, y, jnp.asarray(alpha, x.dtype))


@jax.jit
def _ridge_path(x: jax.Array, y: jax.Array, alphas: jax.Array) -> tuple[jax.Array, jax.Array]:
    xc, yc, x_mean, y_mean = _centre(x, y)
    n, d = x.shape
    # One eigendecomposition of the smaller Gram matrix serves every alpha (an SVD of xc
    # would too, but is ~10x slower on CPU). Primal: Xc^T Xc = V E V^T,
    # w = V (E + alpha)^-1 V^T Xc^T yc; dual: Xc Xc^T = U E U^T, w = Xc^T U (E + alpha)^-1 U^T yc.
    if n >= d:
        eigvals, vecs = jnp.linalg.eigh(xc.T @ xc)
        basis, coords = vecs, jnp.tensordot(vecs, xc.T @ yc, axes=(0, 0))
    else:
        eigvals, vecs = jnp.linalg.eigh(xc @ xc.T)
        basis, coords = xc.T @ vecs, jnp.tensordot(vecs, yc, axes=(0, 0))
    # Gram matrices are PSD: clip rounding noise below 0 (the dual one is singular).
    shrink = 1.0 / (jnp.maximum(eigvals, 0.0) + alphas[:, None])  # [L, K]
    shrink = shrink.reshape(shrink.shape + (1,) * (y.ndim - 1))
    w = jnp.einsum("dk,lk...->ld...", basis, shrink * coords)
    return w, y_mean - jnp.tensordot(w, x_mean, axes=(1, 0))


def ridge_regression_path(
    x: jax.Array, y: jax.Array, alphas: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """`ridge_regression` for every alpha in alphas: [L] from one eigendecomposition.

    Returns (w [L, D, T], b [L, T]), or (w [L, D], b [L]) for y: [N].
    """
    x, y = _ridge_inputs(x, y)
    alphas = jnp.atleast_1d(jnp.asarray(alphas, x.dtype))
    if alphas.ndim != 1:
        raise ValueError(f"alphas must be a [L] vector, got shape {alphas.shape}")
    return _ridge_path(x, y, alphas)


def predict_logits(w: jax.Array, b: jax.Array, x: jax.Array) -> jax.Array:
    """x @ w + b for x: [N, D], w: [D, C], b: [C] -> [N, C] (also ridge predictions)."""
    return _as_float(x) @ w + b

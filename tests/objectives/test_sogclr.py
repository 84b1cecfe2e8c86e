"""SogCLR loss and state against loop-based numpy references and the mini-batch loss gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from myna_rpe_jax.objectives import contrastive, sogclr
from myna_rpe_jax.objectives.sogclr import SogclrState, sogclr_loss

TAU = 0.1


def _views(seed: int, batch: int = 6, dim: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z_a = rng.normal(size=(batch, dim))
    return z_a.astype(np.float32), (z_a + 0.7 * rng.normal(size=(batch, dim))).astype(np.float32)


def _np_terms(z_a, z_b, tau, same_view):
    """Per direction: positive logits [B] and log of the mean exp over negatives [B], by loops."""
    a = z_a / np.linalg.norm(z_a, axis=1, keepdims=True)
    b = z_b / np.linalg.norm(z_b, axis=1, keepdims=True)
    terms = []
    for anchor, other in ((a, b), (b, a)):
        batch = len(anchor)
        positive = np.array([anchor[i] @ other[i] for i in range(batch)]) / tau
        log_g = []
        for i in range(batch):
            negatives = [anchor[i] @ other[j] for j in range(batch) if j != i]
            if same_view:
                negatives += [anchor[i] @ anchor[j] for j in range(batch) if j != i]
            log_g.append(np.log(np.mean(np.exp(np.array(negatives) / tau))))
        terms.append((positive, np.array(log_g)))
    return terms


def _negative_index(batch: int, same_view: bool) -> np.ndarray:
    """[B, |N|] columns of the negatives of each anchor in [other view | same view]."""
    cols = [[j for j in range(batch) if j != i] for i in range(batch)]
    if same_view:
        cols = [c + [batch + j for j in c] for c in cols]
    return np.array(cols)


def _ref_directions(z_a, z_b, tau, same_view):
    """jnp: per direction (positive logits [B], negative logits [B, |N|]) by explicit indexing."""
    a = z_a / jnp.linalg.norm(z_a, axis=1, keepdims=True)
    b = z_b / jnp.linalg.norm(z_b, axis=1, keepdims=True)
    batch = a.shape[0]
    rows, cols = np.arange(batch)[:, None], _negative_index(batch, same_view)
    out = []
    for anchor, other in ((a, b), (b, a)):
        candidates = jnp.concatenate([anchor @ other.T, anchor @ anchor.T], axis=1) / tau
        out.append((jnp.diagonal(candidates), candidates[rows, cols]))
    return out


def _ref_minibatch_loss(z_a, z_b, tau, same_view):
    """Mini-batch loss mean_i[-s_ii/tau + log mean_{j in N_i} exp(s_ij/tau)], both directions."""
    terms = [
        -pos + jax.scipy.special.logsumexp(neg, axis=1) - np.log(neg.shape[1])
        for pos, neg in _ref_directions(z_a, z_b, tau, same_view)
    ]
    return 0.5 * (terms[0].mean() + terms[1].mean())


@pytest.mark.parametrize("same_view", [True, False])
def test_value_and_update_match_numpy(same_view):
    z_a, z_b = _views(0)
    gamma = 0.9
    rng = np.random.default_rng(1)
    u_old = rng.uniform(0.5, 50.0, size=(6, 2))
    u_old[[1, 4], [0, 1]] = 0.0  # unseen examples
    with np.errstate(divide="ignore"):
        log_u_old = np.log(u_old).astype(np.float32)
    loss, new_log_u = sogclr_loss(z_a, z_b, log_u_old, TAU, gamma, same_view)

    expected_u, expected_loss = np.zeros((6, 2)), 0.0
    for d, (positive, log_g) in enumerate(_np_terms(z_a, z_b, TAU, same_view)):
        expected_u[:, d] = (1 - gamma) * u_old[:, d] + gamma * np.exp(log_g)
        expected_loss += 0.5 * np.mean(-positive + np.log(expected_u[:, d]))
    np.testing.assert_allclose(np.exp(new_log_u), expected_u, rtol=1e-4)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)


@pytest.mark.parametrize("same_view", [True, False])
def test_gamma_one_equals_minibatch_loss_and_gradient(same_view):
    z_a, z_b = _views(2)
    log_u_old = jnp.asarray(np.random.default_rng(3).normal(size=(6, 2)), jnp.float32)

    def ours(z_a, z_b):
        return sogclr_loss(z_a, z_b, log_u_old, TAU, 1.0, same_view)[0]

    np.testing.assert_allclose(
        ours(z_a, z_b), _ref_minibatch_loss(z_a, z_b, TAU, same_view), rtol=1e-5
    )
    got = jax.grad(ours, argnums=(0, 1))(z_a, z_b)
    want = jax.grad(_ref_minibatch_loss, argnums=(0, 1))(z_a, z_b, TAU, same_view)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_gradient_is_the_moving_average_estimator():
    """gamma < 1: grad = (1/tau)[-grad s_ii + mean_j exp(s_ij/tau)/u_i grad s_ij], u_i updated."""
    z_a, z_b = _views(4)
    gamma = 0.5
    u_old = np.random.default_rng(5).uniform(1.0, 100.0, size=(6, 2))
    log_u_old = jnp.asarray(np.log(u_old), jnp.float32)
    weights = []
    for d, (_, log_g) in enumerate(_np_terms(z_a, z_b, TAU, True)):
        u_new = (1 - gamma) * u_old[:, d] + gamma * np.exp(log_g)
        _, negatives = _ref_directions(z_a, z_b, TAU, True)[d]
        weights.append(np.exp(np.asarray(negatives, np.float64)) / u_new[:, None])

    def estimator_surrogate(z_a, z_b):
        terms = [
            -pos + jnp.mean(w * neg, axis=1)
            for (pos, neg), w in zip(_ref_directions(z_a, z_b, TAU, True), weights, strict=True)
        ]
        return 0.5 * (terms[0].mean() + terms[1].mean())

    got = jax.grad(lambda a, b: sogclr_loss(a, b, log_u_old, TAU, gamma)[0], argnums=(0, 1))(
        z_a, z_b
    )
    want = jax.grad(estimator_surrogate, argnums=(0, 1))(z_a, z_b)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_infonce_gradient_is_per_anchor_rescaled_minibatch_gradient():
    """Documented relation (docs/losses.md), between the project's own terms: the gradient of
    InfoNCE's anchor i (contrastive.info_nce_logits, positive in the softmax) is (1 - p_ii)
    times that of the same anchor's gamma = 1 SogCLR surrogate with cross-view negatives
    (sogclr._direction, the per-anchor term sogclr_loss averages)."""
    z_a, z_b = _views(6)
    batch = z_a.shape[0]

    def infonce_anchor(z_a, z_b, i):  # one a->b cross-entropy term
        logits = contrastive.info_nce_logits(z_a, z_b, TAU)[i]
        return -logits[i] + jax.scipy.special.logsumexp(logits)

    def minibatch_anchor(z_a, z_b, i):
        a, b = contrastive.l2_normalize(z_a), contrastive.l2_normalize(z_b)
        unseen = jnp.full(batch, -jnp.inf)
        return sogclr._direction(a, b, unseen, TAU, 1.0, same_view_negatives=False)[0][i]

    for i in range(batch):
        p_ii = jnp.exp(-infonce_anchor(z_a, z_b, i))
        got = jax.grad(infonce_anchor, argnums=(0, 1))(z_a, z_b, i)
        want = jax.grad(minibatch_anchor, argnums=(0, 1))(z_a, z_b, i)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, (1 - p_ii) * w, rtol=1e-4, atol=1e-6)


def test_scatter_repeated_unsorted_ids_matches_loop():
    state = SogclrState.create(7)
    state = state.replace(log_u=state.log_u.at[5].set(jnp.array([1.0, 2.0])))
    ids = np.array([4, 0, 4, 2, 4, 0])
    new = np.random.default_rng(7).normal(size=(6, 2)).astype(np.float32)
    out = np.asarray(jax.jit(SogclrState.scatter)(state, jnp.asarray(ids), jnp.asarray(new)).log_u)

    expected = np.asarray(state.log_u).copy()
    for idx in set(ids.tolist()):
        expected[idx] = np.log(np.mean(np.exp(new[ids == idx]), axis=0))
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert np.all(np.isneginf(out[[1, 3, 6]]))  # never written
    np.testing.assert_array_equal(out[5], [1.0, 2.0])


def test_gather_and_out_of_range_ids():
    state = SogclrState(log_u=jnp.arange(8.0).reshape(4, 2))
    np.testing.assert_array_equal(state.gather(jnp.array([3, 0, 3])), [[6, 7], [0, 1], [6, 7]])
    assert np.all(np.isneginf(state.gather(jnp.array([9]))))
    out = state.scatter(jnp.array([9, 1]), jnp.full((2, 2), -5.0)).log_u
    np.testing.assert_array_equal(out, [[0, 1], [-5, -5], [4, 5], [6, 7]])


def test_train_loop_state_round_trip():
    """Two visits of the same ids through a jitted step: u = (1-g)(g g1) + g g2, g = gamma."""
    gamma = 0.9
    ids = jnp.array([3, 1, 0, 5])

    @jax.jit
    def step(state, z_a, z_b):
        loss, new_log_u = sogclr_loss(z_a, z_b, state.gather(ids), TAU, gamma)
        return state.scatter(ids, new_log_u), loss

    state = SogclrState.create(6)
    views = [_views(s, batch=4) for s in (8, 9)]
    for z_a, z_b in views:
        state, loss = step(state, z_a, z_b)
        assert np.isfinite(loss)
    g1, g2 = (np.exp([t[1] for t in _np_terms(a, b, TAU, True)]).T for a, b in views)
    expected = (1 - gamma) * gamma * g1 + gamma * g2
    np.testing.assert_allclose(np.exp(state.log_u[np.asarray(ids)]), expected, rtol=1e-4)
    assert np.all(np.isneginf(state.log_u[np.array([2, 4])]))


@pytest.mark.parametrize(
    "z_a, z_b",
    [
        (np.ones((4, 3)), np.ones((4, 3))),  # every embedding identical
        (np.zeros((4, 3)), np.random.default_rng(0).normal(size=(4, 3))),  # zero embeddings
    ],
)
@pytest.mark.parametrize("temperature", [0.1, 0.005])
def test_edge_cases_have_finite_loss_and_gradients(z_a, z_b, temperature):
    log_u = SogclrState.create(4).gather(jnp.arange(4))
    fn = jax.jit(lambda a, b: sogclr_loss(a, b, log_u, temperature)[0])
    loss, grads = jax.value_and_grad(fn, argnums=(0, 1))(
        jnp.asarray(z_a, jnp.float32), jnp.asarray(z_b, jnp.float32)
    )
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_bad_inputs_raise():
    z = jnp.ones((3, 4))
    with pytest.raises(ValueError, match="at least 2"):
        sogclr_loss(z[:1], z[:1], jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="log_u must be"):
        sogclr_loss(z, z, jnp.zeros((3,)))
    with pytest.raises(ValueError, match="gamma"):
        sogclr_loss(z, z, jnp.zeros((3, 2)), gamma=0.0)
    with pytest.raises(ValueError, match="one shape"):
        sogclr_loss(z, z[:, :2], jnp.zeros((3, 2)))

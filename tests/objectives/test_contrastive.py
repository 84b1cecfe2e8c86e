import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from myna_rpe_jax.objectives import contrastive


def numpy_info_nce(a, b, tau):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = a @ b.T / tau
    idx = np.arange(len(a))
    a_to_b = -(logits[idx, idx] - logsumexp(logits, axis=1))
    b_to_a = -(logits[idx, idx] - logsumexp(logits, axis=0))
    return 0.5 * (a_to_b.mean() + b_to_a.mean())


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_info_nce_matches_numpy(tau):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    got = contrastive.info_nce(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), tau)
    np.testing.assert_allclose(got, numpy_info_nce(a, b, tau), rtol=1e-5)


def test_info_nce_is_scale_invariant_and_rewards_alignment():
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.normal(size=(8, 16)), jnp.float32)
    noise = jnp.asarray(rng.normal(size=(8, 16)), jnp.float32)
    aligned, random = contrastive.info_nce(a, a + 0.01 * noise), contrastive.info_nce(a, noise)
    assert aligned < random
    np.testing.assert_allclose(contrastive.info_nce(3.0 * a, noise), random, rtol=1e-5)


def test_info_nce_gradient_is_finite_for_zero_rows():
    grad = jax.grad(contrastive.info_nce)(jnp.zeros((4, 3)), jnp.ones((4, 3)))
    assert np.all(np.isfinite(grad))


def test_info_nce_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        contrastive.info_nce(jnp.ones((4, 3)), jnp.ones((5, 3)))


def test_contrastive_accuracy():
    z = jnp.eye(5)
    assert contrastive.contrastive_accuracy(z, z) == 1.0
    assert contrastive.contrastive_accuracy(z, jnp.roll(z, 1, axis=0)) == 0.0

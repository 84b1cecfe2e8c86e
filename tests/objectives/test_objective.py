"""The objective's precision: every term is computed in float32, whatever the embeddings' dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from myna_rpe_jax.objectives.objective import Objective


@pytest.mark.parametrize("name", ["info_nce", "sogclr"])
def test_bfloat16_embeddings_give_the_float32_loss_of_the_same_values(name):
    """bfloat16 inputs are cast up before any arithmetic: the loss, each term and the new
    state equal those of the same (bfloat16-representable) values given in float32. A term
    computed in bfloat16 would be off by about 2^-8 relative."""
    objective = Objective(name=name, kmeans_weight=0.1, hull_weight=0.05, num_clusters=4)
    rng = np.random.default_rng(0)
    z_a, z_b = (jnp.asarray(rng.normal(size=(16, 32)), jnp.bfloat16) for _ in range(2))
    index = jnp.arange(16)
    state = objective.init_state(32, num_examples=16)
    run = lambda a, b, first: objective(a, b, state, index, jax.random.key(0), first)
    for first_step in (True, False):
        half = run(z_a, z_b, first_step)
        full = run(z_a.astype(jnp.float32), z_b.astype(jnp.float32), first_step)
        assert set(half[1]) == {name, "kmeans", "hull"}
        for got, expected in zip(jax.tree.leaves(half), jax.tree.leaves(full), strict=True):
            assert got.dtype == expected.dtype
            if jnp.issubdtype(got.dtype, jnp.floating):
                assert got.dtype == jnp.float32
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        state = half[2]

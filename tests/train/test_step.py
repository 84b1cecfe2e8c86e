"""The optimizer of `train/step.py`: weight decay on the weight matrices only."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import tiny
from myna_rpe_jax.model import vit
from myna_rpe_jax.train import step

# One model with the learned absolute table, one with the frequency table: every kind of
# parameter the encoder has.
POSEMBS = [("learned", "alibi2d", "rope"), ("alibi1d", "freq")]
KERNELS = [
    "MlpBlock_0/Dense_0",
    "MlpBlock_0/Dense_1",
    "SelfAttention_0/query",
    "SelfAttention_0/key",
    "SelfAttention_0/value",
    "SelfAttention_0/out",
]


def tiny_params(posemb):
    config = tiny.get_config()
    config.model.posemb = posemb
    encoder = vit.encoder_from_config(config.model)
    x = jnp.zeros((2, 128, 64))
    rngs = {"params": jax.random.key(0), "patchout": jax.random.key(1)}
    params = encoder.init(rngs, x, train=True)["params"]
    # Biases and LayerNorm offsets start at 0, where decay would not show: make every leaf
    # nonzero.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    noisy = [leaf + jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys, strict=True)]
    return encoder, jax.tree.unflatten(treedef, noisy)


def flat(tree):
    return {"/".join(path): leaf for path, leaf in flax.traverse_util.flatten_dict(tree).items()}


@pytest.mark.parametrize("posemb", POSEMBS, ids="+".join)
def test_decay_mask_marks_exactly_the_dense_kernels(posemb):
    encoder, params = tiny_params(posemb)
    mask = flat(step.decay_mask(params))
    expected = {"patch_embed/kernel"} | {
        f"block_{i}/{layer}/kernel" for i in range(encoder.depth) for layer in KERNELS
    }
    assert {path for path, decayed in mask.items() if decayed} == expected
    kept = {path for path, decayed in mask.items() if not decayed}
    table = "posemb_learned/table" if "learned" in posemb else "posemb_freq/table"
    assert {"cls", table, "final_norm/scale", "final_norm/bias", "patch_embed/bias"} <= kept
    assert all(path.endswith(("bias", "scale", "cls", "table")) for path in kept)


@pytest.mark.parametrize("posemb", POSEMBS, ids="+".join)
def test_zero_gradient_steps_decay_only_the_masked_in_params_by_lr_wd(posemb):
    """AdamW with g = 0 has zero moments, so each step is p <- p - lr_t * wd * p on the
    decayed leaves (decoupled weight decay) and leaves every other parameter unchanged."""
    _, params = tiny_params(posemb)
    optim = tiny.get_config().optim
    optim.update(learning_rate=0.1, weight_decay=0.5, warmup_fraction=0.0)
    tx, schedule = step.make_optimizer(optim, total_steps=10)
    opt_state = tx.init(params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    current = params
    num_steps = 3
    for _ in range(num_steps):
        updates, opt_state = tx.update(zeros, opt_state, current)
        current = optax.apply_updates(current, updates)
    factor = np.prod([1.0 - float(schedule(t)) * optim.weight_decay for t in range(num_steps)])
    assert factor < 0.95  # the decay is visible
    mask, before, after = flat(step.decay_mask(params)), flat(params), flat(current)
    for path, decayed in mask.items():
        if decayed:
            np.testing.assert_allclose(after[path], factor * before[path], rtol=1e-5, err_msg=path)
        else:
            np.testing.assert_array_equal(after[path], before[path], err_msg=path)

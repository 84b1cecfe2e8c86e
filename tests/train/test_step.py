"""The optimizer of `train/step.py`: weight decay on the weight matrices only, and gradient
clipping as optax does it."""

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


def reference_optimizer(optim, schedule):
    """The optimizer as optax writes it: clip_by_global_norm, then masked AdamW."""
    return optax.chain(
        optax.clip_by_global_norm(optim.grad_clip_norm),
        optax.adamw(
            schedule,
            b1=optim.b1,
            b2=optim.b2,
            weight_decay=optim.weight_decay,
            mask=step.decay_mask,
        ),
    )


@pytest.mark.parametrize("grad_scale", [1e-4, 10.0], ids=["unclipped", "clipped"])
def test_optimizer_matches_optax_clip_then_adamw(grad_scale):
    """Same state tree as optax's chain (checkpoints restore either way) and the same updates:
    bit-identical below the clipping norm, within float rounding above it."""
    _, params = tiny_params(POSEMBS[0])
    optim = tiny.get_config().optim
    optim.update(learning_rate=0.1, weight_decay=0.5, warmup_fraction=0.0)
    tx, schedule = step.make_optimizer(optim, total_steps=10)
    ref = reference_optimizer(optim, schedule)
    state, ref_state = tx.init(params), ref.init(params)
    assert jax.tree.structure(state) == jax.tree.structure(ref_state)
    current, ref_current = params, params
    leaves, treedef = jax.tree.flatten(params)
    for t in range(3):
        keys = jax.random.split(jax.random.key(10 + t), len(leaves))
        noise = [jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
        grads = jax.tree.unflatten(treedef, [grad_scale * n for n in noise])
        assert (float(optax.tree.norm(grads)) > optim.grad_clip_norm) == (grad_scale > 1)
        updates, state = jax.jit(tx.update)(grads, state, current)
        ref_updates, ref_state = jax.jit(ref.update)(grads, ref_state, ref_current)
        current = optax.apply_updates(current, updates)
        ref_current = optax.apply_updates(ref_current, ref_updates)
    check = (
        np.testing.assert_array_equal
        if grad_scale < 1
        else lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    )
    jax.tree.map(check, (current, state), (ref_current, ref_state))

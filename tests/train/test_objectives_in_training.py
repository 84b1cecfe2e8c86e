"""Training with the extra loss terms (SogCLR, k-means, convex hull) and variable-length chunks."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from myna_rpe_jax.model import vit
from myna_rpe_jax.objectives.objective import Objective
from myna_rpe_jax.run import checkpoints
from myna_rpe_jax.train import loop, pairs, sources


def restored_state(workdir, step: int) -> dict:
    """A checkpoint of a workdir as a plain dict of numpy arrays."""
    manager = checkpoints.checkpoint_manager(workdir, async_save=False)
    return manager.restore(step, args=ocp.args.StandardRestore())


def test_sogclr_and_kmeans_state_survive_checkpoint_and_resume(tiny_config, tmp_path):
    tiny_config.loss.update(name="sogclr", num_clusters=4, kmeans_weight=0.1, hull_weight=0.05)
    tiny_config.total_steps = 4
    tiny_config.checkpoint_every = 2
    straight = loop.train(tiny_config, str(tmp_path / "straight"))
    first = loop.train(tiny_config, str(tmp_path / "resumed"), stop_after=2)
    second = loop.train(tiny_config, str(tmp_path / "resumed"))
    assert [h["step"] for h in first + second] == [1, 2, 3, 4]

    # Each term is logged on its own, and the total is their weighted sum.
    for h in straight:
        total = h["loss_sogclr"] + 0.1 * h["loss_kmeans"] + 0.05 * h["loss_hull"]
        np.testing.assert_allclose(h["loss"], total, rtol=1e-5)
    for key in ("loss", "loss_sogclr", "loss_kmeans", "loss_hull", "grad_norm", "param_norm"):
        np.testing.assert_array_equal(
            [h[key] for h in straight], [h[key] for h in first + second], err_msg=key
        )

    a, b = restored_state(tmp_path / "straight", 4), restored_state(tmp_path / "resumed", 4)
    flat_a, flat_b = jax.tree.leaves_with_path(a), jax.tree.leaves_with_path(b)
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    for (path, x), (_, y) in zip(flat_a, flat_b, strict=True):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))

    # After the first epoch's 2 steps, moving averages exist for exactly the tracks visited.
    source = sources.open_training_split(tiny_config.data)
    sampler = pairs.PairSampler(source, global_batch=8, chunk_frames=(64,))
    seen = np.unique(np.concatenate([sampler.global_indices(s) for s in range(2)]))
    log_u = restored_state(tmp_path / "resumed", 2)["loss_state"]["sogclr"]["log_u"]
    assert log_u.shape == (len(source), 2) and len(seen) < len(source)
    np.testing.assert_array_equal(np.flatnonzero(np.isfinite(log_u).all(1)), seen)
    # Centroids were seeded from and moved towards unit-norm embeddings, not left at zero.
    norms = np.linalg.norm(a["loss_state"]["centroids"], axis=1)
    assert a["loss_state"]["centroids"].shape == (4, 64)
    assert np.all((norms > 0.5) & (norms <= 1.0 + 1e-5)), norms


def test_variable_length_compiles_once_per_bucket(tiny_config, tmp_path):
    buckets = (32, 48, 64)
    tiny_config.data.chunk_frames = buckets
    tiny_config.total_steps = 8
    tiny_config.checkpoint_every = 100
    tiny_config.loss.update(kmeans_weight=0.1, num_clusters=4)
    compiled = []

    def on_event(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(on_event)
    try:
        history = loop.train(tiny_config, str(tmp_path))
    finally:
        jax.monitoring.unregister_event_duration_listener(on_event)
    sampler = pairs.PairSampler(range(18), global_batch=8, chunk_frames=buckets)
    drawn = {sampler.chunk_length(step) for step in range(8)}
    assert len(drawn) > 1, "the test needs several buckets among its steps"
    assert compiled.count("jit(train_step)") == len(drawn) <= len(buckets), compiled
    assert len(history) == 8 and all(np.isfinite(h["loss_kmeans"]) for h in history)


@pytest.mark.parametrize("frames", [32, 64, 256])
def test_patchout_keeps_the_same_fraction_at_every_chunk_length(frames):
    encoder = vit.Encoder(width=32, depth=1, num_heads=2, mlp_dim=64, patchout_keep=0.25)
    spec = jnp.zeros((2, 128, frames))
    rngs = {"params": jax.random.key(0), "patchout": jax.random.key(1)}
    (_, aux), _ = jax.eval_shape(lambda: encoder.init_with_output(rngs, spec, train=True))
    patches = (128 // 16) * (frames // 16)
    assert aux["coords"].shape == (2, patches // 4, 2)


def test_hull_term_trains_data_parallel_on_four_devices_without_hanging(tiny_config, tmp_path):
    """Regression: a batched Cholesky of the K cluster scatters deadlocked the 4-device CPU
    train step on 2 cores (convex_hull_loss now factors one matrix at a time). In a
    subprocess with a timeout, so a hang fails the test instead of stopping the suite."""
    import subprocess

    from tests.train.test_loop import overrides, run_train

    flags = ["--config.loss.hull_weight=0.05", "--config.loss.num_clusters=4"]
    proc = run_train(
        [f"--workdir={tmp_path}", "--config.total_steps=30", *flags, *overrides(tiny_config)]
    )
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the 4-device train step with the hull term hung (no step 30 in 240 s)")
    assert proc.returncode == 0, out
    assert "training on 4 devices" in out and "[30]" in out and "hull=" in out


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(name="simclr"), "config.loss.name must be one of"),
        (dict(sogclr_gamma=0.0), "config.loss.sogclr_gamma must be in"),
        (dict(kmeans_weight=-1.0), "config.loss.kmeans_weight must be >= 0"),
        (dict(kmeans_momentum=1.0), "config.loss.kmeans_momentum must be in"),
        (dict(hull_weight=1.0, num_clusters=17), "num_clusters 17 is more than the 16"),
        (dict(temprature=0.2), "unknown config.loss field"),
    ],
)
def test_bad_loss_config_names_the_field(tiny_config, tmp_path, fields, message):
    tiny_config.loss.unlock()
    tiny_config.loss.update(fields)
    with pytest.raises(ValueError, match=message):
        loop.train(tiny_config, str(tmp_path))


def test_objective_terms_and_state_follow_the_config():
    plain = Objective()
    assert plain.term_names == ("info_nce",) and plain.init_state(16, 10) == {}
    full = Objective(name="sogclr", kmeans_weight=0.5, hull_weight=0.1, num_clusters=3)
    assert full.term_names == ("sogclr", "kmeans", "hull")
    state = full.init_state(16, 10)
    assert state["centroids"].shape == (3, 16) and state["sogclr"].log_u.shape == (10, 2)
    assert Objective(hull_weight=0.1).term_names == ("info_nce", "hull")


def test_resuming_with_another_loss_config_explains_the_mismatch(tiny_config, tmp_path):
    tiny_config.total_steps = 1
    loop.train(tiny_config, str(tmp_path))
    tiny_config.total_steps = 2
    tiny_config.loss.name = "sogclr"
    with pytest.raises(ValueError, match="same config.model and config.loss"):
        loop.train(tiny_config, str(tmp_path))

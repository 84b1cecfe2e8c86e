"""Probe evaluators during pretraining: evals.jsonl and TensorBoard scores at step 0, every
eval_every steps and at the end; a resume does not repeat them; the scores follow what the
parameters learned."""

import json
import math

import jax
import numpy as np
import optax
import pytest
import tensorflow as tf

from myna_rpe_jax.data import locations
from myna_rpe_jax.data.chunks import crop_to_patches
from myna_rpe_jax.data.datasets import dataset_tasks, open_split
from myna_rpe_jax.errors import ConfigError
from myna_rpe_jax.model import vit
from myna_rpe_jax.run import checkpoints
from myna_rpe_jax.train import config_check, evals, loop
from myna_rpe_jax.train.step import init_state, make_optimizer
from tests.conftest import DEMO


def tensorboard_scalars(workdir) -> dict[str, dict[int, float]]:
    """tag -> step -> value of every scalar the run's event files hold."""
    found: dict[str, dict[int, float]] = {}
    for path in workdir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = (
                    float(tf.make_ndarray(value.tensor))
                    if value.HasField("tensor")
                    else value.simple_value
                )
                found.setdefault(value.tag, {})[event.step] = number
    return found


def with_evals(config, every=3, modes=("full",)):
    config.eval_every = every
    config.evals.update(datasets=("demo",), modes=modes)
    return config


def test_a_run_scores_its_probes_at_step_0_every_eval_every_and_at_the_end(tiny_config, tmp_path):
    config = with_evals(tiny_config)  # 6 steps, eval_every 3
    config.total_steps = 5
    loop.train(config, str(tmp_path))
    records = [json.loads(line) for line in (tmp_path / "evals.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 3, 5]
    tasks = dataset_tasks("demo")
    for record in records:
        assert record["seconds"] > 0
        assert {key.split("/")[2] for key in record["scores"]} == set(tasks)
        assert all(math.isfinite(v) for v in record["scores"].values())
    scalars = tensorboard_scalars(tmp_path)
    genre = scalars["eval/demo/full/genre/accuracy"]
    assert sorted(genre) == [0, 3, 5]
    assert genre[5] == pytest.approx(records[2]["scores"]["demo/full/genre/accuracy"], rel=1e-6)

    # A resume to step 8 adds step 6 and the new end, and repeats nothing.
    config.total_steps = 8
    loop.train(config, str(tmp_path))
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "evals.jsonl").read_text().splitlines()
    ]
    assert steps == [0, 3, 5, 6, 8]


def test_bad_evaluator_fields_stop_the_run_before_any_data_work(tiny_config):
    config = with_evals(tiny_config)
    config.evals.datasets = ("gtzann",)
    with pytest.raises(ConfigError, match="config.evals.datasets.*gtzann"):
        config_check.checked_config(config)
    config = with_evals(tiny_config, modes=("whole",))
    with pytest.raises(ConfigError, match="config.evals.modes"):
        config_check.checked_config(config)
    config = with_evals(tiny_config)
    config.model.posemb = ("learned",)
    with pytest.raises(ConfigError, match="cannot embed whole"):
        config_check.checked_config(config)


def genre_trained(encoder, params, config, steps=60):
    """`params` trained with a linear genre head on the demo's train split (supervised: a
    checkpoint made to separate the genres), returned without the head."""
    root = locations.data_root(config.data)
    source = open_split(
        "demo",
        locations.demo_data_dir(root, config.data.demo_tracks, config.data.demo_seconds, 0),
        "train",
    )
    examples = [source[i] for i in range(len(source))]
    frames = min(e["mel"].shape[1] for e in examples) // 16 * 16
    x = np.stack([crop_to_patches(e["mel"], 16)[:, :frames] for e in examples]).astype(np.float32)
    y = np.asarray([e["genre"] for e in examples])
    head = {"w": np.zeros((encoder.width, int(y.max()) + 1), np.float32)}
    tx = optax.adam(3e-3)
    both = {"encoder": params, "head": head}
    opt_state = tx.init(both)

    @jax.jit
    def step(both, opt_state):
        def loss(both):
            z, _ = encoder.apply({"params": both["encoder"]}, x, train=False)
            logits = z @ both["head"]["w"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss)(both)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(both, updates), opt_state

    for _ in range(steps):
        both, opt_state = step(both, opt_state)
    return both["encoder"]


def test_parameters_trained_to_separate_genres_score_above_their_step_0_row(tiny_config):
    config = config_check.checked_config(with_evals(tiny_config))
    encoder = vit.encoder_from_config(config.model)
    tx, _ = make_optimizer(config.optim, 10)
    sample = np.zeros((1, 128, 64), np.float32)
    params = init_state(encoder, tx, jax.random.key(config.seed), sample).params
    mel, _ = checkpoints.training_data_mel(config.data)
    evaluator = evals.ProbeEvaluator(config, encoder, params, mel)
    before = evaluator(params, 0)["demo/full/genre/accuracy"]
    after = evaluator(genre_trained(encoder, params, config), 1)["demo/full/genre/accuracy"]
    assert after > before


def test_a_dataset_too_large_for_memory_is_read_again_at_every_evaluation(demo_root):
    demo = locations.demo_data_dir(demo_root, DEMO["tracks"], DEMO["seconds"], DEMO["seed"])
    sources = [open_split("demo", demo, split) for split in ("train", "valid", "test")]
    kept, streamed = evals.LabelledSplits(sources), evals.LabelledSplits(sources, budget=1)
    assert kept.kept is not None and streamed.kept is None
    assert len(kept) == len(streamed) == DEMO["tracks"]
    for _ in range(2):
        pairs = zip(kept, streamed, strict=True)
        for a, b in pairs:
            assert a.track_id == b.track_id and a.labels.keys() == b.labels.keys()
            for key in a.labels:
                np.testing.assert_array_equal(a.labels[key], b.labels[key])
            np.testing.assert_array_equal(a.mel, b.mel)

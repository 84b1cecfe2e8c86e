"""The training loop: data, init or resume, jitted steps, metrics, checkpoints.

One pure, jitted step (`step.train_step`), data-parallel over a ("data",) mesh of every device
of every process: two patchout views of two chunks per track through the encoder, and the
objective of `config.loss` over the global batch (InfoNCE or SogCLR, plus optional k-means and
convex-hull terms; `Objective`), each term logged as `loss_<term>`. With several
`config.data.chunk_frames` buckets the step compiles once per bucket.
Checkpoints (orbax) go to WORKDIR/checkpoints and a rerun resumes from the latest one; the
batch of a step is a pure function of (seed, step), so the resumed run sees the same data.
TensorBoard summaries go to WORKDIR. With `config.eval_every` and `config.evals.datasets`,
linear probes of the current parameters are scored at step 0, every eval_every steps and at
the end (`evals`: WORKDIR/evals.jsonl and TensorBoard's eval/...).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from myna_rpe_jax import distributed, failures
from myna_rpe_jax.errors import UserError
from myna_rpe_jax.model import vit
from myna_rpe_jax.objectives.objective import Objective
from myna_rpe_jax.run import checkpoints
from myna_rpe_jax.train import config_check, evals, pairs, sources
from myna_rpe_jax.train.step import init_state, make_optimizer, train_step


class NonFiniteLossError(UserError, FloatingPointError):
    """Training diverged; the message says which checkpoint is intact and what to try."""


def _check_finite(summary: dict, step: int, last_saved: int | None, workdir: str) -> None:
    if summary["nonfinite_steps"] > 0 or not np.isfinite(summary["loss"]):
        kept = (
            f"the last good checkpoint (step {last_saved}) is intact in {workdir}/checkpoints"
            if last_saved is not None
            else "no checkpoint had been saved yet"
        )
        raise NonFiniteLossError(
            f"loss, gradient or parameters became NaN/inf at or before step {step}; stopped without"
            f" saving: {kept}. Try a lower --config.optim.learning_rate, a longer warmup, or"
            " --config.model.dtype=float32."
        )


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    return config.total_steps if config.total_steps > 0 else config.epochs * steps_per_epoch


def _resumed_state(manager, init, args: tuple, sharding, workdir: str):
    """The train state of the latest checkpoint, restored into the shapes `init(*args)` gives
    (placed by `sharding`). A damaged checkpoint, or one of another config's train state, is
    a ValueError that says which, and what to do."""
    abstract = jax.eval_shape(init, *args)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract
    )
    try:
        return checkpoints.restore(manager, abstract)
    except Exception as e:  # orbax raises bare Exceptions for damaged files
        step, folder = manager.latest_step(), Path(workdir) / "checkpoints"
        if problem := checkpoints.damage(workdir, step):
            earlier = [n for n in manager.all_steps() if n < step]
            fix = f"to resume from step {max(earlier)}" if earlier else "to start afresh"
            raise ValueError(
                f"the checkpoint at step {step} in {folder} cannot be read, its files are"
                f" damaged or incomplete ({problem}). Move {folder / str(step)} out of"
                f" {folder} {fix}, or train in a fresh --workdir"
            ) from e
        if not isinstance(e, ValueError):
            raise
        raise ValueError(
            f"the checkpoint at step {step} in {folder} does not"
            f" fit the train state of this config ({checkpoints.error_gist(e)}). Resume with"
            f" the config the run started with ({workdir}/{checkpoints.CONFIG_FILE}: same"
            " config.model and config.loss), or train in a fresh --workdir"
            " (MYNA_RPE_DEBUG=1 shows orbax's whole message)."
        ) from e


def _record_config(workdir: str, config: ml_collections.ConfigDict, step: int) -> None:
    """Writes the run's config.json; a resume (step > 0) with a changed config archives the
    old one and warns with what changed."""
    # A field added to the code since the run started is no change where it keeps the value
    # the run had without it.
    absent = {f"model.{name}": value for name, value in vit.absent_field_values().items()}
    changes = checkpoints.write_config(workdir, config, step, absent)
    if changes and step > 0:
        listed = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
        logging.warning(
            "resuming at step %d with a changed config (%s); the previous one is kept as"
            " %s/config.until_step%d.json",
            step,
            listed,
            workdir,
            step,
        )


def train(
    config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
) -> list[dict]:
    """Trains (or resumes) in `workdir`; returns the logged metric summaries.

    `stop_after` ends this run after that step with a checkpoint, as a preempted job would;
    rerunning resumes there.
    """
    config = config_check.checked_config(config)  # before any data work; derives fields
    workdir = str(Path(workdir).absolute())
    mesh = distributed.data_mesh()
    objective = Objective.from_config(config.loss, config.batch_size)
    source = sources.open_training_split(config.data)
    with failures.all_or_none("checking the training data's log-mel settings"):
        mel = checkpoints.record_features(workdir, config.data)  # features.json; resume: same
    sampler = pairs.PairSampler(
        source,
        global_batch=config.batch_size,
        chunk_frames=tuple(config.data.chunk_frames),
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    num_steps = total_steps(config, sampler.steps_per_epoch)
    logging.info(
        "training on %d devices (%d processes), global batch %d, %d steps, objective %s",
        jax.device_count(),
        jax.process_count(),
        config.batch_size,
        num_steps,
        objective,
    )
    tx, schedule = make_optimizer(config.optim, num_steps)
    encoder = vit.encoder_from_config(config.model)
    root_rng = jax.random.key(config.seed)

    sample = jnp.zeros((1, config.model.n_mels, max(config.data.chunk_frames)), jnp.float32)
    repl = distributed.replicated(mesh)
    init = jax.jit(
        functools.partial(
            init_state, encoder, tx, objective=objective, num_examples=len(sampler.source)
        ),
        out_shardings=repl,
    )
    manager = checkpoints.checkpoint_manager(workdir, config.keep_checkpoints)
    if manager.latest_step() is not None:
        state = _resumed_state(manager, init, (root_rng, sample), repl, workdir)
        logging.info("Resumed from step %d", int(state.step))
    else:
        state = init(root_rng, sample)
    if jax.process_index() == 0:
        _record_config(workdir, config, int(state.step))

    step_fn = jax.jit(
        functools.partial(
            train_step,
            encoder=encoder,
            tx=tx,
            schedule=schedule,
            objective=objective,
        ),
        in_shardings=(repl, distributed.batch_sharded(mesh), repl),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )
    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer)

    start = int(state.step)
    last_step = num_steps if stop_after is None else min(stop_after, num_steps)
    if start >= last_step:
        logging.info("the run is at step %d of %d already: nothing left to train", start, num_steps)
    evaluator = evals.evaluator_from_config(config, encoder, state.params, mel)
    evaluated, run_start = evals.logged_steps(workdir), time.perf_counter()

    def evaluate(step: int, params) -> float:
        """Probes `params` when `step` is an eval step; returns the seconds it took."""
        if evaluator is None or step in evaluated:
            return 0.0
        if not evals.is_eval_step(step, config.eval_every, num_steps):
            return 0.0
        before = evaluator.seconds
        scores = evaluator(params, step)
        seconds = evaluator.seconds - before
        writer.write_scalars(step, {f"eval/{name}": value for name, value in scores.items()})
        evals.append_record(workdir, {"step": step, "seconds": seconds, "scores": scores})
        evaluated.add(step)
        share = evaluator.seconds / max(time.perf_counter() - run_start, 1e-9)
        shown = ", ".join(f"{name} {value:.3f}" for name, value in scores.items())
        logging.info(
            "eval at step %d (%.1f s; evaluation is %.0f%% of this run's time): %s",
            step,
            seconds,
            100 * share,
            shown,
        )
        return seconds

    evaluate(start, state.params)  # step 0 of a fresh run: the random-initialisation row
    last_saved = manager.latest_step()
    history, accumulated, tick = [], None, time.perf_counter()
    batches = sampler.iterate(start, config.data.prefetch, config.data.read_threads)
    with checkpoints.saves_finished(manager):
        for step in range(start + 1, last_step + 1):
            batch = distributed.global_batch_from_local(next(batches), mesh)
            state, step_metrics = step_fn(state, batch, root_rng)
            accumulated = step_metrics if accumulated is None else accumulated.merge(step_metrics)
            report(step)
            # A preemption save is checked for NaN like any other, or a diverged state could
            # be saved and later named the last good checkpoint.
            preempted = manager.reached_preemption(step)
            should_save = step % config.checkpoint_every == 0 or step == last_step or preempted
            if step % config.log_every == 0 or should_save:
                summary = {k: float(v) for k, v in accumulated.compute().items()}
                _check_finite(summary, step, last_saved, workdir)
                now = time.perf_counter()
                steps_done = step - (history[-1]["step"] if history else start)
                summary["examples_per_sec"] = config.batch_size * steps_done / (now - tick)
                writer.write_scalars(step, summary)
                history.append({"step": step, **summary})
                accumulated, tick = None, now
            if should_save:
                checkpoints.save(manager, step, state)
                last_saved = step
            tick += evaluate(step, state.params)  # examples/s counts training alone
    writer.flush()
    return history

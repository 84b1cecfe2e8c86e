"""Contrastive pretraining of the Myna-RPE encoder.

python -m myna_rpe_jax.train --config=configs/alibi2d.py --workdir=runs/alibi2d \
    [--config.total_steps=1000 --config.batch_size=256 ...]

One pure, jitted step, data-parallel over a ("data",) mesh of every device of every process:
two patchout views of two chunks per track through the encoder, and the objective of
`config.loss` over the global batch (InfoNCE or SogCLR, plus optional k-means and convex-hull
terms; `losses.Objective`), each term logged as `loss_<term>`. With several
`config.data.chunk_frames` buckets the step compiles once per bucket.
Checkpoints (orbax) go to WORKDIR/checkpoints and a rerun resumes from the latest one; the
batch of a step is a pure function of (seed, step), so the resumed run sees the same data.
TensorBoard summaries go to WORKDIR.
"""

from __future__ import annotations

import functools
import logging as std_logging
import time
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from clu import metric_writers, metrics, periodic_actions
from ml_collections import config_flags

from myna_rpe_jax import checkpointing, distributed, input_pipeline, losses, model, training_data


@flax.struct.dataclass
class TrainState:
    """Everything a step changes, and all a checkpoint holds.

    step: number of completed steps; also the data position (the next batch is step `step`).
    loss_state: the objective's own state (`losses.Objective.init_state`): k-means centroids,
      SogCLR's per-example moving averages; {} for plain InfoNCE.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    loss_state: Any = flax.struct.field(default_factory=dict)


INFO_NCE = losses.Objective()  # Myna-RPE's loss: symmetric InfoNCE, temperature 0.1


@functools.cache
def metrics_collection(terms: tuple[str, ...]) -> type[metrics.Collection]:
    """The metrics of a step: the total loss, `loss_<term>` for each objective term, and more.

    Cached, so every trace (one per chunk-length bucket) yields the same class to merge.
    """
    return metrics.Collection.create(
        loss=metrics.Average.from_output("loss"),
        **{f"loss_{term}": metrics.Average.from_output(f"loss_{term}") for term in terms},
        contrastive_accuracy=metrics.Average.from_output("contrastive_accuracy"),
        grad_norm=metrics.Average.from_output("grad_norm"),
        param_norm=metrics.LastValue.from_output("param_norm"),
        learning_rate=metrics.LastValue.from_output("learning_rate"),
        nonfinite_steps=metrics.Average.from_output("nonfinite"),
    )


def make_optimizer(
    optim: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with linear warmup and cosine decay to 0, after global-norm gradient clipping."""
    warmup = int(optim.warmup_fraction * total_steps)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, optim.learning_rate, warmup_steps=max(warmup, 1), decay_steps=max(total_steps, 2)
    )
    tx = optax.chain(
        optax.clip_by_global_norm(optim.grad_clip_norm),
        optax.adamw(schedule, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay),
    )
    return tx, schedule


def init_state(
    encoder: model.Encoder,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    sample: jax.Array,
    *,
    objective: losses.Objective | None = None,
    num_examples: int = 1,
) -> TrainState:
    """A fresh state; `num_examples` (the training-set size) sizes SogCLR's state."""
    params = encoder.init({"params": rng, "patchout": rng}, sample, train=True)["params"]
    loss_state = objective.init_state(encoder.width, num_examples) if objective else {}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        loss_state=loss_state,
    )


def train_step(
    state: TrainState,
    batch: dict,
    rng: jax.Array,
    *,
    encoder: model.Encoder,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    objective: losses.Objective = INFO_NCE,
) -> tuple[TrainState, metrics.Collection]:
    """One update on a global batch of positive pairs.

    Args:
      state: the train state.
      batch: view_a, view_b [B, n_mels, frames] the two chunks of each track; index [B].
      rng: the run's root key; this step's key is fold_in(rng, step).
      objective: the loss and its extra terms (`losses.Objective`, from config.loss).

    Returns:
      the new state and this step's metrics.
    """
    step_rng = jax.random.fold_in(rng, state.step)
    patchout_rng, objective_rng = (jax.random.fold_in(step_rng, i) for i in range(2))
    # [B, 2, F, T] -> [2B, F, T] keeps both views of a track on the device that holds it.
    views = jnp.stack([batch["view_a"], batch["view_b"]], axis=1)
    views = views.reshape(-1, *views.shape[2:])

    def loss_fn(params):
        z, _ = encoder.apply({"params": params}, views, train=True, rngs={"patchout": patchout_rng})
        z = z.reshape(-1, 2, z.shape[-1])
        z_a, z_b = z[:, 0], z[:, 1]
        loss, terms, loss_state = objective(
            z_a, z_b, state.loss_state, batch["index"], objective_rng, state.step == 0
        )
        return loss, (z_a, z_b, terms, loss_state)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (z_a, z_b, terms, loss_state)), grads = grad_fn(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm, param_norm = optax.tree.norm(grads), optax.tree.norm(params)
    # A finite loss and gradient can still give NaN parameters (e.g. a NaN learning rate).
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
    step_metrics = metrics_collection(tuple(terms)).single_from_model_output(
        loss=loss,
        **{f"loss_{term}": value for term, value in terms.items()},
        contrastive_accuracy=losses.contrastive_accuracy(z_a, z_b),
        grad_norm=grad_norm,
        param_norm=param_norm,
        learning_rate=schedule(state.step),
        nonfinite=(~finite).astype(jnp.float32),
    )
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, loss_state=loss_state
    )
    return new_state, step_metrics


class NonFiniteLossError(FloatingPointError):
    pass


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


def train(
    config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
) -> list[dict]:
    """Trains (or resumes) in `workdir`; returns the logged metric summaries.

    `stop_after` ends this run after that step with a checkpoint, as a preempted job would;
    rerunning resumes there.
    """
    workdir = str(Path(workdir).absolute())
    mesh = distributed.data_mesh()
    if config.batch_size % jax.device_count():
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by the {jax.device_count()}"
            " devices; choose a multiple of the device count."
        )
    objective = losses.Objective.from_config(config.loss, config.batch_size)
    source = training_data.open_training_split(config.data)
    sampler = input_pipeline.PairSampler(
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
    encoder = model.encoder_from_config(config.model)
    root_rng = jax.random.key(config.seed)

    sample = jnp.zeros((1, config.model.n_mels, max(config.data.chunk_frames)), jnp.float32)
    repl = distributed.replicated(mesh)
    init = jax.jit(
        functools.partial(
            init_state, encoder, tx, objective=objective, num_examples=len(sampler.source)
        ),
        out_shardings=repl,
    )
    manager = checkpointing.checkpoint_manager(workdir, config.keep_checkpoints)
    if manager.latest_step() is not None:
        abstract = jax.eval_shape(init, root_rng, sample)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), abstract
        )
        try:
            state = checkpointing.restore(manager, abstract)
        except ValueError as e:
            raise ValueError(
                f"the checkpoint at step {manager.latest_step()} in {workdir}/checkpoints does not"
                f" fit the train state of this config ({e}). Resume with the config the run"
                f" started with ({workdir}/{checkpointing.CONFIG_FILE}: same config.model and"
                " config.loss), or train in a fresh --workdir."
            ) from e
        logging.info("Resumed from step %d", int(state.step))
    else:
        state = init(root_rng, sample)
    if jax.process_index() == 0:
        changes = checkpointing.write_config(workdir, config, int(state.step))
        if changes and int(state.step) > 0:
            listed = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
            logging.warning(
                "resuming at step %d with a changed config (%s); the previous one is kept as"
                " %s/config.until_step%d.json",
                int(state.step),
                listed,
                workdir,
                int(state.step),
            )

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
    last_saved = manager.latest_step()
    history, accumulated, tick = [], None, time.perf_counter()
    batches = sampler.iterate(start, config.data.prefetch, config.data.read_threads)
    last_step = num_steps if stop_after is None else min(stop_after, num_steps)
    for step in range(start + 1, last_step + 1):
        batch = distributed.global_batch_from_local(next(batches), mesh)
        state, step_metrics = step_fn(state, batch, root_rng)
        accumulated = step_metrics if accumulated is None else accumulated.merge(step_metrics)
        report(step)
        is_last = step == last_step
        should_save = step % config.checkpoint_every == 0 or is_last
        if step % config.log_every == 0 or should_save:
            summary = {k: float(v) for k, v in accumulated.compute().items()}
            _check_finite(summary, step, last_saved, workdir)
            now = time.perf_counter()
            steps_done = step - (history[-1]["step"] if history else start)
            summary["examples_per_sec"] = config.batch_size * steps_done / (now - tick)
            writer.write_scalars(step, summary)
            history.append({"step": step, **summary})
            accumulated, tick = None, now
        if should_save or manager.reached_preemption(step):
            checkpointing.save(manager, step, state)
            last_saved = step
    manager.wait_until_finished()
    writer.flush()
    return history


def _quiet_orbax_info_logs() -> None:
    """Orbax logs every save step by step at INFO; keep its warnings, drop the rest."""
    logging.get_absl_logger().addFilter(
        lambda record: record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _quiet_orbax_info_logs()
    distributed.maybe_initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    history = train(_CONFIG.value, _WORKDIR.value)
    if history and jax.process_index() == 0:
        logging.info("done: step %d, loss %.4f", history[-1]["step"], history[-1]["loss"])


_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/alibi2d.py; override fields with --config.x=y."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and summaries.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "Multi-host: host:port of process 0 (not needed under SLURM)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "Multi-host: this process's index.")

if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)

"""The train state, the optimizer and the pure train step of contrastive pretraining."""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from clu import metrics

from myna_rpe_jax.model import vit
from myna_rpe_jax.objectives import contrastive
from myna_rpe_jax.objectives.objective import Objective


@flax.struct.dataclass
class TrainState:
    """Everything a step changes, and all a checkpoint holds.

    step: number of completed steps; also the data position (the next batch is step `step`).
    loss_state: the objective's own state (`Objective.init_state`): k-means centroids,
      SogCLR's per-example moving averages; {} for plain InfoNCE.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    loss_state: Any = flax.struct.field(default_factory=dict)


INFO_NCE = Objective()  # Myna-RPE's loss: symmetric InfoNCE, temperature 0.1


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


def decay_mask(params: Any) -> Any:
    """Which parameters weight decay applies to: a pytree of bools shaped like `params`.

    The weight matrices only, i.e. the `kernel` of every Dense / DenseGeneral layer (the patch
    embedding, attention projections and MLPs); not biases, LayerNorm scales, the CLS token or
    the positional tables (as MAE and big_vision).
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params
    )


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """`optax.clip_by_global_norm` as one scalar factor: g * min(1, max_norm / ||g||).

    The same (empty) state and the same clipped gradients up to float rounding, bit-identical
    when ||g|| < max_norm. optax's select(||g|| < max_norm, g, (g / ||g||) * max_norm) makes
    XLA:CPU write g / ||g|| out as a second gradient tree (a divide is too costly to repeat in
    each consumer), which both moment updates then read beside g: four extra passes over every
    parameter per step. A multiply by a scalar fuses into the moment updates instead.
    """

    def update(updates, state, params=None):
        del params
        g_norm = optax.tree.norm(updates)
        factor = jnp.where(g_norm < max_norm, 1.0, max_norm / g_norm)
        return jax.tree.map(lambda g: g * factor.astype(g.dtype), updates), state

    return optax.GradientTransformation(optax.init_empty_state, update)


def make_optimizer(
    optim: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with linear warmup and cosine decay to 0, after global-norm gradient clipping;
    weight decay on the weight matrices only (`decay_mask`). Its state is that of
    optax.chain(optax.clip_by_global_norm, optax.adamw), so checkpoints of either restore."""
    warmup = int(optim.warmup_fraction * total_steps)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, optim.learning_rate, warmup_steps=max(warmup, 1), decay_steps=max(total_steps, 2)
    )
    tx = optax.chain(
        clip_by_global_norm(optim.grad_clip_norm),
        optax.adamw(
            schedule,
            b1=optim.b1,
            b2=optim.b2,
            weight_decay=optim.weight_decay,
            mask=decay_mask,
        ),
    )
    return tx, schedule


def init_state(
    encoder: vit.Encoder,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    sample: jax.Array,
    *,
    objective: Objective | None = None,
    num_examples: int = 1,
) -> TrainState:
    """A fresh state; `num_examples` (the training-set size) sizes SogCLR's state."""
    params = vit.init_params(encoder, rng, sample)
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
    encoder: vit.Encoder,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    objective: Objective = INFO_NCE,
) -> tuple[TrainState, metrics.Collection]:
    """One update on a global batch of positive pairs.

    Args:
      state: the train state.
      batch: view_a, view_b [B, n_mels, frames] the two chunks of each track; index [B].
      rng: the run's root key; this step's key is fold_in(rng, step).
      objective: the loss and its extra terms (`Objective`, from config.loss).

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
        contrastive_accuracy=contrastive.contrastive_accuracy(z_a, z_b),
        grad_norm=grad_norm,
        param_norm=param_norm,
        learning_rate=schedule(state.step),
        nonfinite=(~finite).astype(jnp.float32),
    )
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, loss_state=loss_state
    )
    return new_state, step_metrics

"""SogCLR: a global contrastive loss with a per-example moving average (Myna's objective).

Yuan et al. (ICML 2022); Myna uses tau = 0.1, gamma = 0.9. The batch's softmax normaliser
g_i = mean_{j in N_i} exp(s_ij / tau) over anchor i's negatives N_i (both views: 2(B - 1)) is
replaced by a moving average u_i <- (1 - gamma) u_i + gamma g_i, kept per example and
direction in the train state (`SogclrState`, in the log domain). `sogclr_loss` is a surrogate
whose gradient is SogCLR's estimator and whose value is its running estimate of the global
loss. docs/losses.md derives it and relates it to InfoNCE and to the authors' code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from myna_rpe_jax.objectives.contrastive import l2_normalize

NUM_DIRECTIONS = 2


def _direction(
    anchor: jax.Array,
    other: jax.Array,
    log_u: jax.Array,
    temperature: float,
    gamma: float,
    same_view_negatives: bool,
) -> tuple[jax.Array, jax.Array]:
    """Per-anchor surrogate [B] and new log u [B] for anchors `anchor` [B, D] (unit rows)."""
    batch = anchor.shape[0]
    cross = anchor @ other.T / temperature  # [B, B], positives on the diagonal
    positive = jnp.diagonal(cross)
    off_diagonal = ~jnp.eye(batch, dtype=bool)
    if same_view_negatives:
        logits = jnp.concatenate([cross, anchor @ anchor.T / temperature], axis=1)
        is_negative = jnp.concatenate([off_diagonal, off_diagonal], axis=1)
    else:
        logits, is_negative = cross, off_diagonal
    num_negatives = (2 if same_view_negatives else 1) * (batch - 1)
    negatives = jnp.where(is_negative, logits, -jnp.inf)
    log_g = jax.nn.logsumexp(negatives, axis=1) - jnp.log(num_negatives)  # batch estimate
    # u <- (1 - gamma) u + gamma g, in the log domain; gamma = 1 gives log(0) + log_u = -inf.
    log_u_new = jax.lax.stop_gradient(
        jnp.logaddexp(jnp.log1p(-gamma) + log_u, jnp.log(gamma) + log_g)
    )
    weights = jax.lax.stop_gradient(jnp.exp(negatives - log_u_new[:, None]))  # 0 off N_i
    # Value: -s_ii/tau + log u_i. Gradient: -grad s_ii/tau + mean_j w_ij grad s_ij/tau.
    weighted = jnp.sum(weights * (logits - jax.lax.stop_gradient(logits)), axis=1)
    return -positive + log_u_new + weighted / num_negatives, log_u_new


def sogclr_loss(
    z_a: jax.Array,
    z_b: jax.Array,
    log_u: jax.Array,
    temperature: float = 0.1,
    gamma: float = 0.9,
    same_view_negatives: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """SogCLR loss of a batch and the moving averages to store back (see docs/losses.md).

    Args:
      z_a, z_b: [B, D] embeddings of the two views; row i of each is example i (any scale:
        normalised here). B >= 2.
      log_u: [B, 2] log moving averages of this batch's examples, `state.gather(ids)`;
        column 0 for anchors from view a, column 1 for view b; -inf for unseen examples.
      temperature: tau.
      gamma: weight of the current batch in u <- (1 - gamma) u + gamma g, in (0, 1];
        gamma = 1 uses the batch estimate only (the plain mini-batch loss).
      same_view_negatives: negatives of an anchor are the other examples of both views
        (2(B - 1), SimCLR and SogCLR) or only of the other view (B - 1, as in InfoNCE).

    Returns:
      (loss, new_log_u): scalar loss (mean over anchors and both directions), and [B, 2]
      updated log u to write back with `state.scatter(ids, new_log_u)`.
    """
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(f"expected z_a, z_b of one shape [B, D], got {z_a.shape}, {z_b.shape}")
    batch = z_a.shape[0]
    if batch < 2:
        raise ValueError(f"SogCLR needs at least 2 examples per batch for negatives, got {batch}")
    if log_u.shape != (batch, NUM_DIRECTIONS):
        raise ValueError(
            f"log_u must be [B, 2] = {(batch, NUM_DIRECTIONS)} (SogclrState.gather(ids)), "
            f"got {log_u.shape}"
        )
    if isinstance(gamma, int | float) and not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    x_a, x_b = l2_normalize(z_a), l2_normalize(z_b)
    log_u = log_u.astype(jnp.float32)
    loss_a, new_a = _direction(x_a, x_b, log_u[:, 0], temperature, gamma, same_view_negatives)
    loss_b, new_b = _direction(x_b, x_a, log_u[:, 1], temperature, gamma, same_view_negatives)
    return 0.5 * (loss_a.mean() + loss_b.mean()), jnp.stack([new_a, new_b], axis=1)


@struct.dataclass
class SogclrState:
    """Per-example SogCLR moving averages, a pytree to keep in the train state and checkpoint.

    log_u: [num_examples, 2] float32, indexed by the dataset example id that the input
    pipeline provides with every example; ids must lie in [0, num_examples): ids past the end
    read as unseen and are not written, and negative ids index from the end, as in numpy.
    """

    log_u: jax.Array

    @classmethod
    def create(cls, num_examples: int) -> SogclrState:
        """All examples unseen (u = 0)."""
        if num_examples < 1:
            raise ValueError(f"num_examples must be >= 1, got {num_examples}")
        return cls(log_u=jnp.full((num_examples, NUM_DIRECTIONS), -jnp.inf, jnp.float32))

    def gather(self, ids: jax.Array) -> jax.Array:
        """log u of a batch: ids [B] int -> [B, 2]."""
        return self.log_u.at[ids].get(mode="fill", fill_value=-jnp.inf)

    def scatter(self, ids: jax.Array, new_log_u: jax.Array) -> SogclrState:
        """Writes back [B, 2] new values for ids [B] (any order).

        An id that occurs several times in the batch (sampling with replacement, padding)
        gets the mean of its new u values, so the result does not depend on the order.
        """
        if new_log_u.shape != (*ids.shape, NUM_DIRECTIONS):
            raise ValueError(f"new_log_u must be [B, 2] for ids {ids.shape}, got {new_log_u.shape}")
        new_log_u = new_log_u.astype(jnp.float32)
        # Log of the mean of exp(new_log_u) per id, shifted by the per-id max for stability.
        peak = jnp.full_like(self.log_u, -jnp.inf).at[ids].max(new_log_u, mode="drop")
        peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
        sums = jnp.zeros_like(self.log_u).at[ids].add(jnp.exp(new_log_u - peak[ids]), mode="drop")
        counts = jnp.zeros(self.log_u.shape[:1], jnp.float32).at[ids].add(1.0, mode="drop")
        mean = peak + jnp.log(sums) - jnp.log(jnp.maximum(counts, 1.0))[:, None]
        return self.replace(log_u=jnp.where(counts[:, None] > 0, mean, self.log_u))

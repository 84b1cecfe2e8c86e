"""The pretraining objective built from config.loss: a contrastive term plus weighted extras."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from myna_rpe_jax.objectives import geometric, sogclr
from myna_rpe_jax.objectives.contrastive import info_nce

CONTRASTIVE_LOSSES = ("info_nce", "sogclr")


@dataclasses.dataclass(frozen=True)
class Objective:
    """The pretraining objective, from `config.loss`: a contrastive term plus weighted extras.

        loss = contrastive + kmeans_weight * kmeans + hull_weight * hull

    The contrastive term is symmetric InfoNCE or SogCLR (`name`); the k-means and convex-hull
    terms (`geometric`) act on both views' embeddings and are on when their weight is
    > 0. Their state (`init_state`) lives in the train state, not in the parameters:
    "centroids" [K, D] when a geometric term is on, moved by mini-batch k-means; "sogclr" (a
    `SogclrState` over the training set) for SogCLR. Every term is computed in float32
    (docs/losses.md defines and derives them).

    Attributes:
      name: the contrastive term, "info_nce" or "sogclr".
      temperature: softmax temperature of the contrastive term.
      sogclr_gamma: SogCLR's weight of the current batch in its moving average, in (0, 1].
      kmeans_weight, hull_weight: weights of the k-means and convex-hull terms (0 = off).
      num_clusters: k-means clusters K; at most the 2B embeddings of one global batch.
      kmeans_momentum: EMA factor of the centroid update, in [0, 1).
      hull_eps: ridge of the convex-hull term's scatter matrices.
    """

    name: str = "info_nce"
    temperature: float = 0.1
    sogclr_gamma: float = 0.9
    kmeans_weight: float = 0.0
    hull_weight: float = 0.0
    num_clusters: int = 10
    kmeans_momentum: float = 0.99
    hull_eps: float = 1e-4

    def __post_init__(self):
        checks = [
            ("name", self.name in CONTRASTIVE_LOSSES, f"one of {CONTRASTIVE_LOSSES}"),
            ("temperature", self.temperature > 0, "> 0"),
            ("sogclr_gamma", 0 < self.sogclr_gamma <= 1, "in (0, 1]"),
            ("kmeans_weight", self.kmeans_weight >= 0, ">= 0 (0 turns the term off)"),
            ("hull_weight", self.hull_weight >= 0, ">= 0 (0 turns the term off)"),
            ("num_clusters", self.num_clusters >= 1, ">= 1"),
            ("kmeans_momentum", 0 <= self.kmeans_momentum < 1, "in [0, 1)"),
            ("hull_eps", self.hull_eps > 0, "> 0"),
        ]
        for field, ok, expected in checks:
            if not ok:
                raise ValueError(
                    f"config.loss.{field} must be {expected}, got {getattr(self, field)!r}"
                )

    @classmethod
    def from_config(cls, loss_cfg, global_batch: int) -> Objective:
        """Builds and checks the objective of `config.loss` for a run with this global batch."""
        cfg = dict(loss_cfg)
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(cfg) - set(known))
        if unknown:
            raise ValueError(f"unknown config.loss field(s) {unknown}; known: {known}")
        objective = cls(**cfg)
        if objective.uses_centroids and objective.num_clusters > 2 * global_batch:
            raise ValueError(
                f"config.loss.num_clusters {objective.num_clusters} is more than the"
                f" {2 * global_batch} embeddings of a batch (2 views x batch_size {global_batch}):"
                " the centroids are seeded from the first batch. Lower num_clusters or raise"
                " batch_size."
            )
        return objective

    @property
    def uses_centroids(self) -> bool:
        return self.kmeans_weight > 0 or self.hull_weight > 0

    @property
    def term_names(self) -> tuple[str, ...]:
        """The logged terms: the contrastive one, then each extra term that is on."""
        extras = (("kmeans", self.kmeans_weight), ("hull", self.hull_weight))
        return (self.name, *(name for name, weight in extras if weight > 0))

    def init_state(self, dim: int, num_examples: int) -> dict:
        """The loss state of a fresh run, for D = `dim` embeddings and the training-set size.

        Centroids start at 0 and are seeded from the first batch (`__call__` at step 0).
        """
        state = {}
        if self.uses_centroids:
            state["centroids"] = jnp.zeros((self.num_clusters, dim), jnp.float32)
        if self.name == "sogclr":
            state["sogclr"] = sogclr.SogclrState.create(num_examples)
        return state

    def __call__(
        self,
        z_a: jax.Array,
        z_b: jax.Array,
        loss_state: dict,
        index: jax.Array,
        rng: jax.Array,
        first_step: jax.Array,
    ) -> tuple[jax.Array, dict[str, jax.Array], dict]:
        """The loss of a global batch, each term's (unweighted) value, and the new loss state.

        Args:
          z_a, z_b: [B, D] embeddings of the two views (row i of each: example i).
          loss_state: from `init_state` (or the previous step).
          index: [B] int dataset index of each example (SogCLR's moving averages).
          rng: key for seeding the centroids.
          first_step: bool scalar; True seeds the centroids from this batch (k-means++).

        Returns:
          (loss, terms, new_loss_state). The gradient flows only through `loss`; the new state
          is computed from this step's embeddings under stop-gradient.
        """
        new_state = dict(loss_state)
        if self.name == "sogclr":
            log_u = loss_state["sogclr"].gather(index)
            contrastive, new_log_u = sogclr.sogclr_loss(
                z_a, z_b, log_u, self.temperature, self.sogclr_gamma
            )
            new_state["sogclr"] = loss_state["sogclr"].scatter(index, new_log_u)
        else:
            contrastive = info_nce(z_a, z_b, self.temperature)
        terms = {self.name: contrastive}
        loss = contrastive
        if self.uses_centroids:
            z = jnp.concatenate([z_a, z_b], axis=0)  # [2B, D]: both views are data points
            centroids = jax.lax.cond(
                first_step,
                lambda: geometric.init_centroids(rng, z, self.num_clusters),
                lambda: loss_state["centroids"],
            )
            if self.kmeans_weight > 0:
                terms["kmeans"] = geometric.kmeans_loss(z, centroids)
                loss = loss + self.kmeans_weight * terms["kmeans"]
            if self.hull_weight > 0:
                assignments = geometric.assign_clusters(z, centroids)
                terms["hull"] = geometric.convex_hull_loss(z, assignments, centroids, self.hull_eps)
                loss = loss + self.hull_weight * terms["hull"]
            new_state["centroids"] = geometric.kmeans_update(centroids, z, self.kmeans_momentum)
        return loss, terms, new_state

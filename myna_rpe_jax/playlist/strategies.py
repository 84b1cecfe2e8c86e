"""Playlist generation from the convex-hull geometry of track embeddings.

A playlist is the convex hull of its tracks' embeddings (see `hull.py`). Three strategies pick
new tracks from a pool of candidates (every embedded track not already in the playlist):

- `fill`: tracks close to the hull (within `near * spread`, else the nearest ones) that cover
  it, chosen by farthest-point sampling on their nearest hull points, seeded with the playlist:
  each pick is the candidate that fills the largest remaining hole in the hull, minus how far it
  lies from the hull.
- `expand`: the nearest tracks just outside the hull's boundary, by distance.
- `interpolate`: a sequence from playlist A to playlist B. Pick k of n targets the blended hull
  (1 - t) hull(A) + t hull(B) at t = k / (n + 1) and takes the unused candidate nearest to it
  (ties inside the blend go to the one closest to the blend's centre).

The command line is `python -m myna_rpe_jax.playlist` (`__main__.py`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from myna_rpe_jax.playlist import hull

STRATEGIES = ("fill", "expand", "interpolate")


class Ranked(NamedTuple):
    """Picks, best (or first in sequence) first.

    indices: [n] int, rows of the candidate array; distances: [n] distance of each pick to the
    hull it was chosen for (the playlist's, or the blend's for `interpolate`).
    """

    indices: np.ndarray
    distances: np.ndarray


def fit_all(
    fit: Callable[[jax.Array], hull.HullFit], x: np.ndarray, chunk_size: int = 1024
) -> hull.HullFit:
    """Runs a jitted hull fit over x: [N, D] in fixed-size chunks, as numpy arrays.

    Chunks are padded (with the last row) to one size, a power of two for small N, so the fit
    compiles once per playlist shape however many candidates there are.
    """
    n = len(x)
    size = min(chunk_size, max(8, 1 << max(n - 1, 0).bit_length()))
    parts = []
    starts = range(0, n, size)
    for start in tqdm.tqdm(starts, desc="hull distances", unit="chunk", disable=len(starts) < 4):
        chunk = x[start : start + size]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
        keep = len(chunk)
        parts.append([np.asarray(field)[:keep] for field in fit(padded)])
    return hull.HullFit(*(np.concatenate(field) for field in zip(*parts, strict=True)))


def _pairwise_distance(a: jax.Array, b: jax.Array) -> jax.Array:
    """Euclidean distances [N, M] between rows of a: [N, D] and b: [M, D]."""
    sq = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2 * a @ b.T
    return jnp.sqrt(jnp.maximum(sq, 0.0))


@functools.partial(jax.jit, static_argnames="n")
def cover_order(
    targets: jax.Array, seeds: jax.Array, penalty: jax.Array, eligible: jax.Array, n: int
) -> jax.Array:
    """Greedy farthest-point order of n eligible targets: [N, D], seeded with seeds: [M, D].

    Each step takes the eligible target maximising (distance to the nearest seed or earlier
    pick) - penalty: [N]. Requires n <= eligible.sum(). Returns [n] indices.
    """
    gaps = jnp.min(_pairwise_distance(targets, seeds), axis=1)

    def pick(carry, _):
        gaps, available = carry
        i = jnp.argmax(jnp.where(available, gaps - penalty, -jnp.inf))
        gaps = jnp.minimum(gaps, jnp.linalg.norm(targets - targets[i], axis=1))
        return (gaps, available.at[i].set(False)), i

    _, order = jax.lax.scan(pick, (gaps, eligible), None, length=n)
    return order


def fill(
    points: np.ndarray,
    candidates: np.ndarray,
    n: int,
    *,
    near: float = 0.5,
    chunk_size: int = 1024,
) -> Ranked:
    """Up to n candidates: [N, D] that fill the hull of points: [M, D] (see module doc)."""
    points = np.asarray(points, np.float32)
    fit = fit_all(lambda x: hull.hull_fit(points, x), candidates, chunk_size)
    n = min(n, len(candidates))
    spread = float(hull.hull_spread(points))
    eligible = fit.distance <= near * spread
    if eligible.sum() < n:
        eligible = np.zeros(len(candidates), bool)
        eligible[np.argsort(fit.distance, kind="stable")[:n]] = True
    shadows = fit.weights @ points
    order = np.asarray(cover_order(shadows, points, fit.distance, eligible, n))
    return Ranked(order, fit.distance[order])


def expand(
    points: np.ndarray,
    candidates: np.ndarray,
    n: int,
    *,
    inside_tol: float = 1e-3,
    chunk_size: int = 1024,
) -> Ranked:
    """The n candidates: [N, D] nearest to the hull of points: [M, D] from outside it.

    Candidates within `inside_tol * spread` count as inside and are skipped, so fewer than n
    may come back when the hull already contains most candidates.
    """
    points = np.asarray(points, np.float32)
    distance = fit_all(lambda x: hull.hull_fit(points, x), candidates, chunk_size).distance
    outside = np.flatnonzero(distance > inside_tol * float(hull.hull_spread(points)))
    order = outside[np.argsort(distance[outside], kind="stable")[:n]]
    return Ranked(order, distance[order])


def waypoints(n: int) -> np.ndarray:
    """The blend parameters t_k = k / (n + 1), k = 1..n, that `interpolate` walks through."""
    return np.arange(1, n + 1) / (n + 1)


def interpolate(
    points_a: np.ndarray,
    points_b: np.ndarray,
    candidates: np.ndarray,
    n: int,
    *,
    inside_tol: float = 1e-3,
    shortlist: int = 512,
    chunk_size: int = 1024,
) -> Ranked:
    """A sequence of n candidates: [N, D] moving from hull(points_a) to hull(points_b).

    Every blend lies inside hull(A u B), so a candidate's distance to the joint hull is a lower
    bound on its distance to any blend: only the `shortlist` candidates nearest the joint hull
    are scored against each blend (exact whenever a pick is nearer its blend than the
    shortlist's cut-off; `interpolate` warns on stderr when it is not).
    """
    points_a = np.asarray(points_a, np.float32)
    points_b = np.asarray(points_b, np.float32)
    joint = np.concatenate([points_a, points_b])
    to_joint = fit_all(lambda x: hull.hull_fit(joint, x), candidates, chunk_size).distance
    keep = np.argsort(to_joint, kind="stable")[: max(shortlist, 4 * n)]
    cutoff = to_joint[keep[-1]] if len(keep) < len(candidates) else np.inf
    pool = np.asarray(candidates, np.float32)[keep]
    spread_a, spread_b = (float(hull.hull_spread(p)) for p in (points_a, points_b))
    used = np.zeros(len(keep), bool)
    picks, distances = [], []
    for t in waypoints(min(n, len(keep))):
        fit = fit_all(lambda x, t=t: hull.blend_fit(points_a, points_b, t, x), pool, chunk_size)
        centre = (1 - t) * points_a.mean(0) + t * points_b.mean(0)
        inside = fit.distance <= inside_tol * ((1 - t) * spread_a + t * spread_b)
        rank = np.lexsort(
            (np.linalg.norm(pool - centre, axis=1), np.where(inside, 0.0, fit.distance))
        )
        best = rank[~used[rank]][0]
        used[best] = True
        picks.append(keep[best])
        distances.append(fit.distance[best])
    if np.max(distances, initial=0.0) > cutoff:
        print(
            f"warning: a pick lies farther from its blend than the shortlist cut-off "
            f"({cutoff:.4g}); a larger --shortlist than {shortlist} may find nearer tracks",
            file=sys.stderr,
        )
    return Ranked(np.asarray(picks, int), np.asarray(distances, np.float32))

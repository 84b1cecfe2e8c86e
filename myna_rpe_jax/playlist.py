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

Command line (writes a CSV and a PNG picture of the hull in a 2-D PCA projection):

    python -m myna_rpe_jax.playlist --embeddings emb.npz --playlist matches.csv \
        --strategy fill -n 20 --out generated.csv
"""

from __future__ import annotations

import argparse
import csv
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from myna_rpe_jax import hull
from myna_rpe_jax.embedding_file import load_npz

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


def parse_playlist(spec: str, ids: np.ndarray) -> np.ndarray:
    """Row indices of a playlist given as comma-separated track ids or a CSV with track_id."""
    if os.path.isfile(spec):
        with open(spec, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if "track_id" not in (reader.fieldnames or []):
                raise SystemExit(
                    f"error: {spec} has no track_id column (columns: {reader.fieldnames}); "
                    "use the CSV written by `python -m myna_rpe_jax.spotify match`"
                )
            wanted = [row["track_id"] for row in reader if row["track_id"]]
    else:
        wanted = [part.strip() for part in spec.split(",") if part.strip()]
    row_of = {track: i for i, track in enumerate(ids)}
    missing = [track for track in wanted if track not in row_of]
    if missing:
        print(
            f"warning: {len(missing)} of {len(wanted)} playlist tracks are not in the embeddings "
            f"and are skipped, e.g. {missing[:3]}",
            file=sys.stderr,
        )
    rows = np.asarray(sorted({row_of[t] for t in wanted if t in row_of}), int)
    if len(rows) < 2:
        raise SystemExit(
            f"error: playlist {spec!r} has {len(rows)} embedded tracks; a hull needs at least 2. "
            "Check that the track ids match the embedding file's track_ids."
        )
    return rows


def plot_picture(path: str, emb: np.ndarray, groups: dict[str, np.ndarray], picks: np.ndarray):
    """Writes a PNG of the candidates, playlist hull(s) and picks in a 2-D PCA projection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.spatial import ConvexHull, QhullError

    centred = emb - emb.mean(0)
    _, _, vt = np.linalg.svd(centred[:: max(1, len(emb) // 5000)], full_matrices=False)
    xy = centred @ vt[:2].T
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.scatter(*xy.T, s=4, c="0.8", label="candidates")
    for (name, rows), color in zip(groups.items(), ("tab:blue", "tab:green"), strict=False):
        ax.scatter(*xy[rows].T, s=18, c=color, label=name)
        try:
            shape = ConvexHull(xy[rows])
            ring = np.append(shape.vertices, shape.vertices[0])
            ax.plot(*xy[rows][ring].T, c=color, lw=1, label=f"{name}: hull of the 2-D projection")
        except (QhullError, ValueError):
            pass
    ax.plot(*xy[picks].T, "-o", c="tab:red", ms=4, lw=0.6, label="picks (in order)")
    for rank, row in enumerate(picks, 1):
        ax.annotate(str(rank), xy[row], fontsize=7, color="tab:red")
    ax.set_title("PCA picture only: distances are measured in the full embedding space")
    ax.legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m myna_rpe_jax.playlist", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--embeddings", required=True, help=".npz from python -m myna_rpe_jax.embed")
    p.add_argument("--playlist", required=True, help="comma-separated track ids or a CSV")
    p.add_argument("--strategy", required=True, choices=STRATEGIES)
    p.add_argument("--to", help="second playlist (ids or CSV), for --strategy interpolate")
    p.add_argument("-n", "--num", type=int, default=20, help="tracks to generate")
    p.add_argument("--near", type=float, default=0.5, help="'near' radius, x playlist spread")
    p.add_argument("--shortlist", type=int, default=512, help="interpolate: candidates scored")
    p.add_argument("--out", default="generated.csv", help="output CSV")
    p.add_argument("--plot", help="output PNG (default: --out with .png)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.num < 1:
        raise SystemExit("error: -n must be at least 1")
    try:
        found = load_npz(args.embeddings, strict=False)  # any .npz with track_ids, embeddings
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err
    ids, emb = np.asarray(found.track_ids, dtype=str), found.embeddings
    rows_a = parse_playlist(args.playlist, ids)
    groups = {"playlist": rows_a}
    if args.strategy == "interpolate":
        if not args.to:
            raise SystemExit("error: --strategy interpolate needs --to with a second playlist")
        groups = {"playlist A": rows_a, "playlist B": parse_playlist(args.to, ids)}
    members = np.concatenate(list(groups.values()))
    pool = np.setdiff1d(np.arange(len(ids)), members)
    if len(pool) == 0:
        raise SystemExit("error: every embedded track is already in the playlist(s)")
    points = emb[rows_a]
    if args.strategy == "fill":
        ranked = fill(points, emb[pool], args.num, near=args.near)
    elif args.strategy == "expand":
        ranked = expand(points, emb[pool], args.num)
    else:
        ranked = interpolate(
            points, emb[groups["playlist B"]], emb[pool], args.num, shortlist=args.shortlist
        )
    write_ranked(args.out, args.strategy, ids[pool], ranked, emb, groups, args.near)
    plot_path = args.plot or os.path.splitext(args.out)[0] + ".png"
    plot_picture(plot_path, emb, groups, pool[ranked.indices])
    print(f"wrote {len(ranked.indices)} tracks to {args.out} and a picture to {plot_path}")
    return 0


def write_ranked(path, strategy, pool_ids, ranked, emb, groups, near) -> None:
    """Writes (and prints) the picks: rank, track_id, distance, relative distance, membership."""
    rows = list(groups.values())
    spreads = [float(hull.hull_spread(emb[r])) for r in rows]
    ts = waypoints(len(ranked.indices)) if strategy == "interpolate" else None
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "track_id", "distance", "relative_distance", "membership", "t"])
        for k, (i, d) in enumerate(zip(ranked.indices, ranked.distances, strict=True)):
            t = "" if ts is None else f"{ts[k]:.3f}"
            spread = spreads[0] if ts is None else (1 - ts[k]) * spreads[0] + ts[k] * spreads[1]
            code = int(hull.membership_codes(d, spread, near=near))
            record = [k + 1, pool_ids[i], f"{d:.6g}", f"{d / max(spread, 1e-12):.4f}"]
            writer.writerow([*record, hull.MEMBERSHIP_NAMES[code], t])
            print(f"{k + 1:3d}  {pool_ids[i]}  distance {d:.4g}  ({hull.MEMBERSHIP_NAMES[code]})")


if __name__ == "__main__":
    sys.exit(main())

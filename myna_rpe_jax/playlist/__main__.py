"""Playlist generation from the convex-hull geometry of track embeddings: the command line.

Writes a CSV of the picks and a PNG picture of the hull in a 2-D PCA projection:

    python -m myna_rpe_jax.playlist --embeddings emb.npz --playlist matches.csv \
        --strategy fill -n 20 --out generated.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence

import numpy as np

from myna_rpe_jax import errors, files
from myna_rpe_jax.embed.file import load_npz
from myna_rpe_jax.playlist import hull
from myna_rpe_jax.playlist.strategies import STRATEGIES, expand, fill, interpolate, waypoints


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
    with files.atomic_path(path) as partial:
        fig.savefig(partial, dpi=120, bbox_inches="tight")
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
    if len(ranked.indices) < args.num:
        print(
            f"note: asked for {args.num}, found {len(ranked.indices)} candidate(s): the"
            f" embeddings hold {len(pool)} track(s) outside the playlist(s)",
            file=sys.stderr,
        )
    return 0


def write_ranked(path, strategy, pool_ids, ranked, emb, groups, near) -> None:
    """Writes (and prints) the picks: rank, track_id, distance, relative distance, membership."""
    rows = list(groups.values())
    spreads = [float(hull.hull_spread(emb[r])) for r in rows]
    ts = waypoints(len(ranked.indices)) if strategy == "interpolate" else None
    with files.atomic_path(path) as partial, open(partial, "w", newline="", encoding="utf-8") as f:
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
    sys.exit(errors.run_cli(main, (OSError,)))  # e.g. an unwritable --out

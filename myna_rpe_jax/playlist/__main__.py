"""Playlist generation from the convex-hull geometry of track embeddings: the command line.

Writes a CSV of the picks and a PNG picture of the hull in a 2-D PCA projection:

    python -m myna_rpe_jax.playlist --embeddings emb.npz --playlist matches.csv \
        --strategy fill -n 20 --out generated.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from myna_rpe_jax import errors, files
from myna_rpe_jax.embed.file import load_npz
from myna_rpe_jax.playlist import hull
from myna_rpe_jax.playlist.strategies import STRATEGIES, expand, fill, interpolate, waypoints

# A --playlist ending so names a file: a track id has no extension, or an audio one.
FILE_SUFFIXES = (".csv", ".tsv", ".txt")


def read_track_ids(path: str) -> list[str]:
    """The track_id column of a CSV, UTF-8 with or without the byte-order mark that Excel's
    "CSV UTF-8" writes (utf-8-sig drops it; else the first column is not named track_id)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if "track_id" not in (reader.fieldnames or []):
                raise errors.UserError(
                    f"{path} has no track_id column (columns: {reader.fieldnames}); "
                    "use the CSV written by `python -m myna_rpe_jax.spotify match`"
                )
            return [row["track_id"] for row in reader if row["track_id"]]
    except UnicodeDecodeError as err:  # Latin-1 from an older Excel, or not text at all
        raise errors.UserError(
            f"{path} is not UTF-8 text: re-save it as CSV UTF-8 (a CSV with a track_id column)"
        ) from err


def looks_like_path(spec: str) -> bool:
    """Whether a --playlist that is no file was meant as one: a file suffix, or a path
    separator in a single entry (one track id alone cannot make a hull anyway)."""
    separators = {os.sep, os.altsep} - {None}
    single_path = "," not in spec and any(sep in spec for sep in separators)
    return Path(spec).suffix.lower() in FILE_SUFFIXES or single_path


def parse_playlist(spec: str, ids: np.ndarray, flag: str = "--playlist") -> np.ndarray:
    """Row indices of a playlist given as comma-separated track ids or a CSV with track_id."""
    row_of = {track: i for i, track in enumerate(ids)}
    if os.path.isdir(spec):
        raise errors.UserError(
            f"{flag} {spec} is a folder: pass a CSV with a track_id column or comma-separated"
            " track ids"
        )
    if os.path.isfile(spec):
        wanted = read_track_ids(spec)
    elif looks_like_path(spec) and spec not in row_of:
        raise errors.UserError(
            f"{flag} file {spec} does not exist: pass an existing CSV with a track_id column,"
            " or comma-separated track ids"
        )
    else:
        wanted = [part.strip() for part in spec.split(",") if part.strip()]
    missing = [track for track in wanted if track not in row_of]
    if missing:
        print(
            f"warning: {len(missing)} of {len(wanted)} playlist tracks are not in the embeddings "
            f"and are skipped, e.g. {missing[:3]}",
            file=sys.stderr,
        )
    rows = np.asarray(sorted({row_of[t] for t in wanted if t in row_of}), int)
    if len(rows) < 2:
        raise errors.UserError(
            f"playlist {spec!r} has {len(rows)} embedded tracks; a hull needs at least 2. "
            "Check that the track ids match the embedding file's track_ids."
        )
    return rows


def finite_rows(path: str, ids: np.ndarray, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tracks whose embedding is finite: a NaN or inf one has no place in the geometry
    (it would be written as a NaN distance, then break the picture's PCA). Warns naming them;
    UserError when none is left."""
    finite = np.isfinite(emb).all(axis=1)
    if finite.all():
        return ids, emb
    bad = ids[~finite]
    if not finite.any():
        raise errors.UserError(
            f"every embedding in {path} is NaN or inf: re-embed the tracks with"
            " `python -m myna_rpe_jax.embed` (a diverged checkpoint gives such embeddings)"
        )
    print(
        f"warning: {len(bad)} of {len(ids)} embeddings in {path} are NaN or inf and are left"
        f" out, e.g. {list(bad[:3])}",
        file=sys.stderr,
    )
    return ids[finite], emb[finite]


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def csv_file(text: str) -> str:
    """argparse type for --out: the picks are written as CSV, whatever the name says."""
    if Path(text).suffix.lower() != ".csv":
        raise argparse.ArgumentTypeError(
            f"{text!r} does not end in .csv: the picks are written as CSV (the picture goes to"
            " --plot)"
        )
    return text


def picture_file(text: str) -> str:
    """argparse type for --plot: matplotlib chooses the format by the suffix."""
    from matplotlib.backend_bases import FigureCanvasBase

    if Path(text).suffix.lower().lstrip(".") not in FigureCanvasBase.get_supported_filetypes():
        raise argparse.ArgumentTypeError(
            f"{text!r} does not end in a picture format: end it in .png (or .svg, .pdf, .jpg)"
        )
    return text


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
    p.add_argument("-n", "--num", type=positive_int, default=20, help="tracks to generate")
    p.add_argument(
        "--near", type=positive_float, default=0.5, help="'near' radius, x playlist spread"
    )
    p.add_argument(
        "--shortlist", type=positive_int, default=512, help="interpolate: candidates scored"
    )
    p.add_argument("--out", type=csv_file, default="generated.csv", help="output CSV")
    p.add_argument("--plot", type=picture_file, help="output PNG (default: --out with .png)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.strategy == "interpolate" and not args.to:
        parser.error("--strategy interpolate needs --to with a second playlist")
    if args.to and args.strategy != "interpolate":  # said, not ignored
        parser.error(
            f"--to is the second playlist of --strategy interpolate; {args.strategy} takes one"
        )
    # Before the work (minutes on a big library), not after it with `[Errno 17] File exists`.
    plot_path = args.plot or os.path.splitext(args.out)[0] + ".png"
    for flag, path in (("--out", args.out), ("--plot", plot_path)):
        if problem := files.output_problem(path):
            parser.error(f"{flag}: {problem}")
    inputs = {"--embeddings": args.embeddings, "--playlist": args.playlist, "--to": args.to}
    if problem := files.overwrite_problem({"--out": args.out, "--plot": plot_path}, inputs):
        parser.error(problem)
    if os.path.isdir(args.embeddings):
        raise errors.UserError(
            f"--embeddings {args.embeddings} is a folder, not an .npz file: pass the .npz that"
            " `python -m myna_rpe_jax.embed` wrote"
        )
    try:
        found = load_npz(args.embeddings, strict=False)  # any .npz with track_ids, embeddings
    except (OSError, ValueError) as err:
        raise errors.UserError(str(err)) from err
    ids, emb = finite_rows(
        args.embeddings, np.asarray(found.track_ids, dtype=str), found.embeddings
    )
    rows_a = parse_playlist(args.playlist, ids)
    groups = {"playlist": rows_a}
    if args.strategy == "interpolate":
        groups = {"playlist A": rows_a, "playlist B": parse_playlist(args.to, ids, "--to")}
    members = np.concatenate(list(groups.values()))
    pool = np.setdiff1d(np.arange(len(ids)), members)
    if len(pool) == 0:
        raise errors.UserError("every embedded track is already in the playlist(s)")
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

import csv
import json

import numpy as np
import pytest

from myna_rpe_jax.errors import UserError
from myna_rpe_jax.playlist import __main__ as playlist_cli
from myna_rpe_jax.playlist import strategies

D = 16


@pytest.fixture(scope="module")
def plane():
    """Maps 2-D coordinates into a plane of R^16 (orthonormal, offset): distances are planar."""
    basis, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(D, 2)))
    return lambda xy: (np.asarray(xy, float) @ basis.T + 0.3).astype(np.float32)


def test_fill_covers_the_hull_from_its_centre_and_stays_inside(plane):
    square = plane([(0, 0), (1, 0), (0, 1), (1, 1)])  # spread ~0.71
    candidates = plane([(3, 3), (0.1, 0.1), (0.5, 0.5), (0.5, 1.1), (0.5, 0.05), (0.95, 0.95)])
    # The centre is the hull's largest hole, so it comes first; nothing far outside is taken.
    first = strategies.fill(square, candidates, 1, near=0.2)
    assert list(first.indices) == [2]
    # Then the edge point (0.45 from its nearest point), then (0.1, 0.1) (0.14, vs 0.07).
    picks = strategies.fill(square, candidates, 3, near=0.01)
    assert list(picks.indices) == [2, 4, 1]
    np.testing.assert_allclose(picks.distances, 0, atol=1e-4)
    # With a near radius covering (0.5, 1.1), its large hole outweighs the 0.1 it strays.
    wide = strategies.fill(square, candidates, 3, near=0.2)
    assert list(wide.indices) == [2, 4, 3]
    np.testing.assert_allclose(wide.distances[2], 0.1, rtol=1e-3)


def test_fill_takes_the_nearest_when_too_few_are_near(plane):
    square = plane([(0, 0), (1, 0), (0, 1), (1, 1)])
    candidates = plane([(5, 5), (0.5, 1.5), (0.5, 3)])
    picks = strategies.fill(square, candidates, 2, near=0.01)
    assert sorted(picks.indices) == [1, 2]


def test_expand_returns_the_nearest_outside_in_order(plane):
    square = plane([(0, 0), (1, 0), (0, 1), (1, 1)])
    candidates = plane([(0.5, 1.3), (0.5, 0.5), (0.5, 1.1), (-0.2, 0.5), (4, 4), (0.2, 0.2)])
    picks = strategies.expand(square, candidates, 3)
    assert list(picks.indices) == [2, 3, 0]
    np.testing.assert_allclose(picks.distances, [0.1, 0.2, 0.3], rtol=1e-3)
    # Four candidates lie outside the square: asking for more returns just those.
    assert len(strategies.expand(square, candidates, 10).indices) == 4


def test_interpolate_walks_the_segment_between_the_hulls(plane):
    a = plane([(0, 0), (0.2, 0), (0, 0.2)])
    b = plane([(10, 0), (10.2, 0), (10, 0.2)])
    # Blend centres at t = 1/4, 1/2, 3/4 lie at x = 2.5, 5, 7.5 (+ 0.067 in x and y).
    on_path = [(7.55, 0.05), (2.55, 0.05), (5.05, 0.05)]
    decoys = [(5, 2), (2.5, -2), (0.05, 0.05), (10.05, 0.05)]
    candidates = plane(on_path + decoys)
    picks = strategies.interpolate(a, b, candidates, 3)
    assert list(picks.indices) == [1, 2, 0]
    np.testing.assert_allclose(picks.distances, 0, atol=1e-4)
    np.testing.assert_allclose(strategies.waypoints(3), [0.25, 0.5, 0.75])


def write_embeddings(path, ids, emb):
    np.savez(
        path,
        track_ids=np.asarray(ids),
        embeddings=emb,
        split=np.asarray([""] * len(ids)),
        meta=json.dumps({"checkpoint": "test"}),
    )


def test_cli_writes_csv_and_picture(tmp_path, plane, capsys):
    rng = np.random.default_rng(4)
    xy = np.concatenate([[(0, 0), (1, 0), (0, 1), (1, 1)], rng.uniform(-1, 2, size=(20, 2))])
    ids = [f"artist/track{i:02d}" for i in range(len(xy))]
    emb_path = tmp_path / "emb.npz"
    write_embeddings(emb_path, ids, plane(xy))
    (tmp_path / "matches.csv").write_text(
        "spotify_id,track_id\nx,artist/track00\ny,artist/track01\n"
        "z,artist/track02\nw,artist/track03\nv,unknown/track\n"
    )
    out = tmp_path / "generated.csv"
    argv = [
        "--embeddings",
        str(emb_path),
        "--playlist",
        str(tmp_path / "matches.csv"),
        "--strategy",
        "expand",
        "-n",
        "5",
        "--out",
        str(out),
    ]
    assert playlist_cli.main(argv) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert not {r["track_id"] for r in rows} & set(ids[:4])
    distances = [float(r["distance"]) for r in rows]
    assert distances == sorted(distances) and distances[0] > 0
    assert (tmp_path / "generated.png").stat().st_size > 1000
    captured = capsys.readouterr()
    assert "1 of 5 playlist tracks are not in the embeddings" in captured.err
    assert rows[0]["track_id"] in captured.out

    argv = [
        "--embeddings",
        str(emb_path),
        "--playlist",
        ",".join(ids[:3]),
        "--strategy",
        "interpolate",
        "--to",
        ",".join(ids[3:6]),
        "-n",
        "2",
        "--out",
        str(out),
    ]
    assert playlist_cli.main(argv) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["t"] for r in rows] == ["0.333", "0.667"]


def test_cli_reports_bad_inputs(tmp_path, plane, capsys):
    emb_path = tmp_path / "emb.npz"
    write_embeddings(emb_path, ["a", "b", "c"], plane([(0, 0), (1, 0), (0, 1)]))
    base = ["--embeddings", str(emb_path), "--strategy", "fill"]
    with pytest.raises(UserError, match="has 1 embedded tracks; a hull needs at least 2"):
        playlist_cli.main([*base, "--playlist", "a,zzz"])
    with pytest.raises(SystemExit) as usage:  # a flag missing: argparse's usage error
        playlist_cli.main([*base[:2], "--playlist", "a,b", "--strategy", "interpolate"])
    assert usage.value.code == 2 and "needs --to" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", vectors=np.zeros((2, 2)))
    with pytest.raises(UserError, match=r"lacks \['embeddings', 'track_ids'\]"):
        playlist_cli.main(
            ["--embeddings", str(tmp_path / "bad.npz"), "--playlist", "a,b", "--strategy", "fill"]
        )
    with pytest.raises(UserError, match="^embeddings file .*missing.npz does not exist"):
        playlist_cli.main(
            ["--embeddings", str(tmp_path / "missing.npz"), *base[2:], "--playlist", "a,b"]
        )


def test_cli_reads_a_file_with_only_track_ids_and_embeddings(tmp_path, plane):
    """Embeddings from another tool: np.savez of track_ids and embeddings, nothing else."""
    emb_path = tmp_path / "other.npz"
    xy = [(0, 0), (1, 0), (0, 1), (0.4, 0.4), (3, 3)]
    np.savez(emb_path, track_ids=np.array(list("abcde")), embeddings=plane(xy).astype(np.float64))
    out = tmp_path / "gen.csv"
    argv = ["--embeddings", str(emb_path), "--playlist", "a,b,c", "--strategy", "fill"]
    assert playlist_cli.main([*argv, "-n", "1", "--out", str(out)]) == 0
    assert [r["track_id"] for r in csv.DictReader(out.open())] == ["d"]


def test_cli_names_a_file_that_is_not_an_embedding_file(tmp_path):
    text = tmp_path / "some.txt"
    text.write_text("not numbers\n")
    argv = ["--embeddings", str(text), "--playlist", "a,b", "--strategy", "fill"]
    with pytest.raises(UserError) as raised:
        playlist_cli.main(argv)
    message = str(raised.value)
    assert message == f"not an embedding file (.npz from `python -m myna_rpe_jax.embed`): {text}"
    assert "pickle" not in message


def test_cli_says_when_fewer_candidates_than_asked(tmp_path, plane, capsys):
    emb_path = tmp_path / "emb.npz"
    write_embeddings(emb_path, ["a", "b", "c", "d"], plane([(0, 0), (1, 0), (0, 1), (2, 2)]))
    out = tmp_path / "gen.csv"
    argv = ["--embeddings", str(emb_path), "--playlist", "a,b,c", "--strategy", "fill"]
    assert playlist_cli.main([*argv, "-n", "5", "--out", str(out)]) == 0
    assert len(list(csv.DictReader(out.open()))) == 1
    assert "note: asked for 5, found 1 candidate(s)" in capsys.readouterr().err

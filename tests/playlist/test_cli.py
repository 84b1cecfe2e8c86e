"""The playlist command line on what users pass it: CSVs from spreadsheets, paths that do not
exist, output names and numbers that cannot work. Real files in tmp_path; main() in-process."""

import csv

import numpy as np
import pytest
import soundfile as sf

from myna_rpe_jax import errors
from myna_rpe_jax.playlist import __main__ as playlist_cli

IDS = ["artist/t0", "artist/t1", "artist/t2", "artist/t3", "other/t4"]


@pytest.fixture
def emb_path(tmp_path):
    path = tmp_path / "emb.npz"
    vectors = np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1], [0.3, 0.3, 1], [2, 2, 1]], np.float32)
    np.savez(path, track_ids=np.array(IDS), embeddings=vectors)
    return path


def run(emb_path, *args):
    return playlist_cli.main(["--embeddings", str(emb_path), "--strategy", "fill", *args])


def usage_error(capsys, emb_path, *args) -> str:
    """The message of an argparse usage error (exit 2) for these arguments."""
    with pytest.raises(SystemExit) as raised:
        run(emb_path, *args)
    assert raised.value.code == 2
    return capsys.readouterr().err


def picks(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [row["track_id"] for row in csv.DictReader(f)]


def test_a_playlist_csv_with_excels_byte_order_mark_is_read(tmp_path, emb_path):
    playlist = tmp_path / "excel.csv"
    playlist.write_text("track_id,name\nartist/t0,Café\nartist/t1,b\nartist/t2,c\n", "utf-8-sig")
    assert playlist.read_bytes().startswith(b"\xef\xbb\xbf")
    out = tmp_path / "gen.csv"
    assert run(emb_path, "--playlist", str(playlist), "-n", "1", "--out", str(out)) == 0
    assert picks(out) == ["artist/t3"]


def write_latin1_csv(path):
    path.write_bytes("track_id,name\nartist/t0,Café\nartist/t1,b\n".encode("latin-1"))


def write_wav(path):
    sf.write(path, np.zeros(800, np.float32), 44100)


@pytest.mark.parametrize("name, write", [("latin1.csv", write_latin1_csv), ("song.wav", write_wav)])
def test_a_playlist_file_that_is_not_utf8_is_named(tmp_path, emb_path, name, write):
    playlist = tmp_path / name
    write(playlist)
    with pytest.raises(errors.UserError) as raised:
        run(emb_path, "--playlist", str(playlist), "--out", str(tmp_path / "gen.csv"))
    assert str(raised.value) == (
        f"{playlist} is not UTF-8 text: re-save it as CSV UTF-8 (a CSV with a track_id column)"
    )
    assert not (tmp_path / "gen.csv").exists()


@pytest.mark.parametrize("name", ["x/sed.csv", "sed.TXT", "sed.tsv"])
def test_a_playlist_path_that_does_not_exist_is_named(tmp_path, emb_path, name):
    missing = tmp_path / name
    with pytest.raises(errors.UserError, match="does not exist") as raised:
        run(emb_path, "--playlist", str(missing))
    assert str(raised.value).startswith(f"--playlist file {missing} does not exist: pass an")
    args = ["--playlist", "artist/t0,artist/t1", "--strategy", "interpolate", "--to", str(missing)]
    with pytest.raises(errors.UserError, match=f"--to file {missing} does not exist"):
        playlist_cli.main(["--embeddings", str(emb_path), *args])


def test_track_ids_with_slashes_are_still_ids(tmp_path, emb_path):
    out = tmp_path / "gen.csv"
    assert run(emb_path, "--playlist", "artist/t0,artist/t1,artist/t2", "--out", str(out)) == 0
    assert len(picks(out)) == 2
    # One id alone is an id (too few for a hull), not a missing file.
    with pytest.raises(errors.UserError, match="has 1 embedded tracks; a hull needs at least 2"):
        run(emb_path, "--playlist", "artist/t0")


def test_a_playlist_or_embeddings_folder_is_named_as_a_folder(tmp_path, emb_path):
    with pytest.raises(errors.UserError) as raised:
        run(emb_path, "--playlist", str(tmp_path))
    assert str(raised.value).startswith(f"--playlist {tmp_path} is a folder: pass a CSV")
    with pytest.raises(errors.UserError) as raised:
        run(tmp_path, "--playlist", "artist/t0,artist/t1")
    assert str(raised.value) == (
        f"--embeddings {tmp_path} is a folder, not an .npz file: pass the .npz that"
        " `python -m myna_rpe_jax.embed` wrote"
    )


def test_nan_embeddings_are_left_out_with_a_warning(tmp_path, emb_path, capsys):
    """A NaN row (a diverged checkpoint, a broken file) was written as a NaN distance, then
    broke the picture's PCA with a traceback."""
    found = np.load(emb_path)
    vectors = found["embeddings"].copy()
    vectors[3] = np.nan
    np.savez(emb_path, track_ids=found["track_ids"], embeddings=vectors)
    out = tmp_path / "gen.csv"
    assert run(emb_path, "--playlist", "artist/t0,artist/t1", "-n", "3", "--out", str(out)) == 0
    assert "1 of 5 embeddings in" in capsys.readouterr().err
    assert sorted(picks(out)) == ["artist/t2", "other/t4"]  # t3 is left out
    assert (tmp_path / "gen.png").stat().st_size > 0
    np.savez(emb_path, track_ids=found["track_ids"], embeddings=np.full_like(vectors, np.inf))
    with pytest.raises(errors.UserError, match="every embedding in .* is NaN or inf"):
        run(emb_path, "--playlist", "artist/t0,artist/t1", "--out", str(out))


@pytest.mark.parametrize("name", ["gen.png", "gen", "gen.tsv"])
def test_an_out_that_is_not_a_csv_is_a_usage_error(tmp_path, emb_path, capsys, name):
    out = tmp_path / name
    err = usage_error(capsys, emb_path, "--playlist", "artist/t0,artist/t1", "--out", str(out))
    assert f"argument --out: '{out}' does not end in .csv" in err
    assert list(tmp_path.iterdir()) == [emb_path]


def test_a_plot_without_a_picture_suffix_is_a_usage_error(tmp_path, emb_path, capsys):
    args = ["--playlist", "artist/t0,artist/t1", "--out", str(tmp_path / "gen.csv")]
    err = usage_error(capsys, emb_path, *args, "--plot", str(tmp_path / "gen.csv"))
    assert "argument --plot: " in err and "end it in .png" in err
    assert list(tmp_path.iterdir()) == [emb_path]


def test_unwritable_outputs_are_found_before_the_work(tmp_path, emb_path, capsys):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "gen.png").mkdir()  # the picture's default name, taken by a folder
    base = ["--playlist", "artist/t0,artist/t1"]
    cases = {
        ("--out", str(tmp_path / "a-file/gen.csv")): f"{tmp_path / 'a-file'} is a file",
        ("--out", str(tmp_path / "gen.csv")): f"--plot: {tmp_path / 'gen.png'} is a folder",
        (
            "--out",
            str(tmp_path / "gen.csv"),
            "--plot",
            str(tmp_path / "a-file/x/pic.png"),
        ): f"--plot: cannot write {tmp_path / 'a-file/x/pic.png'}: {tmp_path / 'a-file'} is a file",
    }
    for args, message in cases.items():
        err = usage_error(capsys, emb_path, *base, *args)
        assert message in err, err
        assert not (tmp_path / "gen.csv").exists()  # nothing was written first


def test_an_output_that_is_one_of_the_inputs_is_refused(tmp_path, emb_path, capsys):
    """`--out seed.csv --playlist seed.csv` would replace the user's playlist with the picks
    (exit 0, nothing said); same file by another name too (a symlink)."""
    seed = tmp_path / "seed.csv"
    seed.write_text("track_id\nartist/t0\nartist/t1\n", encoding="utf-8")
    (tmp_path / "link.csv").symlink_to(seed)
    for out in (seed, tmp_path / "link.csv", tmp_path / "." / "seed.csv"):
        err = usage_error(capsys, emb_path, "--playlist", str(seed), "--out", str(out))
        assert f"error: --out {out} is the --playlist file: writing it would replace" in err
    other = tmp_path / "other.csv"
    other.write_text("track_id\nartist/t2\nartist/t3\n", encoding="utf-8")
    args = ["--playlist", str(seed), "--to", str(other), "--out", str(other)]
    with pytest.raises(SystemExit) as raised:
        playlist_cli.main(["--embeddings", str(emb_path), "--strategy", "interpolate", *args])
    assert raised.value.code == 2
    assert f"error: --out {other} is the --to file" in capsys.readouterr().err
    assert seed.read_text(encoding="utf-8") == "track_id\nartist/t0\nartist/t1\n"


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--near", "0", "argument --near: must be a positive number, got 0"),
        ("--near", "-0.5", "argument --near: must be a positive number, got -0.5"),
        ("--near", "nan", "argument --near: must be a positive number, got nan"),
        ("--shortlist", "0", "argument --shortlist: must be at least 1, got 0"),
        ("--shortlist", "-3", "argument --shortlist: must be at least 1, got -3"),
        ("-n", "0", "argument -n/--num: must be at least 1, got 0"),
    ],
)
def test_meaningless_numbers_are_usage_errors(tmp_path, emb_path, capsys, flag, value, message):
    out = tmp_path / "gen.csv"
    args = ["--playlist", "artist/t0,artist/t1", "--out", str(out), flag, value]
    assert message in usage_error(capsys, emb_path, *args)
    assert not out.exists()


def test_a_second_playlist_for_a_one_playlist_strategy_is_a_usage_error(tmp_path, emb_path, capsys):
    """--to used to be ignored silently by fill and expand."""
    out = tmp_path / "gen.csv"
    args = ["--playlist", "artist/t0,artist/t1", "--to", "artist/t2,artist/t3", "--out", str(out)]
    err = usage_error(capsys, emb_path, *args)
    assert "--to is the second playlist of --strategy interpolate; fill takes one" in err
    assert not out.exists()


def test_embeddings_stored_as_python_objects_are_named(tmp_path, emb_path, capsys):
    """An .npz whose ids were saved as an object array (a list of mixed types)."""
    found = np.load(emb_path)
    np.savez(
        emb_path,
        track_ids=np.asarray(list(found["track_ids"]), dtype=object),
        embeddings=found["embeddings"],
    )
    with pytest.raises(errors.UserError, match=rf"{emb_path}: field .track_ids. holds Python"):
        run(emb_path, "--playlist", "artist/t0,artist/t1", "--out", str(tmp_path / "gen.csv"))

"""What a user can get wrong on the command lines: one `error:` line naming the field or file,
a non-zero exit and no traceback (MYNA_RPE_DEBUG=1 shows it). The real CLIs, as subprocesses."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.embed.test_embedder import trained_tiny_run

REPO = Path(__file__).resolve().parents[1]


def run_cli(module: str, *args: str, env: dict | None = None, timeout: int = 300):
    """Runs `python -m module args` from the repository; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**os.environ, "MYNA_RPE_DEBUG": "", **(env or {})},
        input="",  # stdin at EOF, as with no terminal; not DEVNULL: CI has no /dev/null
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_error(proc, status: int, *phrases: str) -> None:
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    for phrase in phrases:
        assert phrase in proc.stderr, (phrase, proc.stderr)


def train(tmp_path, *overrides: str, config: str = "configs/tiny.py", env=None):
    workdir = f"--workdir={tmp_path / 'run'}"
    cache = {"MYNA_RPE_CACHE": str(tmp_path / "cache"), **(env or {})}
    # No probes during these runs (configs/tiny.py has them): they test the errors.
    probes = ["--config.eval_every=0"] if config == "configs/tiny.py" else []
    return run_cli(
        "myna_rpe_jax.train", f"--config={config}", workdir, *probes, *overrides, env=cache
    )


def test_misspelled_config_field_is_named_with_the_likely_one(tmp_path):
    proc = train(tmp_path, "--config.batch_sise=8")
    assert_error(proc, 2, "error: --config.batch_sise: configs/tiny.py has no field 'batch_sise'")
    assert 'Did you mean "batch_size"?' in proc.stderr


@pytest.mark.parametrize("overrides", [(), ("--config.batch_size=8",)])
def test_missing_config_file_is_named(tmp_path, overrides):
    proc = train(tmp_path, *overrides, config="configs/nope.py")
    assert_error(proc, 2, "error: --config=configs/nope.py: cannot load the config file")
    assert "No such file or directory" in proc.stderr and "configs/alibi2d.py" in proc.stderr


@pytest.mark.parametrize(
    "config_args, named",
    [
        (["--config", "configs/nope.py"], "--config=configs/nope.py: cannot load"),
        # absl loads each --config as it parses and applies an override to the first one
        # loaded: that one failed, the last one is fine.
        (
            ["--config=configs/nope.py", "--config", "configs/tiny.py", "--config.total_steps=1"],
            "--config=configs/nope.py: cannot load",
        ),
        (["--config", "configs/tiny.py", "--config.batch_sise=8"], ": configs/tiny.py has no"),
    ],
)
def test_config_given_with_a_space_or_twice_is_named(tmp_path, config_args, named):
    """`--config PATH` is absl's other spelling; the message names the file it read, not "?"."""
    workdir = f"--workdir={tmp_path / 'run'}"
    proc = run_cli("myna_rpe_jax.train", *config_args, workdir)
    assert_error(proc, 2, named)


@pytest.mark.parametrize(
    "source, message",
    [
        ("def get_config(:\n", "bad.py: line 1: invalid syntax: the file is not valid Python"),
        ("CONFIG = 1\n", "bad.py has no get_config() function"),
        ("def get_config():\n    return 3\n", "get_config() returned a value of type int"),
        ("def get_config():\n    return {'seed': 0}\n", "returned a value of type dict"),
    ],
)
def test_a_config_file_that_is_no_config_is_named(tmp_path, source, message):
    """Not a traceback, nor ml_collections' "has no field 'config_config'" for a missing
    get_config; nothing is made before the message."""
    (tmp_path / "bad.py").write_text(source)
    proc = train(tmp_path, config=str(tmp_path / "bad.py"))
    assert_error(proc, 2, f"error: --config={tmp_path}/", message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.py"]


def test_an_empty_workdir_is_refused_not_the_current_folder(tmp_path):
    proc = run_cli(
        "myna_rpe_jax.train",
        "--config=configs/tiny.py",
        "--workdir=",
        env={"MYNA_RPE_CACHE": str(tmp_path / "cache")},
    )
    assert_error(proc, 2, "error: --workdir is empty: name the run's folder")
    assert not (REPO / "checkpoints").exists() and not (REPO / "config.json").exists()


def test_batch_that_does_not_split_over_the_devices(tmp_path):
    proc = train(tmp_path, "--config.batch_size=6")  # 4 fake devices (conftest)
    assert_error(proc, 2, "config.batch_size=6 is not divisible by the 4 devices")


def test_wrong_posemb_fails_fast_before_any_data_work(tmp_path):
    """No demo set, cache or workdir is made (not timed: a loaded machine is no error)."""
    proc = train(tmp_path, "--config.model.posemb=('alibi3d',)")
    assert_error(proc, 2, "config.model: unknown positional scheme(s) ['alibi3d']", "alibi2d")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["afile", "afile/run"])
def test_a_workdir_that_is_or_lies_under_a_file_fails_before_any_data_work(tmp_path, where):
    (tmp_path / "afile").write_text("not a folder")
    workdir = tmp_path / where
    proc = train(tmp_path, f"--workdir={workdir}")
    assert_error(proc, 2, f"error: --workdir={workdir}: ", "is a file")
    assert not (tmp_path / "cache").exists()


def test_a_workdir_where_no_folder_can_be_made_fails_before_any_data_work(tmp_path):
    proc = train(tmp_path, "--workdir=/proc/run")
    assert_error(proc, 2, "error: --workdir=/proc/run: cannot write /proc/run: /proc takes no")
    assert not (tmp_path / "cache").exists()


def test_debug_switch_shows_the_traceback(tmp_path):
    proc = train(tmp_path, "--config.model.posemb=('alibi3d',)", env={"MYNA_RPE_DEBUG": "1"})
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_data_folder_that_does_not_exist(tmp_path):
    folder = tmp_path / "nowhere"
    proc = train(tmp_path, "--config.data.dataset=gtzan", f"--config.data.data_dir={folder}")
    assert_error(proc, 2, f"config.data.data_dir='{folder}' does not exist")
    assert "python -m data_prep.build --dataset gtzan" in proc.stderr


def test_dataset_not_prepared_says_how_to_build_it(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = train(
        tmp_path, "--config.data.dataset=gtzan", f"--config.data.data_dir={tmp_path / 'empty'}"
    )
    assert_error(proc, 1, "error: dataset 'gtzan' is not prepared in")
    assert "python -m data_prep.build --dataset gtzan" in proc.stderr


def test_nan_stop_is_one_message(tmp_path, tiny_config):
    from tests.train.test_loop import overrides

    # A finite rate that overflows float32 parameters (a NaN rate is a config error now).
    flags = [*overrides(tiny_config), "--config.total_steps=2", "--config.optim.learning_rate=1e38"]
    proc = train(tmp_path, *flags)
    assert_error(proc, 1, "became NaN/inf", "no checkpoint had been saved yet")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_tiny_run(tmp_path_factory)


def test_probe_with_no_task_probed_exits_non_zero(trained, tmp_path):
    """Exit 1, the --data-dir named as missing; a first run writes its 'Not probed' report, a
    later one keeps the results already there (a typo must not replace scores with dashes)."""
    args = ["--workdir", str(trained.workdir), "--tasks", "gtzan", "--output", str(tmp_path)]
    proc = run_cli("myna_rpe_jax.probe", *args, "--data-dir", str(tmp_path / "none"))
    assert_error(proc, 1, "error: none of the tasks gtzan could be probed")
    assert f"the folder {tmp_path / 'none'} does not exist" in proc.stderr
    assert "## Not probed" in (tmp_path / "results.md").read_text()

    earlier = {name: f"earlier {name}" for name in ("results.json", "results.md", "results.png")}
    for name, text in earlier.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "empty").mkdir()
    proc = run_cli("myna_rpe_jax.probe", *args, "--data-dir", str(tmp_path / "empty"))
    assert_error(proc, 1, "could be probed: not prepared in", f"{tmp_path} keeps its earlier")
    assert {name: (tmp_path / name).read_text() for name in earlier} == earlier


def test_embed_of_a_folder_that_is_no_workdir(tmp_path):
    args = ["--workdir", str(tmp_path / "nowork"), "--audio", str(tmp_path)]
    proc = run_cli("myna_rpe_jax.embed", *args, "--output", str(tmp_path / "x.npz"))
    assert_error(proc, 1, "is not a training workdir")


def test_embed_of_a_damaged_checkpoint_is_one_line(trained, tmp_path):
    """Not tensorstore's traceback, nor the 'Event loop is closed' ones its other reads print
    once orbax has given up (checkpoints.load_params drops those)."""
    import shutil

    broken = tmp_path / "run"
    shutil.copytree(trained.workdir, broken)
    for data in [d for d in (broken / "checkpoints").rglob("d") if d.is_dir()]:
        shutil.rmtree(data, ignore_errors=True)
    args = ["--workdir", str(broken), "--audio", str(tmp_path), "--output", str(tmp_path / "x")]
    proc = run_cli("myna_rpe_jax.embed", *args)
    assert_error(proc, 1, "cannot be read, its files are damaged or incomplete")
    assert "Event loop is closed" not in proc.stderr


def test_playlist_of_a_text_file_and_a_short_result(tmp_path):
    text = tmp_path / "some.txt"
    text.write_text("hello\n")
    args = ["--playlist", "a,b", "--strategy", "fill", "--out", str(tmp_path / "out.csv")]
    proc = run_cli("myna_rpe_jax.playlist", "--embeddings", str(text), *args)
    assert_error(
        proc, 1, f"not an embedding file (.npz from `python -m myna_rpe_jax.embed`): {text}"
    )
    assert "pickle" not in proc.stderr
    emb = tmp_path / "emb.npz"
    vectors = np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1], [2, 2, 1]], np.float32)
    np.savez(emb, track_ids=np.array(list("abcd")), embeddings=vectors)
    args = ["--playlist", "a,b,c", *args[2:], "-n", "5"]
    proc = run_cli("myna_rpe_jax.playlist", "--embeddings", str(emb), *args)
    assert proc.returncode == 0, proc.stderr
    assert "note: asked for 5, found 1 candidate(s)" in proc.stderr


def test_spotify_login_without_a_terminal(tmp_path):
    env = {"SPOTIPY_CLIENT_ID": "cid-test", "SPOTIPY_REDIRECT_URI": "http://127.0.0.1:8888/cb"}
    cache = f"--token-cache={tmp_path / 'token.json'}"
    proc = run_cli("myna_rpe_jax.spotify", cache, "login", "--no-browser", env=env)
    assert_error(proc, 1, "no terminal to paste the redirect URL into", "--redirect-url")
    assert "Go to the following URL: https://accounts.spotify.com/authorize?" in proc.stdout
    proc = run_cli("myna_rpe_jax.spotify", cache, "login", "--redirect-url", "oops", env=env)
    assert_error(proc, 1, "'oops' is not a redirect URL")


def test_data_prep_commands_name_the_folder(tmp_path):
    proc = run_cli("data_prep.make_demo", "--out", "/proc/not-here", "--tracks", "1")
    assert_error(proc, 2, "--out: cannot write /proc/not-here: /proc takes no new files")
    args = ["--dataset", "gtzan", "--source", str(tmp_path / "nosrc"), "--data-dir", str(tmp_path)]
    proc = run_cli("data_prep.build", *args)
    assert_error(proc, 2, "error:", str(tmp_path / "nosrc"))


def test_ctrl_c_is_one_line_saying_what_was_kept(tmp_path):
    """Ctrl-C in an argparse command: `error: interrupted` and what to do, status 130, no
    KeyboardInterrupt traceback; the demo set's metadata.csv (its 'done' mark) is absent."""
    import signal

    args = ["--out", str(tmp_path / "demo"), "--tracks", "400", "--seconds", "10"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "data_prep.make_demo", *args],
        cwd=REPO,
        env={**os.environ, "MYNA_RPE_DEBUG": ""},
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = ""
    while not re.search(r" [1-9]\d*/400 ", seen):  # tqdm's bar: some tracks are written
        seen += proc.stderr.read(1)
        assert proc.poll() is None, f"make_demo ended before it was interrupted: {seen}"
    proc.send_signal(signal.SIGINT)
    stderr = seen + proc.stderr.read()
    assert proc.wait(timeout=60) == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.rstrip().endswith(
        "error: interrupted; the set is incomplete (metadata.csv is written last): rerun the"
        " command"
    ), stderr[-500:]
    assert any((tmp_path / "demo" / "audio").iterdir())
    assert not (tmp_path / "demo" / "metadata.csv").exists()

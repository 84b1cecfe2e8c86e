import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from myna_rpe_jax.run import checkpoints
from myna_rpe_jax.train import loop

REPO = Path(__file__).resolve().parents[2]


def overrides(config) -> list[str]:
    """The command-line flags that reproduce the test config from configs/tiny.py."""
    data = config.data
    return [
        f"--config.data.data_dir={data.data_dir}",
        f"--config.data.demo_tracks={data.demo_tracks}",
        f"--config.data.demo_seconds={data.demo_seconds}",
        f"--config.data.chunk_frames=({data.chunk_frames[0]},)",
        f"--config.batch_size={config.batch_size}",
        "--config.log_every=1",
        "--config.eval_every=0",
    ]


def run_train(args, devices=4, output=None):
    """The train command on `devices` CPU devices, its output to a pipe (or to `output`)."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.Popen(
        [sys.executable, "-m", "myna_rpe_jax.train", "--config=configs/tiny.py", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE if output is None else output,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_train_entry_point_runs_two_steps_on_four_devices(tiny_config, tmp_path):
    proc = run_train([f"--workdir={tmp_path}", "--config.total_steps=2", *overrides(tiny_config)])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "training on 4 devices (1 processes)" in out
    assert "[2] contrastive_accuracy=" in out and "loss=" in out
    assert checkpoints.checkpoint_manager(tmp_path).latest_step() == 2
    assert (tmp_path / "config.json").exists()
    assert list(tmp_path.glob("events.out.tfevents.*")), "no TensorBoard summaries"
    # Library chatter a user cannot act on stays out (train/__main__.py).
    for noise in ("libtpu", "orbax-checkpoint", "Load dataset info", "oneDNN"):
        assert noise not in out, noise


def test_two_trainings_started_on_one_workdir_both_succeed(tiny_config, tmp_path):
    """The second waits for the first (the workdir's lock), then resumes from its last step."""
    args = [f"--workdir={tmp_path}", "--config.total_steps=3", *overrides(tiny_config)]
    procs = [run_train(args, devices=1) for _ in range(2)]
    outs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs
    waited = [out for out in outs if "waiting for" in out and "being trained into by pid" in out]
    assert len(waited) == 1, outs
    assert "Resumed from step 3" in waited[0]
    assert "at step 3 of 3 already: nothing left to train" in waited[0]
    assert checkpoints.checkpoint_manager(tmp_path).latest_step() == 3


def test_resumed_run_matches_uninterrupted_run(tiny_config, tmp_path):
    straight = loop.train(tiny_config, str(tmp_path / "straight"))
    first = loop.train(tiny_config, str(tmp_path / "resumed"), stop_after=3)
    second = loop.train(tiny_config, str(tmp_path / "resumed"))
    assert [h["step"] for h in first] == [1, 2, 3]
    assert [h["step"] for h in second] == [4, 5, 6]
    for key in ("loss", "contrastive_accuracy", "grad_norm", "param_norm", "learning_rate"):
        np.testing.assert_array_equal(
            [h[key] for h in straight], [h[key] for h in first + second], err_msg=key
        )


def test_resume_logs_its_step(tiny_config, tmp_path, caplog):
    loop.train(tiny_config, str(tmp_path), stop_after=1)
    with caplog.at_level("INFO"):
        loop.train(tiny_config, str(tmp_path), stop_after=2)
    assert "Resumed from step 1" in caplog.text


def test_resume_with_a_changed_config_keeps_the_old_one_and_says_what_changed(
    tiny_config, tmp_path, caplog
):
    loop.train(tiny_config, str(tmp_path), stop_after=1)
    loop.train(tiny_config, str(tmp_path), stop_after=2)  # same config: nothing archived
    assert sorted(p.name for p in tmp_path.glob("config*.json")) == ["config.json"]
    tiny_config.total_steps = 4
    with caplog.at_level("WARNING"):
        loop.train(tiny_config, str(tmp_path))
    assert "changed config (total_steps: 6 -> 4)" in caplog.text
    assert checkpoints.read_config(tmp_path).total_steps == 4
    old = json.loads((tmp_path / "config.until_step2.json").read_text())
    assert old["total_steps"] == 6
    # What each checkpoint was trained with: steps up to 2 the archive, later ones config.json.
    assert [checkpoints.read_config(tmp_path, step).total_steps for step in (1, 2, 3)] == [6, 6, 4]
    # A second resume at step 2 (as if the last run had crashed before its next checkpoint):
    # the archive of what steps 1-2 ran with stays.
    tiny_config.total_steps = 8
    checkpoints.write_config(tmp_path, tiny_config, 2)
    assert json.loads((tmp_path / "config.until_step2.json").read_text())["total_steps"] == 6
    assert checkpoints.read_config(tmp_path).total_steps == 8


def test_resuming_a_run_from_before_a_field_existed_is_no_config_change(
    tiny_config, tmp_path, caplog
):
    """A config.json written before a model field was added lacks it; the run had the value
    the code takes for an absent field. A resume that keeps that value changes nothing (no
    warning, no archive); one that sets another value is a change, from that value."""
    loop.train(tiny_config, str(tmp_path), stop_after=1)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["model"]["length_scaling"] is False
    del stored["model"]["length_scaling"], stored["model"]["alibi_tile_skip"]  # an older run
    (tmp_path / "config.json").write_text(json.dumps(stored))
    with caplog.at_level("WARNING"):
        loop.train(tiny_config, str(tmp_path), stop_after=2)
    assert "changed config" not in caplog.text
    assert sorted(p.name for p in tmp_path.glob("config*.json")) == ["config.json"]
    tiny_config.model.length_scaling = True
    with caplog.at_level("WARNING"):
        loop.train(tiny_config, str(tmp_path), stop_after=3)
    assert "changed config (model.length_scaling: False -> True)" in caplog.text


@pytest.mark.parametrize("damage", ["truncated", "arrays gone"])
def test_resuming_from_a_damaged_checkpoint_says_so_and_how_to_go_back_one(
    tiny_config, tmp_path, damage, capsys
):
    """A damaged latest checkpoint used to be reported as one that 'does not fit the train
    state of this config', sending the user after a config that was fine."""
    import shutil

    tiny_config.checkpoint_every = 1
    loop.train(tiny_config, str(tmp_path), stop_after=2)
    folder = tmp_path / "checkpoints"
    for path in (folder / "2").rglob("*"):
        if damage == "truncated" and path.is_file():
            path.write_bytes(path.read_bytes()[:100])
        elif damage == "arrays gone" and path.name == "d" and path.is_dir():
            shutil.rmtree(path)
    capsys.readouterr()
    with pytest.raises(ValueError) as raised:
        loop.train(tiny_config, str(tmp_path), stop_after=3)
    message = str(raised.value)
    assert message.startswith(
        f"the checkpoint at step 2 in {folder} cannot be read, its files are damaged"
    ), message
    assert message.endswith(
        f"Move {folder / '2'} out of {folder} to resume from step 1, or train in a fresh --workdir"
    )
    assert "Event loop is closed" not in capsys.readouterr().err
    shutil.move(folder / "2", tmp_path / "2.damaged")
    history = loop.train(tiny_config, str(tmp_path), stop_after=3)
    assert history[-1]["step"] == 3 and checkpoints.load_params(tmp_path)[1] == 3


def test_nan_stops_training_and_keeps_last_good_checkpoint(tiny_config, tmp_path):
    tiny_config.checkpoint_every = 1
    loop.train(tiny_config, str(tmp_path), stop_after=2)
    tiny_config.optim.learning_rate = 1e38  # overflows float32 parameters: they become inf
    with pytest.raises(loop.NonFiniteLossError, match="last good checkpoint \\(step 2\\)"):
        loop.train(tiny_config, str(tmp_path))
    params, step = checkpoints.load_params(tmp_path)
    assert step == 2
    assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))


def test_a_preemption_save_of_a_diverged_state_stops_instead(tiny_config, tmp_path, monkeypatch):
    """A preemption signal at step 3 (orbax's check answers yes there) saves the state at a
    step that is neither a log nor a checkpoint step: it is checked for NaN first. Before,
    the inf parameters were saved as step 3 and later named the last good checkpoint."""
    import orbax.checkpoint as ocp

    tiny_config.checkpoint_every = 1
    loop.train(tiny_config, str(tmp_path), stop_after=2)
    tiny_config.update(checkpoint_every=100, log_every=100, total_steps=5)
    tiny_config.optim.learning_rate = 1e38
    monkeypatch.setattr(ocp.CheckpointManager, "reached_preemption", lambda _, step: step == 3)
    with pytest.raises(loop.NonFiniteLossError, match="at or before step 3; .*\\(step 2\\)"):
        loop.train(tiny_config, str(tmp_path))
    assert checkpoints.load_params(tmp_path)[1] == 2


def test_ctrl_c_while_a_checkpoint_is_written_finishes_it_and_says_so_in_two_lines(
    tiny_config, tmp_path
):
    """A checkpoint every step keeps a background save in flight when Ctrl-C comes. Before,
    the interpreter shut the save's executors down on the way out: ~450 lines of orbax
    tracebacks around `error: interrupted`, and the step left as a tmp folder."""
    workdir, log = tmp_path / "run", tmp_path / "train.log"
    args = [f"--workdir={workdir}", "--config.total_steps=5000", "--config.checkpoint_every=1"]
    with log.open("w") as out:
        proc = run_train([*args, *overrides(tiny_config)], devices=1, output=out)
        deadline = time.monotonic() + 240
        while "[4] contrastive_accuracy=" not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    text = log.read_text()
    assert code == 130, text
    assert "Traceback" not in text and "error: interrupted" in text, text
    whole = re.search(r"interrupted; the latest checkpoint, step (\d+), is whole", text)
    assert whole, text
    assert not list((workdir / "checkpoints").glob("*tmp*"))
    assert checkpoints.checkpoint_manager(workdir).latest_step() == int(whole[1])


def test_loss_falls_on_the_demo_set(tiny_config, tmp_path):
    tiny_config.total_steps = 100
    tiny_config.checkpoint_every = 1000
    history = loop.train(tiny_config, str(tmp_path))
    loss = np.array([h["loss"] for h in history])
    assert loss[-10:].mean() < 0.7 * loss[:10].mean(), loss


def test_bad_config_field_fails_with_its_name(tiny_config, tmp_path):
    proc = run_train([f"--workdir={tmp_path}", "--config.optim.learnin_rate=1e-3"])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "learnin_rate" in out
    tiny_config.model.posemb = ("alibi3d",)
    with pytest.raises(ValueError, match="alibi3d"):
        loop.train(tiny_config, str(tmp_path / "bad"))


def test_batch_must_divide_over_devices(tiny_config, tmp_path):
    tiny_config.batch_size = 6
    with pytest.raises(ValueError, match="not divisible by the 4 devices"):
        loop.train(tiny_config, str(tmp_path))


def test_checkpoint_trained_on_four_devices_loads_on_one(tiny_config, tmp_path):
    loop.train(tiny_config, str(tmp_path), stop_after=1)
    code = (
        "import jax; from myna_rpe_jax.run import checkpoints;"
        f"params, step = checkpoints.load_params({str(tmp_path)!r});"
        "print('devices', jax.device_count(), 'step', step, len(jax.tree.leaves(params)))"
    )
    env = dict(os.environ, XLA_FLAGS="")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "devices 1 step 1" in out.stdout


def test_learned_table_follows_the_chunk_length_from_train_to_embed(tiny_config, tmp_path):
    """configs/myna.py with shorter chunks trains: max_time_patches is derived from
    chunk_frames (96 frames = 6 patches), recorded in config.json and used by embedding."""
    from myna_rpe_jax.embed.embedder import load_embedder

    flags = [f for f in overrides(tiny_config) if "chunk_frames" not in f]
    args = [
        "--config=configs/myna.py",
        f"--workdir={tmp_path}",
        *flags,
        "--config.data.chunk_frames=(96,)",
        "--config.model.variant=tiny",
        "--config.total_steps=2",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "myna_rpe_jax.train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert checkpoints.read_config(tmp_path).model.max_time_patches == 6
    embedder, config, step = load_embedder(tmp_path)
    assert step == 2 and embedder.encoder.max_time_patches == 6
    assert embedder.encoder.posemb == ("learned",)
    mel = np.random.default_rng(0).uniform(-80, 0, (128, 96)).astype(np.float16)
    assert np.all(np.isfinite(embedder.embed([mel], mode="full")))

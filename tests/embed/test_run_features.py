"""Self-contained runs: a run trained on non-default log-mel features (16 kHz, hop 512) records
them in WORKDIR/features.json and embeds with them on a machine without its training data; a
dataset prepared with other settings is refused with a one-line reason."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from configs import tiny
from myna_rpe_jax.data import datasets, locations
from myna_rpe_jax.data.audio import MelConfig, audio_to_mel
from myna_rpe_jax.data.demo import music
from myna_rpe_jax.embed import __main__ as embed_cli
from myna_rpe_jax.embed import collection
from myna_rpe_jax.embed import embedder as embedder_lib
from myna_rpe_jax.embed.file import load_npz
from myna_rpe_jax.run import checkpoints
from myna_rpe_jax.train import loop
from tests.conftest import DEMO
from tests.embed.test_embedder import write_tone

FEATURES = MelConfig(sample_rate=16000, hop_length=512)
TRACKS, SECONDS = 16, 4.0


class Run(NamedTuple):
    workdir: Path  # the run as trained
    elsewhere: Path  # a copy, its training data gone (moved to moved_data)
    moved_data: Path
    config: object


def config_on(data_root: Path, tracks: int, seconds: float):
    config = tiny.get_config()
    config.data.update(
        data_dir=str(data_root),
        demo_tracks=tracks,
        demo_seconds=seconds,
        chunk_frames=(64,),
        read_threads=2,
    )
    config.batch_size, config.total_steps, config.eval_every = 8, 2, 0
    config.log_every, config.checkpoint_every = 1, 1000
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """Two steps on a 16-track demo set prepared at 16 kHz, hop 512; then the run is copied
    and its training data moved away, as on another machine."""
    base = tmp_path_factory.mktemp("run_features")
    data_root = base / "data"
    data_dir = locations.demo_data_dir(data_root, TRACKS, SECONDS, 0)
    music.generate_demo(data_dir / "audio_source", num_tracks=TRACKS, seconds=SECONDS, seed=0)
    datasets.prepare("demo", data_dir / "audio_source", data_dir, mel=FEATURES, progress=False)
    config = config_on(data_root, TRACKS, SECONDS)
    loop.train(config, str(base / "run"))
    shutil.copytree(base / "run", base / "elsewhere")
    os.replace(data_root, base / "moved_data")
    return Run(base / "run", base / "elsewhere", base / "moved_data", config)


def test_training_records_the_features_of_its_data(run):
    recorded = checkpoints.read_features_file(run.workdir / "features.json")
    assert recorded == FEATURES
    assert (run.workdir / "config.json").exists()


def test_a_copied_run_embeds_audio_with_its_own_features(run, tmp_path):
    wav = tmp_path / "song.wav"
    write_tone(wav, 8.0, seed=3, sample_rate=22050)
    out = tmp_path / "song.npz"
    argv = ["--workdir", str(run.elsewhere), "--audio", str(wav), "--output", str(out)]
    assert embed_cli.main([*argv, "--no-progress"]) == 0
    result = load_npz(out)
    assert result.meta["mel_source"] == str(run.elsewhere.absolute() / "features.json")
    assert result.meta["mel"]["sample_rate"] == 16000 and result.meta["mel"]["hop_length"] == 512
    # The same as the encoder on the mel computed here with the run's settings (8 s at
    # 31.25 frames/s: 251 frames, not the 801 of the defaults).
    mel, _ = audio_to_mel(wav, FEATURES)
    assert mel.shape == (128, 251)
    embedder = embedder_lib.load_embedder(run.elsewhere)[0]
    expected = embedder.embed([mel], "full")[0]
    np.testing.assert_allclose(result.embeddings[0], expected, rtol=1e-4, atol=1e-5)


def test_a_dataset_with_other_features_is_refused_in_one_line(run, demo_root, tmp_path):
    """The shared demo set has the default features (44.1 kHz, hop 441)."""
    embedder = embedder_lib.load_embedder(run.elsewhere)[0]
    default_dir = locations.demo_data_dir(demo_root, DEMO["tracks"], DEMO["seconds"], 0)
    with pytest.raises(collection.MelMismatchError) as caught:
        collection.dataset_embeddings(embedder, "demo", default_dir, "chunks", progress=False)
    message = str(caught.value)
    assert "\n" not in message
    assert "sample_rate 16000 (run) vs 44100 (data)" in message
    assert "hop_length 512 (run) vs 441 (data)" in message
    assert "n_fft" not in message.split(": prepare")[0]  # only the fields that differ
    assert "python -m data_prep.build --dataset demo" in message
    assert "--sample-rate 16000" in message and "--hop-length 512" in message
    # Through the CLI: an error exit, no file.
    out = tmp_path / "refused.npz"
    argv = ["--workdir", str(run.elsewhere), "--dataset", "demo", "--data-dir", str(default_dir)]
    assert embed_cli.main([*argv, "--output", str(out), "--no-progress"]) == 1
    assert not out.exists()


def test_a_run_without_features_json_falls_back_to_its_data_with_a_warning(run, tmp_path, caplog):
    legacy = tmp_path / "legacy"
    shutil.copytree(run.elsewhere, legacy)
    (legacy / "features.json").unlink()
    with pytest.raises(FileNotFoundError, match="features.json not found.*not on this machine"):
        checkpoints.read_features(legacy)
    # Where its training data is (config.data.data_dir), it is read from there, with a warning.
    config = json.loads((legacy / "config.json").read_text())
    config["data"]["data_dir"] = str(run.moved_data)
    (legacy / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="myna_rpe_jax.run"):
        mel, source = checkpoints.read_features(legacy)
    assert mel == FEATURES and source.startswith("training dataset 'demo' in ")
    assert "has no features.json" in caplog.text


def test_a_resume_on_data_with_other_features_is_refused(run, demo_root, tmp_path):
    workdir = tmp_path / "resumed"
    shutil.copytree(run.elsewhere, workdir)
    config = config_on(demo_root, DEMO["tracks"], DEMO["seconds"])  # the default features
    config.total_steps = 4
    with pytest.raises(ValueError, match="other log-mel features.*sample_rate 16000 \\(run\\)"):
        loop.train(config, str(workdir))
    assert checkpoints.read_features_file(workdir / "features.json") == FEATURES

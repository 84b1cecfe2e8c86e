"""probe's embedding cache (OUT/embeddings): reused only for the same parameters, embedding
settings and prepared data; speed settings share it; a damaged file is made again."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from myna_rpe_jax.data import datasets, locations
from myna_rpe_jax.embed.file import load_npz
from myna_rpe_jax.probe import __main__ as probe_cli
from myna_rpe_jax.probe import evaluate
from tests.conftest import DEMO
from tests.embed.test_embedder import trained_tiny_run

REUSED, RECOMPUTED = "reusing cached embeddings", "recomputing"


def probe(workdir: Path, out: Path, **settings) -> dict:
    """The demo probed in `full` mode alone, without intervals: the cheapest probe."""
    settings = {"modes": ("full",), "progress": False, "intervals": False, **settings}
    return evaluate.run(str(workdir), ["demo"], out, **settings)


def cache_files(results: dict) -> list[Path]:
    """Every embedding file a probe of the demo used: its modes' and its baselines'."""
    demo = results["tasks"]["demo"]
    parts = [*demo["modes"].values(), *demo["baselines"].values()]
    return sorted({Path(part["embeddings"]) for part in parts})


def all_cached(results: dict) -> list[bool]:
    demo = results["tasks"]["demo"]
    return [part["cached"] for part in [*demo["modes"].values(), *demo["baselines"].values()]]


@pytest.fixture(scope="module")
def first_probe(tmp_path_factory):
    """The session's tiny run probed once (with the random-init baseline): its fresh cache."""
    run = trained_tiny_run(tmp_path_factory)
    out = tmp_path_factory.mktemp("cache")
    return run, out, probe(run.workdir, out, baseline_kinds=["random"])


def test_speed_only_settings_reuse_the_cache(first_probe, tmp_path, caplog):
    """The attention kernel, tile skipping and token budget change how fast, not what is
    embedded: the encoder's and the random-init baseline's files are reused untouched."""
    run, out, _ = first_probe
    shutil.copytree(out / "embeddings", tmp_path / "embeddings")
    copies = sorted((tmp_path / "embeddings").iterdir())
    before = [path.stat().st_mtime_ns for path in copies]
    settings = dict(attention_kernel="xla", alibi_tile_skip=True, max_tokens=4096)
    with caplog.at_level("INFO", logger="myna_rpe_jax"):
        again = probe(run.workdir, tmp_path, baseline_kinds=["random"], **settings)
    assert again["config"]["model"]["attention_kernel"] == "xla"
    assert all_cached(again) == [True, True] and RECOMPUTED not in caplog.text
    assert cache_files(again) == copies and [p.stat().st_mtime_ns for p in copies] == before


def test_damaged_cache_is_recomputed_with_a_warning(first_probe, tmp_path, caplog):
    """A cache file cut short (a full disk) or emptied is the probe's own: made again, with a
    warning naming it, not a dead end for every later probe (the command exits 0)."""
    run, out, first = first_probe
    shutil.copytree(out / "embeddings", tmp_path / "embeddings")
    name = Path(first["tasks"]["demo"]["modes"]["full"]["embeddings"]).name
    damaged, original = tmp_path / "embeddings" / name, load_npz(out / "embeddings" / name)
    whole = damaged.read_bytes()
    flipped = bytearray(whole)
    flipped[whole.index(b"embeddings.npy") + 1000] ^= 0xFF  # a value: only the CRC tells
    for content, why in [
        (whole[:100], "BadZipFile: File is not a zip file"),
        (bytes(flipped), "BadZipFile: Bad CRC-32 for file 'embeddings.npy'"),
    ]:
        damaged.write_bytes(content)
        caplog.clear()
        with caplog.at_level("INFO", logger="myna_rpe_jax"):
            again = probe(run.workdir, tmp_path)
        warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [f"recomputing {damaged}: the cached file cannot be read ({why})"]
        assert all_cached(again) == [False]
        np.testing.assert_allclose(load_npz(damaged).embeddings, original.embeddings, atol=1e-5)
    damaged.write_bytes(b"")
    argv = ["--workdir", str(run.workdir), "--tasks", "demo", "--output", str(tmp_path)]
    assert probe_cli.main([*argv, "--modes", "full", "--no-baselines", "--no-progress"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["tasks"]["demo"]["modes"]["full"]["cached"] is False
    assert load_npz(damaged).track_ids == original.track_ids


def test_edited_model_setting_is_recomputed_and_runs_keep_their_own_files(
    tiny_config, tmp_path, caplog
):
    """A cache made at one step of a workdir is not reused when an embedding setting changed
    (config.json edited: the same parameters, the same file, made again). Another run (other
    parameters) probed into the same OUT gets a file of its own, so probing the two in turn
    reuses both (before, they replaced each other's file every time)."""
    from myna_rpe_jax.train import loop

    def probed(workdir: Path) -> tuple[dict, Path]:
        results = probe(workdir, out)
        return results, cache_files(results)[0]  # one file: the full mode's

    tiny_config.total_steps = 2
    first_run, other_run, out = tmp_path / "run", tmp_path / "other", tmp_path / "out"
    loop.train(tiny_config, str(first_run))
    _, first_file = probed(first_run)
    first_embeddings = load_npz(first_file).embeddings
    config = json.loads((first_run / "config.json").read_text())
    config["model"]["posemb"] = ["alibi1d"]
    (first_run / "config.json").write_text(json.dumps(config))
    with caplog.at_level("INFO", logger="myna_rpe_jax"):
        edited, edited_file = probed(first_run)
    recomputed = [r.message for r in caplog.records if r.message.startswith(RECOMPUTED)]
    assert len(recomputed) == 1 and all_cached(edited) == [False] and edited_file == first_file
    assert recomputed[0].endswith("other settings: model.posemb ['alibi2d'] -> ['alibi1d']")
    edited_embeddings = load_npz(edited_file).embeddings
    assert np.abs(edited_embeddings - first_embeddings).max() > 1e-3
    caplog.clear()

    tiny_config.seed, tiny_config.model.posemb = 7, ("alibi1d",)
    loop.train(tiny_config, str(other_run))
    with caplog.at_level("INFO", logger="myna_rpe_jax"):
        other, other_file = probed(other_run)
        again, _ = probed(first_run)
    assert other["step"] == edited["step"] == 2 and all_cached(other) == [False]
    assert other_file != edited_file and RECOMPUTED not in caplog.text
    assert all_cached(again) == [True] and again["table"] == edited["table"]
    assert np.array_equal(load_npz(edited_file).embeddings, edited_embeddings)  # untouched
    assert np.abs(load_npz(other_file).embeddings - edited_embeddings).max() > 1e-3
    assert other["table"] != edited["table"]


def test_dataset_rebuilt_in_the_same_data_dir_is_recomputed(
    first_probe, demo_root, tmp_path, caplog
):
    """`data_prep.build --overwrite` into the same --data-dir: the cache is made again from the
    new files (reading the dataset changes nothing: the second probe reuses it)."""
    run, _, _ = first_probe
    audio = locations.demo_data_dir(demo_root, **DEMO) / "audio_source"  # 24 short tracks
    data_dir, out = tmp_path / "data", tmp_path / "out"
    datasets.prepare("demo", audio, data_dir, progress=False)
    assert all_cached(probe(run.workdir, out, data_dir=str(data_dir))) == [False]
    assert all_cached(probe(run.workdir, out, data_dir=str(data_dir))) == [True]
    datasets.prepare("demo", audio, data_dir, overwrite=True, progress=False)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="myna_rpe_jax"):
        again = probe(run.workdir, out, data_dir=str(data_dir))
    assert all_cached(again) == [False] and REUSED not in caplog.text
    recomputed = [r.message for r in caplog.records if r.message.startswith(RECOMPUTED)]
    assert len(recomputed) == 1 and re.search(r"data_files '\w+' -> '\w+'$", recomputed[0])

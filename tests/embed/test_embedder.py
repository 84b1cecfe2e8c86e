"""embed: whole tracks and chunks from a really trained tiny checkpoint, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from configs import tiny
from myna_rpe_jax.data import locations
from myna_rpe_jax.data.datasets import dataset_tasks
from myna_rpe_jax.embed import __main__ as embed_cli
from myna_rpe_jax.embed import embedder as embedder_lib
from myna_rpe_jax.embed.file import load_npz
from myna_rpe_jax.train import loop

TRAIN_STEPS = 80
DEMO_TRACKS, DEMO_SECONDS = 48, 6.0


class TinyRun(NamedTuple):
    workdir: Path
    demo_dir: Path  # the prepared demo set it trained on


def trained_tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """A tiny model trained on a small demo set, shared by every test file of the session
    (built by the first one that asks, under the session's base temporary folder)."""
    base = tmp_path_factory.getbasetemp()
    workdir, data_root = base / "tiny_run", base / "tiny_data"
    if not (workdir / "checkpoints" / str(TRAIN_STEPS)).exists():
        config = tiny.get_config()
        config.total_steps, config.batch_size = TRAIN_STEPS, 16
        config.data.update(demo_tracks=DEMO_TRACKS, demo_seconds=DEMO_SECONDS)
        config.data.data_dir = str(data_root)
        config.log_every, config.checkpoint_every, config.eval_every = 10, 1000, 0
        config.data.chunk_frames = (256,)  # chunks shorter than the tracks, for the tests
        loop.train(config, str(workdir))
    demo_dir = locations.demo_data_dir(data_root, DEMO_TRACKS, DEMO_SECONDS, 0)
    return TinyRun(workdir, demo_dir)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> TinyRun:
    return trained_tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def embedder(tiny_run) -> embedder_lib.Embedder:
    return embedder_lib.load_embedder(tiny_run.workdir)[0]


def random_mel(frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-80, 0, (128, frames)).astype(np.float16)


def apply_alone(embedder: embedder_lib.Embedder, mel: np.ndarray) -> np.ndarray:
    """The encoder on one spectrogram, batch of 1, without the Embedder's batching."""
    cls, _ = embedder.encoder.apply(
        {"params": embedder.params}, mel[None].astype(np.float32), train=False
    )
    return np.asarray(cls[0])


def write_tone(path: Path, seconds: float, seed: int, sample_rate: int = 16000) -> None:
    """A gliding tone in noise, different for every seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = rng.uniform(100, 800)
    phase = 2 * np.pi * (f0 * t + 20 * np.sin(2 * np.pi * t / rng.uniform(3, 9)))
    y = 0.5 * np.sin(phase) * (1 + 0.5 * np.sin(2 * np.pi * t * rng.uniform(0.5, 4)))
    y += 0.05 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.8 * y / np.abs(y).max()).astype(np.float32), sample_rate)


@pytest.mark.parametrize(
    "count,max_batch,multiple",
    [(1, 8, 1), (8, 8, 1), (13, 8, 1), (5, 6, 1), (3, 1, 1), (255, 256, 1), (1, 8, 4), (27, 16, 4)],
)
def test_batch_sizes_cover_every_input_once_with_few_shapes(count, max_batch, multiple):
    sizes = embedder_lib.batch_sizes(count, max_batch, multiple)
    assert sum(real for real, _ in sizes) == count
    assert all(padded % multiple == 0 and real <= padded <= max_batch for real, padded in sizes)
    rest = [padded // multiple for _, padded in sizes if padded != max_batch]
    assert all(size & (size - 1) == 0 for size in rest)  # powers of two (times multiple) ...
    assert len(set(rest)) == len(rest)  # ... each at most once
    # Only the last batch repeats inputs, and fewer than `multiple` of them.
    assert all(real == padded for real, padded in sizes[:-1])
    assert sizes[-1][1] - sizes[-1][0] < multiple


def test_batches_split_over_devices_give_the_one_device_result(tiny_run):
    """The tests run with 4 (fake CPU) devices: 5 tracks of one bucket become a batch of 4 and
    one of 1 padded to 4; the same embeddings as on one device."""
    import jax

    assert len(jax.local_devices()) == 4
    mels = [random_mel(frames, seed) for seed, frames in enumerate([320, 320, 330, 333, 300, 500])]
    four = embedder_lib.load_embedder(tiny_run.workdir)[0]
    one = embedder_lib.load_embedder(tiny_run.workdir)[0]
    one = embedder_lib.Embedder(
        one.encoder, one.params, one.chunk_frames, devices=jax.local_devices()[:1]
    )
    assert len(four.devices) == 4
    np.testing.assert_allclose(
        four.embed(mels, "full"), one.embed(mels, "full"), rtol=1e-5, atol=1e-6
    )
    assert all(shape[0] % 4 == 0 for shape in four.shapes_compiled)


def test_the_fused_kernel_runs_on_each_device_slice_not_on_the_gathered_batch(tiny_run):
    """Batches are split by shard_map: XLA cannot partition the fused Pallas kernel (a custom
    call; here in interpret mode), and under plain jit it gathers the whole batch onto every
    device first. The embeddings are the default kernels'."""
    base = embedder_lib.load_embedder(tiny_run.workdir)[0]
    encoder = base.encoder.clone(attention_kernel="pallas", blockwise_threshold=32)
    fused = embedder_lib.Embedder(encoder, base.params, base.chunk_frames, max_padding=0.0)
    mels = [random_mel(320, seed) for seed in range(4)]  # 8 x 20 + 1 = 161 tokens: past 32
    batch = jax.device_put(np.stack(mels), fused._batch_sharding)  # as `forward` passes it
    compiled = fused._apply.lower(fused.params, batch, None).compile()
    assert "all-gather" not in compiled.as_text()
    assert "pallas_call" in str(jax.make_jaxpr(fused._apply)(fused.params, batch, None))
    np.testing.assert_allclose(fused.embed(mels, "full"), base.embed(mels, "full"), atol=2e-5)


def test_full_mode_equals_each_track_alone(embedder):
    """Tracks of several lengths in one call (333 and 330 both crop to 320 frames; 350 crops to
    336 and is padded to a 352-frame bucket): each is the encoder on that track alone, cropped
    to whole patches, unpadded."""
    mels = [random_mel(frames, seed) for seed, frames in enumerate([300, 333, 330, 350])]
    assert embedder.bucket(336) == 352
    out = embedder.embed(mels, "full")
    assert out.shape == (4, 64) and out.dtype == np.float32
    for mel, row in zip(mels, out, strict=True):
        cropped = mel[:, : mel.shape[1] // 16 * 16]
        np.testing.assert_allclose(row, apply_alone(embedder, cropped), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("max_padding", [0.0, 0.05, 0.125, 0.5])
def test_length_buckets_pad_little_and_are_few(max_padding):
    frames = np.arange(16, 16 * 5000, 16)
    buckets = np.array([embedder_lib.bucket_frames(f, 16, max_padding) for f in frames])
    assert np.all(buckets % 16 == 0) and np.all(buckets >= frames)
    assert np.all(buckets - frames <= max_padding * frames)
    if max_padding == 0:
        np.testing.assert_array_equal(buckets, frames)
    else:  # at most 2 / max_padding buckets per doubling of length, past the exact short ones
        octaves = np.log2(frames[-1] * max_padding)
        assert len(set(buckets)) <= 1 / max_padding + octaves * 2 / max_padding


def test_bucketing_keeps_embeddings_and_compiles_fewer_shapes(tiny_run):
    lengths = [640, 656, 688, 700, 720, 752, 800, 811]
    mels = [random_mel(frames, seed) for seed, frames in enumerate(lengths)]
    exact = embedder_lib.load_embedder(tiny_run.workdir, max_padding=0.0)[0]
    bucketed = embedder_lib.load_embedder(tiny_run.workdir, max_padding=0.125)[0]
    np.testing.assert_allclose(
        bucketed.embed(mels, "full"), exact.embed(mels, "full"), rtol=1e-4, atol=1e-5
    )
    compiled_lengths = lambda e: sorted({shape[2] for shape in e.shapes_compiled})
    # 700 and 811 frames crop to 688 and 800 (whole patches): six lengths, six programs.
    assert compiled_lengths(exact) == [640, 656, 688, 720, 752, 800]
    # 40-50 patch columns round up to multiples of 4 (12.5% of 40 is 5 > 4): four programs.
    assert compiled_lengths(bucketed) == [640, 704, 768, 832]


def test_chunks_mode_is_the_mean_of_each_chunk_embedded_alone(embedder):
    chunk = embedder.chunk_frames
    assert chunk == 256  # configs/tiny.py trains on 256-frame chunks
    long_track, short_track = random_mel(2 * chunk + 100, 5), random_mel(150, 6)
    out = embedder.embed([long_track, short_track], "chunks")
    expected_long = np.mean(
        [apply_alone(embedder, long_track[:, k * chunk : (k + 1) * chunk]) for k in range(2)],
        axis=0,
    )
    looped = np.concatenate([short_track, short_track], axis=1)[:, :chunk]
    np.testing.assert_allclose(out[0], expected_long, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[1], apply_alone(embedder, looped), rtol=1e-4, atol=1e-5)


def test_chunks_that_are_not_whole_patches_lose_only_their_last_frames(embedder):
    """200-frame chunks (12.5 patch columns): each is embedded as its first 192 frames."""
    odd = embedder_lib.Embedder(embedder.encoder, embedder.params, chunk_frames=200)
    track = random_mel(450, 7)
    expected = np.mean([apply_alone(embedder, track[:, k : k + 192]) for k in (0, 200)], axis=0)
    np.testing.assert_allclose(odd.embed([track], "chunks")[0], expected, rtol=1e-4, atol=1e-5)


def test_embed_cli_on_a_folder_of_long_tracks(tiny_run, tmp_path):
    """60 s tracks (23x the 2.56 s training chunks) in one pass each: finite embeddings,
    equal alone and batched; a corrupt file is skipped and reported, not fatal."""
    folder = tmp_path / "music"
    for i, name in enumerate(["a.wav", "sub/b.wav", "c.flac"]):
        write_tone(folder / name, 60.0, seed=i)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (folder / "notes.txt").write_text("not audio")
    out = tmp_path / "emb.npz"
    common = ["--workdir", str(tiny_run.workdir), "--no-progress"]
    argv = [*common, "--audio", str(folder), "--output", str(out), "--parquet"]
    assert embed_cli.main(argv) == 0

    result = load_npz(out)
    assert result.track_ids == ["a", "c", "sub/b"]
    assert result.embeddings.shape == (3, 64) and np.isfinite(result.embeddings).all()
    assert result.split == ["", "", ""]
    assert len(result.skipped) == 1 and "broken.wav" in result.skipped[0]
    assert result.meta["mode"] == "full" and result.meta["step"] == TRAIN_STEPS
    assert result.meta["mel"]["hop_length"] == 441
    # The settings recorded in the run (features.json), not looked up again.
    assert result.meta["mel_source"] == str(tiny_run.workdir.absolute() / "features.json")

    alone = tmp_path / "alone.npz"
    assert embed_cli.main([*common, "--audio", str(folder / "c.flac"), "--output", str(alone)]) == 0
    single = load_npz(alone)
    assert single.track_ids == ["c"]
    np.testing.assert_allclose(single.embeddings[0], result.embeddings[1], rtol=1e-4, atol=1e-5)
    # 3,001 tokens: past the blockwise threshold, where the fused kernel takes over (interpret
    # mode here); the embedding is the same.
    fused = tmp_path / "fused.npz"
    argv = [*common, "--audio", str(folder / "c.flac"), "--output", str(fused)]
    assert embed_cli.main([*argv, "--attention-kernel", "pallas"]) == 0
    fused = load_npz(fused)
    assert fused.meta["config"]["model"]["attention_kernel"] == "pallas"
    np.testing.assert_allclose(fused.embeddings, single.embeddings, atol=2e-5)
    skipping = tmp_path / "skipping.npz"
    argv = [*common, "--audio", str(folder / "c.flac"), "--output", str(skipping)]
    assert embed_cli.main([*argv, "--tile-skip", "on"]) == 0
    skipping = load_npz(skipping)
    assert skipping.meta["config"]["model"]["alibi_tile_skip"] is True
    np.testing.assert_allclose(skipping.embeddings, single.embeddings, atol=2e-5)

    table = pq.read_table(out.with_suffix(".parquet"))
    assert table.column("track_id").to_pylist() == result.track_ids
    np.testing.assert_array_equal(
        np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), result.embeddings
    )
    assert json.loads(table.schema.metadata[b"meta"])["step"] == TRAIN_STEPS


def test_embed_cli_on_a_prepared_dataset(tiny_run, tmp_path):
    out = tmp_path / "demo.npz"
    argv = ["--workdir", str(tiny_run.workdir), "--dataset", "demo"]
    argv += ["--data-dir", str(tiny_run.demo_dir), "--output", str(out), "--mode", "chunks"]
    assert embed_cli.main([*argv, "--no-progress"]) == 0
    result = load_npz(out)
    assert len(result.track_ids) == DEMO_TRACKS
    assert set(result.split) == {"train", "valid", "test"}
    tasks = dataset_tasks("demo")
    assert set(result.labels) == {spec.label_key for spec in tasks.values()}
    assert result.labels["tags"].shape == (DEMO_TRACKS, tasks["tags"].num_outputs)
    assert result.meta["mode"] == "chunks" and result.meta["chunk_frames"] == 256
    assert result.meta["labels"]["genre"]["class_names"] == list(tasks["genre"].class_names)


def test_embed_cli_reports_missing_inputs(tiny_run, tmp_path, capsys):
    argv = ["--workdir", str(tiny_run.workdir), "--output", str(tmp_path / "x.npz")]
    assert embed_cli.main([*argv, "--audio", str(tmp_path / "nowhere")]) == 1
    assert embed_cli.main([*argv, "--dataset", "gtzan", "--data-dir", str(tmp_path)]) == 1
    # Folders with nothing to embed: said in embed's terms, not a build's --source layout.
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("no audio")
    capsys.readouterr()
    assert embed_cli.main([*argv, "--audio", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert f"error: --audio {tmp_path / 'empty'}: it holds no files; pass an audio file" in err
    assert "<source>" not in err and "skipped.tsv" not in err
    assert embed_cli.main([*argv, "--audio", str(tmp_path / "notes")]) == 1
    err = capsys.readouterr().err
    assert f"error: --audio {tmp_path / 'notes'}: no audio file under it, only 1 other" in err
    assert not (tmp_path / "x.npz").exists()


def test_embed_cli_rejects_bad_flags_and_outputs_before_any_work(tiny_run, tmp_path):
    (tmp_path / "a_file").write_text("")
    base = ["--workdir", str(tiny_run.workdir), "--audio", str(tmp_path)]
    for extra in (
        ["--output", str(tmp_path)],  # a folder
        ["--output", str(tmp_path / "a_file" / "x.npz")],  # under a file
        ["--output", str(tmp_path / "x.npz"), "--max-padding", "2"],
        ["--output", str(tmp_path / "x.npz"), "--max-tokens", "0"],
        ["--output", str(tmp_path / "x.npz"), "--workers", "0"],
        ["--output", str(tmp_path / "x.npz"), "--splits", "train"],  # only with --dataset
        ["--output", str(tmp_path / "x.npz"), "--data-dir", str(tmp_path)],  # likewise
        ["--output", ""],  # the current folder, as Path("") reads
    ):
        with pytest.raises(SystemExit) as exit_info:
            embed_cli.main([*base, *extra])
        assert exit_info.value.code == 2, extra


def test_embed_cli_refuses_a_split_named_twice(tiny_run, tmp_path, capsys):
    """`--splits valid,valid` used to embed every track of valid twice, under one id; so did
    `valid,validation` (one split under two names)."""
    argv = ["--workdir", str(tiny_run.workdir), "--dataset", "demo"]
    argv += ["--data-dir", str(tiny_run.demo_dir), "--output", str(tmp_path / "x.npz")]
    for splits in ("valid,test,valid", "validation,test,valid"):
        with pytest.raises(SystemExit) as exit_info:
            embed_cli.main([*argv, "--splits", splits])
        assert exit_info.value.code == 2
        assert "--splits names valid more than once" in capsys.readouterr().err


def test_the_fused_kernel_asked_for_off_a_gpu_says_it_is_interpreted(capsys):
    import argparse

    from myna_rpe_jax.embed import collection

    parser = argparse.ArgumentParser()
    collection.add_embedder_flags(parser)
    off_gpu = jax.default_backend() != "gpu"
    for kernel, noted in (("pallas", off_gpu), ("auto", False), ("xla", False)):
        collection.check_embedder_flags(parser, parser.parse_args(["--attention-kernel", kernel]))
        assert ("Pallas interpret mode" in capsys.readouterr().err) == noted, kernel


def test_tile_skip_auto_unsets_what_the_run_set(tiny_run, tmp_path):
    """A run trained with alibi_tile_skip=False goes back to the default (skip with the fused
    kernel only) with --tile-skip auto; on and off set it; no flag keeps the run's."""
    import argparse
    import shutil

    from myna_rpe_jax.embed import collection

    workdir = tmp_path / "run"
    shutil.copytree(tiny_run.workdir, workdir)
    stored = json.loads((workdir / "config.json").read_text())
    stored["model"]["alibi_tile_skip"] = False
    (workdir / "config.json").write_text(json.dumps(stored))
    parser = argparse.ArgumentParser()
    collection.add_embedder_flags(parser)
    for flags, expected in (([], False), (["auto"], None), (["on"], True), (["off"], False)):
        args = parser.parse_args(["--tile-skip", *flags] if flags else [])
        settings = collection.embedder_settings(args)
        _, config, _ = embedder_lib.load_embedder(workdir, **settings)
        assert config.model.alibi_tile_skip is expected, flags


def test_a_step_embeds_with_the_config_it_was_trained_with(tiny_run, tmp_path):
    """A resume with another config.model.alibi_metric (same parameters, other embeddings)
    archives the old config: the checkpoints before it must still embed as they did."""
    import shutil

    from myna_rpe_jax.run import checkpoints

    workdir = tmp_path / "run"
    shutil.copytree(tiny_run.workdir, workdir)
    before, config, step = embedder_lib.load_embedder(workdir)
    changed = config.copy_and_resolve_references()
    assert config.model.alibi_metric == "manhattan"
    changed.model.alibi_metric = "euclidean"
    checkpoints.write_config(workdir, changed, step)  # what the resume at `step` writes
    assert (workdir / f"config.until_step{step}.json").exists()
    for asked in (None, step):
        after, loaded, _ = embedder_lib.load_embedder(workdir, asked)
        assert loaded.model.alibi_metric == config.model.alibi_metric
        spec = random_mel(300, seed=3)
        np.testing.assert_array_equal(after.embed([spec]), before.embed([spec]))


def test_damaged_run_files_are_named_with_what_to_do(tiny_run, tmp_path):
    """A config.json that is not JSON, and a checkpoint whose array files are gone: one
    message naming the file or step, not a JSON or tensorstore traceback."""
    import shutil

    from myna_rpe_jax.run import checkpoints

    broken = tmp_path / "run"
    shutil.copytree(tiny_run.workdir, broken)
    for text in ("{bad", "[1, 2]", "{}", '{"model": 3}'):  # not JSON; JSON of another shape
        (broken / "config.json").write_text(text)
        with pytest.raises(ValueError, match=r"config.json is not the JSON config train writes"):
            checkpoints.read_config(broken)
    (broken / "config.json").unlink()
    (broken / "config.json").mkdir()
    with pytest.raises(ValueError, match=r"config.json is not the JSON config train writes"):
        checkpoints.read_config(broken)
    (broken / "config.json").rmdir()
    shutil.copy(tiny_run.workdir / "config.json", broken / "config.json")
    for data in (broken / "checkpoints" / str(TRAIN_STEPS)).rglob("d"):
        shutil.rmtree(data)
    with pytest.raises(OSError, match=rf"checkpoint step {TRAIN_STEPS} in .* cannot be read"):
        checkpoints.load_params(broken)  # the CLI's line: tests/test_cli_errors.py

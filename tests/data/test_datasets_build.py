"""Building datasets end to end: the CLI, bad input, resume after a kill, worker crashes.

Real tfds builds of tiny generated audio (22.05 kHz, 2 s) with a small MelConfig; stored
mels are checked against audio_to_mel of the same file, labels against the source CSV.
"""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from tensorflow_datasets.core.utils.shard_utils import ShardConfig

from data_prep import build
from myna_rpe_jax.data.audio import MelConfig, audio_to_mel
from myna_rpe_jax.data.datasets import (
    DatasetNotPreparedError,
    LayoutError,
    available_splits,
    dataset_metadata,
    open_split,
    prepare,
)
from myna_rpe_jax.data.datasets.builder import cache_dir, make_builder, make_config
from myna_rpe_jax.data.datasets.cache import (
    CRASH_REASON,
    MelEntry,
    UnexpectedDecodeError,
    check_unexpected,
    ensure_mels,
    load_mel,
)
from myna_rpe_jax.data.datasets.common import EmptySplitError, NothingPreparedError
from myna_rpe_jax.data.datasets.preparation import SourceMismatchError
from myna_rpe_jax.data.datasets.registry import get_spec
from myna_rpe_jax.data.datasets.shards import plan_shards
from myna_rpe_jax.data.demo.music import DEMO_GENRES, DEMO_TAGS, generate_demo
from myna_rpe_jax.data.keys import KEY_NAMES
from myna_rpe_jax.data.lock import lock_path, read_holder

SR = 22050
MEL = MelConfig(sample_rate=SR, n_fft=512, win_length=512, hop_length=256, n_mels=32)
MEL_FLAGS = ["--sample-rate", "22050", "--n-fft", "512", "--win-length", "512"]
MEL_FLAGS += ["--hop-length", "256", "--n-mels", "32"]


def write_tone(path: Path, seconds: float = 2.0, freq: float = 440.0) -> Path:
    """A sine tone plus a little noise, format from the extension (wav/flac/mp3/au)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    noise = np.random.default_rng(int(freq)).normal(0, 0.01, t.shape)
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32), SR)
    return path


def assert_mel_of(example: dict, path: Path) -> None:
    expected, duration = audio_to_mel(path, MEL)
    assert example["mel"].dtype == np.float16 and example["mel"].shape == expected.shape
    np.testing.assert_allclose(example["mel"], expected, atol=0.05)
    assert example["duration_s"] == pytest.approx(duration, abs=1e-4)


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_cli_builds_demo_and_reads_it_back(tmp_path, capsys):
    source, data_dir = tmp_path / "demo", tmp_path / "data"
    generate_demo(source, num_tracks=8, seconds=2.0)
    with open(source / "metadata.csv", newline="") as f:
        rows = {row["track_id"]: row for row in csv.DictReader(f)}
    argv = ["--dataset", "demo", "--source", str(source), "--data-dir", str(data_dir)]
    assert build.main([*argv, "--workers", "2", "--no-progress", *MEL_FLAGS]) == 0
    out = capsys.readouterr().out
    assert "tracks prepared: 8 (train 4, valid 1, test 3)" in out and "skipped:  0" in out
    assert "download" not in out.lower()  # tfds' "Downloading and preparing ..." lines: silenced

    assert available_splits("demo", data_dir) == ["train", "valid", "test"]
    seen = set()
    for split in ("train", "validation", "test"):
        source_split = open_split("demo", data_dir, split)
        assert source_split.mel_config == MEL
        for example in source_split:
            row = rows[example["track_id"]]
            seen.add(example["track_id"])
            assert row["split"] == source_split.split
            assert DEMO_GENRES[example["genre"]] == row["genre"]
            assert KEY_NAMES[example["key"]] == row["key"]
            assert example["arousal"] == pytest.approx(float(row["arousal"]), abs=1e-6)
            assert example["valence"] == pytest.approx(float(row["valence"]), abs=1e-6)
            tags = {DEMO_TAGS[i] for i in np.flatnonzero(example["tags"])}
            assert tags == set(row["tags"].split("|"))
            assert_mel_of(example, source / row["path"])
    assert seen == set(rows)
    metadata = dataset_metadata("demo", data_dir)
    assert metadata["mel"]["n_mels"] == 32 and metadata["min_seconds"] == 1.0
    assert not (data_dir / "_cache").exists()  # the stage-1 cache is removed

    assert build.main([*argv, *MEL_FLAGS]) == 0  # a finished dataset: says so, no work
    assert "already prepared" in capsys.readouterr().out


def test_bad_files_are_skipped_with_reasons(tmp_path):
    source = tmp_path / "music"
    good = [
        write_tone(source / "a.wav", freq=300),
        write_tone(source / "b.flac", freq=500),
        write_tone(source / "sub dir" / "c.mp3", freq=700),
    ]
    (source / "empty.wav").touch()
    whole = write_tone(tmp_path / "whole.wav").read_bytes()
    (source / "truncated.wav").write_bytes(whole[: len(whole) // 2])
    (source / "random.wav").write_bytes(np.random.default_rng(0).bytes(20000))
    (source / "lyrics.mp3").write_text("la la la, not audio\n" * 100)
    write_tone(source / "short.wav", seconds=0.5)
    (source / ".DS_Store").write_bytes(b"\0" * 10)  # hidden: ignored, not even skipped

    summary = prepare("folder", source, tmp_path / "data", workers=2, mel=MEL, progress=False)
    assert (summary.prepared, summary.skipped) == (3, 5)
    examples = {e["track_id"]: e for e in open_split("folder", tmp_path / "data", "train")}
    assert set(examples) == {"a", "b", "sub dir/c"}  # as embed --audio and spotify name them
    for path in good:
        assert_mel_of(examples[path.relative_to(source).with_suffix("").as_posix()], path)

    skipped = {row["path"]: row["reason"] for row in read_tsv(summary.skipped_tsv)}
    assert summary.skipped_tsv == summary.dataset_dir / "skipped.tsv"
    assert set(skipped) == {"empty.wav", "truncated.wav", "random.wav", "lyrics.mp3", "short.wav"}
    assert skipped["empty.wav"].startswith("empty file")
    assert skipped["truncated.wav"].startswith("truncated")
    assert skipped["random.wav"].startswith("not decodable audio (named .wav")
    assert skipped["lyrics.mp3"].startswith("not decodable audio (named .mp3, starts like text")
    assert "does not exist" not in skipped["lyrics.mp3"]
    assert skipped["short.wav"].startswith("too short")


def test_missing_annotated_files_are_listed(tmp_path):
    source = tmp_path / "demo"
    generate_demo(source, num_tracks=4, seconds=2.0)
    (source / "audio" / "demo00001.wav").unlink()
    with pytest.warns(UserWarning, match="demo: no valid track .* generate at least 6 tracks"):
        summary = prepare("demo", source, tmp_path / "data", mel=MEL, progress=False)
    assert (summary.prepared, summary.skipped) == (3, 1)
    again = prepare("demo", source, tmp_path / "data", mel=MEL, progress=False)
    assert again.already_prepared and again.notes == [
        "it has no valid split, which a probe needs: rebuild it with --overwrite from a source"
        " that fills every split"
    ]
    [row] = read_tsv(summary.skipped_tsv)
    assert row["path"] == "audio/demo00001.wav" and row["reason"].startswith("missing")
    ids = {
        e["track_id"] for s in ("train", "test") for e in open_split("demo", tmp_path / "data", s)
    }
    assert ids == {"demo00000", "demo00002", "demo00003"}


def test_resume_after_a_kill_reuses_finished_tracks(tmp_path):
    source, data_dir = tmp_path / "music", tmp_path / "data"
    paths = [write_tone(source / f"t{i}.wav", freq=200 + 100 * i) for i in range(4)]
    work = cache_dir(data_dir, "folder", make_config("folder", MEL).name)
    # A killed run: two tracks finished, the third half-written under its temporary name.
    finished = ensure_mels(paths[:2], work, MEL, 1.0)
    before = [os.stat(entry.file) for entry in finished]
    third = ensure_mels(paths[2:3], tmp_path / "elsewhere", MEL, 1.0)[0]
    stray = work / (Path(third.file).name + ".4242.tmp")
    stray.write_bytes(Path(third.file).read_bytes()[:100])

    summary = prepare("folder", source, data_dir, mel=MEL, keep_cache=True, progress=False)
    assert summary.prepared == 4 and not stray.exists()
    after = [os.stat(entry.file) for entry in finished]
    assert [(s.st_ino, s.st_mtime_ns) for s in before] == [(s.st_ino, s.st_mtime_ns) for s in after]
    assert len(list(work.glob("*.npz"))) == 4
    examples = {e["track_id"]: e for e in open_split("folder", data_dir, "train")}
    for path in paths:
        assert_mel_of(examples[path.stem], path)

    rebuilt = prepare("folder", source, data_dir, mel=MEL, overwrite=True, progress=False)
    assert rebuilt.prepared == 4 and not rebuilt.already_prepared
    assert not (data_dir / "_cache").exists()


def test_shards_are_written_with_our_array_record_options_and_read_back(tmp_path):
    source, data_dir = tmp_path / "music", tmp_path / "data"
    paths = [write_tone(source / f"t{i}.wav", freq=300 + 50 * i) for i in range(3)]
    summary = prepare("folder", source, data_dir, mel=MEL, progress=False)
    shards = sorted(summary.dataset_dir.glob("*.array_record-*"))
    assert shards
    for shard in shards:
        # Every array_record file records the options it was written with.
        options = array_record_module.ArrayRecordReader(str(shard)).writer_options_string()
        assert ",zstd:1," in f",{options},", options
    examples = {e["track_id"]: e for e in open_split("folder", data_dir, "train")}
    for path in paths:
        assert_mel_of(examples[path.stem], path)


def test_shards_written_in_parallel_hold_the_same_examples_in_order(tmp_path):
    source = tmp_path / "music"
    paths = [write_tone(source / f"t{i}.wav", 1.0 + 0.25 * i, 200 + 60 * i) for i in range(7)]
    serial = prepare("folder", source, tmp_path / "serial", mel=MEL, progress=False)
    parallel = prepare(
        "folder", source, tmp_path / "parallel", mel=MEL, workers=2, num_shards=3, progress=False
    )
    shards = sorted(parallel.dataset_dir.glob("*.array_record-*"))
    assert [s.name[-14:] for s in shards] == [f"{i:05d}-of-00003" for i in range(3)]
    assert not list(parallel.dataset_dir.glob("*.tmp"))
    assert len(list(serial.dataset_dir.glob("*.array_record-*"))) == 1
    assert (
        dataset_metadata("folder", tmp_path / "parallel")["hours"]
        == dataset_metadata("folder", tmp_path / "serial")["hours"]
        > 0
    )
    one = list(open_split("folder", tmp_path / "serial", "train"))
    three = list(open_split("folder", tmp_path / "parallel", "train"))
    assert [e["track_id"] for e in three] == [e["track_id"] for e in one] == [p.stem for p in paths]
    for a, b in zip(one, three, strict=True):
        assert a["mel"].tobytes() == b["mel"].tobytes() and a["duration_s"] == b["duration_s"]


def _crash_on_marker(path: str, mel: MelConfig, min_seconds: float):
    """Stands in for a decoder that segfaults on one file (kills its whole process)."""
    if "crash" in Path(path).name:
        os._exit(11)
    return np.zeros((mel.n_mels, 10), np.float16), 1.0


def test_a_crashing_file_does_not_stop_the_others(tmp_path):
    paths = [tmp_path / name for name in ("a.wav", "crash.wav", "b.wav", "c.wav", "d.wav")]
    for path in paths:
        path.write_bytes(b"x")
    entries = ensure_mels(paths, tmp_path / "cache", MEL, 1.0, workers=2, mel_fn=_crash_on_marker)
    assert entries[1] == MelEntry(False, reason=CRASH_REASON)
    assert [entry.ok for entry in entries] == [True, False, True, True, True]
    assert load_mel(entries[0].file)[0].shape == (32, 10)
    again = ensure_mels(paths, tmp_path / "cache", MEL, 1.0, mel_fn=_crash_on_marker)
    assert again == entries  # all cached, the crash included: nothing runs (or crashes) again


def _out_of_memory_on_marker(path: str, mel: MelConfig, min_seconds: float):
    """Stands in for a failure that is not the file's fault."""
    if "big" in Path(path).name:
        raise MemoryError("cannot allocate 3.1 GiB")
    return np.zeros((mel.n_mels, 10), np.float16), 1.0


def test_a_failure_that_is_not_the_files_is_not_cached_and_stops_the_build(tmp_path):
    paths = [tmp_path / name for name in ("a.wav", "big.wav", "b.wav")]
    for path in paths:
        path.write_bytes(b"x")
    entries = ensure_mels(paths, tmp_path / "cache", MEL, 1.0, mel_fn=_out_of_memory_on_marker)
    assert [(e.ok, e.unexpected) for e in entries] == [(True, False), (False, True), (True, False)]
    assert "MemoryError" in entries[1].reason
    with pytest.raises(UnexpectedDecodeError, match=r"(?s)1 track.*big\.wav.*MemoryError"):
        check_unexpected(paths, entries)
    check_unexpected(paths[::2], entries[::2])  # nothing unexpected: no error
    # Not cached: the next run decodes it again (and here succeeds).
    again = ensure_mels(paths, tmp_path / "cache", MEL, 1.0, mel_fn=_crash_on_marker)
    assert all(entry.ok for entry in again)


def test_wrong_layout_fails_at_once(tmp_path, capsys):
    (tmp_path / "src" / "random_folder").mkdir(parents=True)
    data_dir = tmp_path / "data"
    argv = ["--dataset", "gtzan", "--source", str(tmp_path / "src"), "--data-dir", str(data_dir)]
    assert build.main(argv) == 2
    err = capsys.readouterr().err
    assert "does not look like a gtzan folder" in err and "train_filtered.txt" in err
    assert "├── genres/" in err
    assert not (data_dir / "_cache").exists()
    (tmp_path / "a_file.wav").write_bytes(b"x")
    with pytest.raises(LayoutError, match="it is not a directory"):
        prepare("emomusic", tmp_path / "a_file.wav", data_dir)
    with pytest.raises(ValueError, match="is inside --source"):
        prepare("folder", tmp_path, data_dir)


def test_a_source_that_does_not_exist_is_named_as_such(tmp_path, capsys):
    missing, data_dir = tmp_path / "does" / "not" / "exist", tmp_path / "data"
    argv = ["--dataset", "gtzan", "--source", str(missing), "--data-dir", str(data_dir)]
    assert build.main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: --source {missing} does not exist: pass the path of your gtzan folder (check"
        " the spelling; python -m data_prep.build --help shows its layout)\n"
    )
    with pytest.raises(LayoutError, match=r"exist does not exist: .* your folder of audio files"):
        get_spec("folder").list_tracks(missing, "all-train", 0)  # the builder used alone
    (tmp_path / "a_file.wav").write_bytes(b"x")
    with pytest.raises(LayoutError, match="does not look like a folder .*: it is not a directory"):
        get_spec("folder").list_tracks(tmp_path / "a_file.wav", "all-train", 0)
    assert not data_dir.exists()


def _corrupt_folder(source: Path, count: int) -> None:
    """`count` .wav files of random bytes, and a stray cover picture."""
    source.mkdir(parents=True)
    for i in range(count):
        (source / f"t{i}.wav").write_bytes(np.random.default_rng(i).bytes(20000))
    (source / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0")


def test_a_source_where_nothing_decodes_fails_in_one_line_leaving_nothing_stale(
    tmp_path, capsys, caplog
):
    source, data_dir = tmp_path / "music", tmp_path / "data"
    _corrupt_folder(source, 3)
    argv = ["--dataset", "folder", "--source", str(source), "--data-dir", str(data_dir)]
    result = make_builder("folder", data_dir, make_config("folder", MEL)).data_path.parent
    for _ in range(2):  # the second run fails the same way, and takes over no "stopped" build
        assert build.main([*argv, "--no-progress", *MEL_FLAGS]) == 1
        err = capsys.readouterr().err
        assert err.startswith(
            f"error: --source {source}: none of its 4 file(s) could be decoded, so nothing was"
            " prepared (e.g. t0.wav: not decodable audio (named .wav"
        )
        assert err.endswith("then run the build again\n") and err.count("\n") == 1, err
        # No cache, no config folder: only the build's lock file (never removed), released.
        assert [p.relative_to(data_dir) for p in data_dir.rglob("*")] == [
            result.relative_to(data_dir).parent,
            lock_path(result).relative_to(data_dir),
        ]
        assert read_holder(result) == ""
    assert "taking over" not in caplog.text


def test_the_builder_used_alone_on_a_folder_where_nothing_decodes_says_so(tmp_path):
    """tfds' own download_and_prepare (no `prepare` around it) stops with the same message."""
    source = tmp_path / "music"
    _corrupt_folder(source, 2)
    builder = make_builder("folder", tmp_path / "data", make_config("folder", MEL))
    config = tfds.download.DownloadConfig(manual_dir=str(source))
    with pytest.raises(NothingPreparedError, match=r"none of its 3 file\(s\) could be decoded"):
        builder.download_and_prepare(download_config=config)
    assert not builder.data_path.exists()


def test_a_failed_build_keeps_the_log_mels_another_build_cached(tmp_path):
    good, bad, data_dir = tmp_path / "good", tmp_path / "bad", tmp_path / "data"
    paths = [write_tone(good / f"t{i}.wav", freq=300 + 100 * i) for i in range(2)]
    work = cache_dir(data_dir, "folder", make_config("folder", MEL).name)
    cached = [os.stat(e.file).st_ino for e in ensure_mels(paths, work, MEL, 1.0)]  # then killed
    _corrupt_folder(bad, 1)
    with pytest.raises(NothingPreparedError, match="none of its 2 file"):
        prepare("folder", bad, data_dir, mel=MEL, progress=False)
    assert sorted(os.stat(file).st_ino for file in work.glob("*.npz")) == sorted(cached)
    summary = prepare("folder", good, data_dir, mel=MEL, progress=False)
    assert summary.prepared == 2 and not (data_dir / "_cache").exists()


def test_a_prepared_dataset_is_only_found_for_its_own_source(tmp_path, capsys):
    """A mistyped --source is named as such, not answered with the dataset prepared before;
    a folder with other tracks stops the build; a copy of the folder is the same dataset."""
    source, other, data_dir = tmp_path / "music", tmp_path / "other", tmp_path / "data"
    write_tone(source / "a.wav", freq=300)
    write_tone(source / "b.wav", freq=500)
    write_tone(other / "a.wav", freq=300)
    first = prepare("folder", source, data_dir, mel=MEL, progress=False)
    argv = ["--dataset", "folder", "--data-dir", str(data_dir), "--no-progress", *MEL_FLAGS]
    assert build.main([*argv, "--source", str(tmp_path / "typo")]) == 2
    assert capsys.readouterr().err.startswith(f"error: --source {tmp_path / 'typo'} does not")
    assert build.main([*argv, "--source", str(other)]) == 2
    config = make_config("folder", MEL).name
    assert capsys.readouterr().err == (
        f"error: --data-dir {data_dir} already holds folder (config {config}) prepared from"
        f" {source} (2 tracks listed), and --source {other} holds other"
        f" tracks (1 listed): pass --overwrite to rebuild it from {other}, or another --data-dir"
        " to keep both\n"
    )
    copy = shutil.copytree(source, tmp_path / "copy")
    found = prepare("folder", copy, data_dir, mel=MEL, progress=False)
    assert found.already_prepared
    assert found.notes == [f"prepared from {source}; --source {copy} lists the same tracks"]

    # Built before sources were fingerprinted: whether `other` holds its tracks is unknown.
    metadata_file = first.dataset_dir / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    del metadata["source_fingerprint"], metadata["source_tracks"]
    metadata_file.write_text(json.dumps(metadata))
    [note] = prepare("folder", other, data_dir, mel=MEL, progress=False).notes
    assert note.startswith(f"it was prepared from {source}, not --source {other}, by an older")
    assert "cannot be told: if not, rebuild with --overwrite" in note
    del metadata["source"]
    metadata_file.write_text(json.dumps(metadata))
    [note] = prepare("folder", other, data_dir, mel=MEL, progress=False).notes
    assert note.startswith("which folder it was prepared from is not recorded")

    rebuilt = prepare("folder", other, data_dir, mel=MEL, overwrite=True, progress=False)
    assert (rebuilt.already_prepared, rebuilt.prepared) == (False, 1)
    assert prepare("folder", other, data_dir, mel=MEL, progress=False).notes == []
    write_tone(other / "new.wav", freq=700)  # the same folder, changed since
    with pytest.raises(SourceMismatchError, match=r"from .*other has changed since \(1 tracks"):
        prepare("folder", other, data_dir, mel=MEL, progress=False)


def test_a_gtzan_source_whose_split_lists_changed_is_not_taken_for_prepared(tmp_path):
    """`auto` uses the split lists when the source has them, else a random split: the same
    folder with the lists added (as the random split's warning advises) or removed since the
    build is another split, said in the parser's words, not "already prepared"."""
    source, data_dir = tmp_path / "gtzan", tmp_path / "data"
    _gtzan_of_one_track_per_split(source)
    assert prepare("gtzan", source, data_dir, mel=MEL, progress=False).split_sizes["test"] == 1
    for split in ("train", "valid", "test"):
        (source / f"{split}_filtered.txt").unlink()
    with pytest.raises(SourceMismatchError) as error:
        prepare("gtzan", source, data_dir, mel=MEL, progress=False)
    assert "split 'fault-filtered' then, 'random, seed 0' now" in str(error.value)
    assert str(error.value).endswith(
        f"pass --overwrite to rebuild it from {source}, or another --data-dir to keep both"
    )


def _gtzan_of_one_track_per_split(source: Path) -> dict[str, Path]:
    """A GTZAN source whose filtered lists name one blues track per split: split -> audio."""
    audio = {}
    for number, split in enumerate(("train", "valid", "test")):
        (source / f"{split}_filtered.txt").parent.mkdir(parents=True, exist_ok=True)
        (source / f"{split}_filtered.txt").write_text(f"blues/blues.{number:05d}.wav\n")
        audio[split] = write_tone(source / "genres" / "blues" / f"blues.{number:05d}.wav")
    return audio


def test_a_benchmark_build_that_would_leave_a_split_empty_stops(tmp_path, capsys):
    """A probe needs train, valid and test: a build without a test track stops before tfds
    writes anything, whether the audio is missing or does not decode, and says why, with a
    file of the empty split for example (here after a train file that does not decode)."""
    source, data_dir = tmp_path / "gtzan", tmp_path / "data"
    audio = _gtzan_of_one_track_per_split(source)
    with open(source / "train_filtered.txt", "a") as train_list:
        train_list.write("blues/blues.00009.wav\n")
    (source / "genres" / "blues" / "blues.00009.wav").touch()  # listed, does not decode
    audio["test"].unlink()
    argv = ["--dataset", "gtzan", "--source", str(source), "--data-dir", str(data_dir)]
    assert build.main([*argv, "--no-progress", *MEL_FLAGS]) == 1
    assert capsys.readouterr().err == (
        f"error: --source {source}: no test track listed (train 2, valid 1, test 0); 1 track(s)"
        " were left out, e.g. genres/blues/blues.00002.wav: missing: named in the"
        " *_filtered.txt lists but no such file. A gtzan probe needs tracks in each of train,"
        " valid, test, so nothing was prepared: check that --source holds the whole dataset"
        " (audio and annotation files), then run the build again\n"
    )
    audio["test"].touch()  # there, but it does not decode
    with pytest.raises(EmptySplitError) as error:
        prepare("gtzan", source, data_dir, mel=MEL, progress=False)
    assert str(error.value).startswith(
        f"--source {source}: no test track decoded (train 1, valid 1, test 0); 2 track(s) were"
        " left out, e.g. genres/blues/blues.00002.wav: "
    )
    with pytest.raises(DatasetNotPreparedError):
        open_split("gtzan", data_dir, "train")
    # The log-mels stay for the next run; the failure does not, so a replaced file is tried.
    work = cache_dir(data_dir, "gtzan", make_config("gtzan", MEL).name)
    assert sorted(path.suffix for path in work.iterdir()) == [".npz", ".npz"]
    write_tone(audio["test"])
    summary = prepare("gtzan", source, data_dir, mel=MEL, progress=False)
    assert summary.split_sizes == {"train": 1, "valid": 1, "test": 1}


def test_build_exit_status_is_2_for_flags_and_1_for_an_unusable_data_dir(tmp_path, capsys):
    source = tmp_path / "src"
    source.mkdir()
    argv = ["--dataset", "folder", "--source", str(source)]
    with pytest.raises(SystemExit) as usage:  # argparse's usage error
        build.main([*argv, "--data-dir", str(tmp_path / "data"), "--win-length", "4096"])
    assert usage.value.code == 2
    assert "MelConfig.win_length (4096) must be <= n_fft (2048)" in capsys.readouterr().err
    assert build.main([*argv, "--data-dir", str(source / "data")]) == 1
    assert "is inside --source" in capsys.readouterr().err


def test_reading_an_unprepared_dataset_says_how_to_build_it(tmp_path):
    with pytest.raises(DatasetNotPreparedError, match="python -m data_prep.build --dataset gtzan"):
        open_split("gtzan", tmp_path, "train")


def test_shard_plans_cover_the_split_in_order_with_tfds_shard_counts():
    items = [(f"track{i}", f"mel{i}") for i in range(384)]
    name = lambda i, n: f"shard-{i:05d}-of-{n:05d}"  # noqa: E731
    # 384 clips of 30 s (768 KB each, 288 MiB): tfds' rule gives 4 shards (64 MiB to 1 GiB).
    for sizes, expected in (([768_000] * 384, 4), ([1000] * 384, 1), ([3 << 20] * 384, 16)):
        jobs = plan_shards(items, sizes, 32, name)
        assert len(jobs) == expected
        assert [pair for job in jobs for pair in job.items] == items
        assert [job.first_key for job in jobs] == [0, *np.cumsum([len(j.items) for j in jobs])[:-1]]
        assert jobs[-1].path == name(expected - 1, expected)
    assert len(plan_shards(items[:2], [10, 10], 32, name, ShardConfig(num_shards=5))) == 2


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--workers", "-3"], "--workers must be >= 1, got -3"),
        (["--min-seconds", "-1"], "--min-seconds must be >= 0 seconds, got -1.0"),
        (["--min-seconds", "nan"], "--min-seconds must be >= 0 seconds, got nan"),
        (["--split-mode", "foo"], "--split-mode 'foo' is not one of gtzan's: "),
        (["--data-dir", "A_FILE"], "--data-dir: A_FILE is a file; name a folder to write into"),
    ],
)
def test_flags_that_cannot_work_are_usage_errors_before_any_work(tmp_path, capsys, flags, message):
    """Exit 2 at once: no worker pool of zero, no listing of the source, nothing written."""
    (tmp_path / "A_FILE").write_text("x")
    (tmp_path / "src").mkdir()
    flags = [flag.replace("A_FILE", str(tmp_path / "A_FILE")) for flag in flags]
    base = ["--dataset", "gtzan", "--source", str(tmp_path / "src")]
    data_dir = [] if "--data-dir" in flags else ["--data-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as usage:
        build.main([*base, *data_dir, *flags])
    assert usage.value.code == 2
    assert message.replace("A_FILE", str(tmp_path / "A_FILE")) in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A_FILE", "src"]

"""Tests for the generated demo music set and its CLI, checked against librosa's analysis."""

import collections
import csv

import librosa
import numpy as np
import pytest
import scipy.stats
import soundfile as sf

from data_prep import make_demo
from myna_rpe_jax.data import keys
from myna_rpe_jax.data.demo import music, synth

SECONDS = 8.0
RATE = 22050
NUM_TRACKS = 24
# Krumhansl-Kessler key profiles (Krumhansl 1990), tonic first.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(out_dir, metadata rows read back from metadata.csv, audio [N, samples])."""
    out = tmp_path_factory.mktemp("demo")
    music.generate_demo(out, num_tracks=NUM_TRACKS, seconds=SECONDS, seed=0)
    with open(out / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    waves = np.stack([sf.read(out / row["path"], dtype="float32")[0] for row in rows])
    return out, rows, waves


def test_metadata_schema(demo):
    out, rows, _ = demo
    with open(out / "metadata.csv", newline="") as f:
        assert tuple(next(csv.reader(f))) == music.METADATA_COLUMNS
    assert len(rows) == NUM_TRACKS and len({r["track_id"] for r in rows}) == NUM_TRACKS
    for row in rows:
        info = sf.info(out / row["path"])
        assert (info.samplerate, info.channels, info.subtype) == (RATE, 1, "PCM_16")
        assert info.frames == SECONDS * RATE and row["path"] == f"audio/{row['track_id']}.wav"
        assert row["split"] in ("train", "valid", "test")
        assert row["genre"] in music.DEMO_GENRES and row["key"] in keys.KEY_NAMES
        tempo, arousal, valence = (float(row[k]) for k in ("tempo_bpm", "arousal", "valence"))
        assert 60 <= tempo <= 180 and -1 <= arousal <= 1 and -1 <= valence <= 1
        tags = row["tags"].split("|")
        assert set(tags) <= set(music.DEMO_TAGS) and row["genre"] in tags
        assert row["key"].split()[1] in tags  # "major" / "minor"
        bucket = "slow" if tempo < 90 else "medium" if tempo < 130 else "fast"
        assert bucket in tags and ("percussive" in tags) != ("no-drums" in tags)


def test_all_keys_and_genres_present(demo):
    _, rows, _ = demo
    assert {r["key"] for r in rows} == set(keys.KEY_NAMES)
    assert collections.Counter(r["genre"] for r in rows) == {g: 4 for g in music.DEMO_GENRES}


def test_deterministic_for_a_seed_and_stable_in_num_tracks(tmp_path):
    def make(name, num_tracks, seed):
        rows = music.generate_demo(tmp_path / name, num_tracks, seconds=2.0, seed=seed)
        wavs = [(tmp_path / name / row["path"]).read_bytes() for row in rows]
        return rows, wavs, (tmp_path / name / "metadata.csv").read_bytes()

    rows_a, wavs_a, csv_a = make("a", 3, seed=0)
    rows_b, wavs_b, csv_b = make("b", 3, seed=0)
    assert wavs_a == wavs_b and csv_a == csv_b
    rows_c, wavs_c, _ = make("c", 5, seed=0)  # track i does not depend on the set size
    assert wavs_c[:3] == wavs_a and rows_c[:3] == rows_a
    rows_d, wavs_d, _ = make("d", 3, seed=1)
    assert all(x != y for x, y in zip(wavs_a, wavs_d, strict=True))
    assert [r["tempo_bpm"] for r in rows_a] != [r["tempo_bpm"] for r in rows_d]


def test_a_smaller_set_generated_over_a_larger_one_leaves_no_stray_tracks(tmp_path):
    """The build reads every audio file of the folder: tracks left by the earlier, larger set
    would join the new one without labels. Files that are not demo tracks are kept."""
    music.generate_demo(tmp_path, 5, seconds=1.0)
    (tmp_path / "audio" / "mine.wav").write_bytes(b"not ours")
    rows = music.generate_demo(tmp_path, 2, seconds=1.0)
    names = sorted(path.name for path in (tmp_path / "audio").iterdir())
    assert names == sorted([f"{row['track_id']}.wav" for row in rows] + ["mine.wav"])


def test_splits_by_artist_with_every_genre_and_tag():
    specs = [music.track_spec(i) for i in range(168)]
    split_of_artist = collections.defaultdict(set)
    for spec in specs:
        split_of_artist[spec.artist].add(spec.split)
    assert all(len(splits) == 1 for splits in split_of_artist.values())
    counts = collections.Counter(spec.split for spec in specs)
    assert counts["train"] / 168 == pytest.approx(1 / 2, abs=0.05)
    assert counts["valid"] / 168 == pytest.approx(1 / 6, abs=0.05)
    for split in ("train", "valid", "test"):
        tags = {tag for spec in specs if spec.split == split for tag in spec.tags}
        assert tags == set(music.DEMO_TAGS), split


@pytest.mark.parametrize("seed", [0, 3])
def test_splits_are_stratified_by_key_and_genre(seed):
    """Every 576 tracks hold 12 train, 4 valid, 8 test tracks of each key (48/16/32 of each
    genre), whatever the seed: the demo's test scores rest on every class alike."""
    specs = [music.track_spec(i, seed) for i in range(2 * 576)]
    for part in (specs[:576], specs[576:]):
        by_key = collections.Counter((spec.key, spec.split) for spec in part)
        by_genre = collections.Counter((spec.genre, spec.split) for spec in part)
        for split, per_key in (("train", 12), ("valid", 4), ("test", 8)):
            assert [by_key[k, split] for k in range(24)] == [per_key] * 24, split
            assert {by_genre[g, split] for g in music.DEMO_GENRES} == {24 * per_key // 6}
    assert [s.split for s in specs] == [music.track_spec(i, seed + 1).split for i in range(1152)]


def test_every_split_holds_every_genre_and_tag_from_72_tracks():
    for seed in (0, 1, 2):
        specs = [music.track_spec(i, seed) for i in range(72)]
        for split in ("train", "valid", "test"):
            tags = {tag for spec in specs if spec.split == split for tag in spec.tags}
            assert tags == set(music.DEMO_TAGS), (seed, split)


def test_written_splits_keep_artists_together(demo):
    _, rows, _ = demo
    artists = collections.defaultdict(set)
    for row in rows:
        artists[row["artist"]].add(row["split"])
    assert all(len(splits) == 1 for splits in artists.values())
    assert {row["split"] for row in rows} == {"train", "valid", "test"}


def test_audio_is_in_its_labelled_key(demo):
    _, rows, waves = demo
    profiles = np.stack([np.roll(p, k) for p in (KK_MAJOR, KK_MINOR) for k in range(12)])
    estimates = []
    for y in waves:
        chroma = librosa.feature.chroma_cqt(y=y, sr=RATE).mean(axis=1)
        estimates.append(int(np.argmax([np.corrcoef(chroma, p)[0, 1] for p in profiles])))
    labels = np.array([keys.parse_key(row["key"]) for row in rows])
    accuracy = np.mean(labels == np.array(estimates))
    assert accuracy >= 0.8, list(zip(labels, estimates, strict=True))
    assert keys.mirex_score(labels, np.array(estimates)) >= 0.85


def test_tempo_matches_beat_tracker(demo):
    _, rows, waves = demo
    hits = []
    for row, y in zip(rows, waves, strict=True):
        if "no-drums" in row["tags"]:
            continue
        tempo = float(np.atleast_1d(librosa.beat.beat_track(y=y, sr=RATE)[0])[0])
        ratio = tempo / float(row["tempo_bpm"])
        # Beat trackers often lock to double or half time: count those as agreeing.
        hits.append(any(abs(ratio - m) < 0.08 * m for m in (0.5, 1.0, 2.0)))
    assert len(hits) >= 15 and np.mean(hits) >= 0.8


def test_arousal_follows_brightness_and_activity(demo):
    _, rows, waves = demo
    arousal = [float(row["arousal"]) for row in rows]
    centroid = [librosa.feature.spectral_centroid(y=y, sr=RATE).mean() for y in waves]
    onsets = [len(librosa.onset.onset_detect(y=y, sr=RATE)) for y in waves]
    # Arousal mixes brightness, tempo, note density and drums: compare it with the rank sum
    # of a brightness measure (centroid) and an activity measure (onset count).
    activity = scipy.stats.rankdata(centroid) + scipy.stats.rankdata(onsets)
    assert scipy.stats.spearmanr(arousal, activity)[0] > 0.5


def test_every_instrument_has_a_timbre():
    assert set(music.INSTRUMENTS) == set(synth.TIMBRES)


def test_mix_in_adds_from_the_start_and_cuts_at_the_end():
    rate = 8000
    out = np.zeros(10, np.float32)
    synth.mix_in(out, 8 / rate, np.ones(5, np.float32), rate)  # cut at the end
    synth.mix_in(out, 0.0, np.ones(2, np.float32), rate)
    np.testing.assert_array_equal(out, [1, 1, 0, 0, 0, 0, 0, 0, 1, 1])


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_tracks"):
        music.generate_demo(tmp_path, num_tracks=0)


def test_make_demo_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--tracks", "7", "--seconds", "1.5", "--sample-rate", "16000"]
    assert make_demo.main(argv) == 0
    assert "wrote 7 tracks" in capsys.readouterr().out
    with open(out / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7
    info = sf.info(out / rows[6]["path"])
    assert (info.samplerate, info.frames) == (16000, 24000)
    (tmp_path / "a_file").write_text("x")
    for flags, message in [
        (["--tracks", "0"], "--tracks must be >= 1, got 0"),
        (["--seconds", "nan"], "--seconds must be at least 1 (data_prep.build skips shorter"),
        (["--seconds", "1e9"], "and at most 3600, got 1000000000.0"),
        (["--seconds", "-2"], "--seconds must be at least 1"),
        (["--seconds", "0.001"], "--seconds must be at least 1"),
    ]:
        with pytest.raises(SystemExit) as usage:
            make_demo.main(["--out", str(out), *flags])
        assert usage.value.code == 2 and message in capsys.readouterr().err, flags
    with pytest.raises(SystemExit) as usage:
        make_demo.main(["--out", str(tmp_path / "a_file" / "demo")])
    assert usage.value.code == 2
    assert f"--out: cannot write {tmp_path / 'a_file' / 'demo'}: " in capsys.readouterr().err

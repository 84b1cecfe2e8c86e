"""Each published layout, in miniature: real annotation rows, short generated audio.

The split and annotation files are verbatim rows of the published ones (/work/shared/
datasets); EmoMusic's CSVs are written in its published format. Each miniature is prepared
by the real builder and read back with open_split. Helpers come from test_datasets_build.
"""

import csv
import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest

from myna_rpe_jax.data.datasets import open_split, prepare
from myna_rpe_jax.data.datasets.parsers.gtzan import GENRES
from myna_rpe_jax.data.datasets.parsers.mtg_jamendo import SPLIT_FILES, TOP50_TAGS
from myna_rpe_jax.data.keys import KEY_NAMES
from tests.conftest import SHARED_DATASETS
from tests.data.test_datasets_build import MEL, assert_mel_of, read_tsv, write_tone

SHARED = SHARED_DATASETS
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="published files not available")
FLATS = {"C#": "Db", "D#": "Eb", "F#": "Gb", "G#": "Ab", "A#": "Bb"}
_frequencies = itertools.count(200, 37)


def tone(path: Path) -> Path:
    return write_tone(path, freq=next(_frequencies))


def read_back(name: str, data_dir: Path) -> dict[str, dict]:
    """split -> {track_id: example} of every prepared split."""
    return {
        split: {example["track_id"]: example for example in open_split(name, data_dir, split)}
        for split in ("train", "valid", "test")
    }


def test_mtg_jamendo(tmp_path):
    published = SHARED / "mtg-jamendo" / "split-0"
    lines = {s: (published / n).read_text().splitlines() for s, n in SPLIT_FILES.items()}
    # Train rows covering all 50 tags (the vocabulary check needs them), two rows otherwise.
    chosen, needed = [], set(TOP50_TAGS)
    while needed:
        best = max(lines["train"][1:], key=lambda line: len(needed & set(line.split("\t")[5:])))
        chosen.append(best)
        needed -= set(best.split("\t")[5:])
    rows = {"train": chosen, "valid": lines["valid"][1:3], "test": lines["test"][1:3]}
    split_dir = tmp_path / "src" / "data" / "splits" / "split-0"
    split_dir.mkdir(parents=True)
    audio = tmp_path / "src" / "audio"
    for split, split_rows in rows.items():
        (split_dir / SPLIT_FILES[split]).write_text("\n".join([lines[split][0], *split_rows]))
        for line in split_rows:
            tone(audio / line.split("\t")[3])
    missing = rows["train"][0].split("\t")
    (audio / missing[3]).unlink()
    low = rows["valid"][0].split("\t")[3]  # the low-quality file name of the other download
    (audio / low).rename(audio / low.replace(".mp3", ".low.mp3"))

    summary = prepare("mtg_jamendo", tmp_path / "src", tmp_path / "data", mel=MEL, progress=False)
    assert summary.split_sizes == {"train": len(chosen) - 1, "valid": 2, "test": 2}
    assert [row["path"] for row in read_tsv(summary.skipped_tsv)] == [f"audio/{missing[3]}"]
    examples = read_back("mtg_jamendo", tmp_path / "data")
    for split, split_rows in rows.items():
        for line in split_rows:
            fields = line.split("\t")
            if fields[0] == missing[0]:
                continue
            example = examples[split][fields[0]]
            assert {TOP50_TAGS[i] for i in np.flatnonzero(example["tags"])} == set(fields[5:])
            assert example["tags"].shape == (50,)
    assert_mel_of(
        examples["test"][rows["test"][0].split("\t")[0]], audio / rows["test"][0].split("\t")[3]
    )


def test_gtzan_filtered_split(tmp_path):
    source = tmp_path / "src"
    chosen = {}
    for split in ("train", "valid", "test"):
        entries = (SHARED / "gtzan" / f"{split}_filtered.txt").read_text().split()
        firsts = {entry.split("/")[0]: entry for entry in reversed(entries)}  # first per genre
        chosen[split] = [firsts[genre] for genre in ("blues", "jazz", "rock")]
        (source / f"{split}_filtered.txt").parent.mkdir(parents=True, exist_ok=True)
        (source / f"{split}_filtered.txt").write_text("\n".join(chosen[split]) + "\n")
        for entry in chosen[split]:
            tone(source / "genres" / entry)
    as_au = source / "genres" / chosen["train"][1]  # the list says .wav, the copy has .au
    write_tone(as_au.with_suffix(".au"), freq=999)
    as_au.unlink()
    (source / "genres" / chosen["test"][2]).unlink()

    summary = prepare("gtzan", source, tmp_path / "data", mel=MEL, progress=False)
    assert summary.split_sizes == {"train": 3, "valid": 3, "test": 2}
    [skipped] = read_tsv(summary.skipped_tsv)
    assert skipped["path"] == f"genres/{chosen['test'][2]}"
    assert skipped["reason"].startswith("missing: named in the *_filtered.txt lists")
    examples = read_back("gtzan", tmp_path / "data")
    for split, entries in chosen.items():
        ids = [Path(entry).stem for entry in entries if split != "test" or entry != entries[2]]
        assert list(examples[split]) == ids  # the list order is kept
        for track_id in ids:
            assert GENRES[examples[split][track_id]["genre"]] == track_id.split(".")[0]
    assert_mel_of(examples["train"][as_au.stem], as_au.with_suffix(".au"))


def _artist_in_bucket(want_valid: bool, buckets: int, train_buckets: int, skip=()) -> str:
    """An artist name whose SHA-1 bucket lands in valid (or train), per the documented rule.

    Letters and one space only, so lower-casing is the whole of both datasets' normalisation.
    """
    for letters in itertools.product("abcdefghij", repeat=3):
        name = "Band " + "".join(letters).title()
        bucket = int(hashlib.sha1(name.lower().encode()).hexdigest(), 16) % buckets
        if (bucket >= train_buckets) == want_valid and name not in skip:
            return name
    raise AssertionError("no such name")


def test_giantsteps_key(tmp_path):
    source = tmp_path / "src"
    train_root, test_root = source / "giantsteps-mtg-key", source / "giantsteps-key"
    with open(SHARED / "giantsteps-mtg-key" / "annotations" / "annotations.txt") as f:
        published = list(csv.DictReader(f, delimiter="\t"))
    good = [r for r in published if r["C"] == "2" and "/" not in r["MANUAL KEY"]][:6]
    unused = [
        next(r for r in published if r["C"] == "1"),
        next(r for r in published if r["C"] == "2" and "/" in r["MANUAL KEY"]),
        next(r for r in published if r["MANUAL KEY"] == "-"),
    ]
    rows = good + unused
    (train_root / "annotations").mkdir(parents=True)
    (train_root / "annotations" / "annotations.txt").write_text(
        "ID\tMANUAL KEY\tC\n" + "".join(f"{r['ID']}\t{r['MANUAL KEY']}\t{r['C']}\n" for r in rows)
    )
    valid, other = _artist_in_bucket(True, 116, 100), _artist_in_bucket(False, 116, 100)
    train = _artist_in_bucket(False, 116, 100, skip={other})
    artists = [valid, valid, f"{other}, {valid}", other, train, train, train, train, train]
    (train_root / "annotations" / "beatport_metadata.txt").write_text(
        "ID\tARTIST\tTITLE\n"
        + "".join(f"{r['ID']}\t{a}\tsong\n" for r, a in zip(rows, artists, strict=True))
    )
    for row in rows:
        tone(train_root / "audio" / f"{row['ID']}.LOFI.mp3")
    key_files = sorted((SHARED / "giantsteps-key" / "annotations" / "key").glob("*.key"))[:3]
    (test_root / "annotations" / "key").mkdir(parents=True)
    for key_file in key_files:
        (test_root / "annotations" / "key" / key_file.name).write_text(key_file.read_text())
        tone(test_root / "audio" / key_file.name.replace(".key", ".mp3"))

    summary = prepare("giantsteps_key", source, tmp_path / "data", mel=MEL, progress=False)
    assert summary.skipped == 0
    examples = read_back("giantsteps_key", tmp_path / "data")
    # Collaboration closure: `other` is valid through its track with `valid`.
    assert set(examples["valid"]) == {r["ID"] for r in good[:4]}
    assert set(examples["train"]) == {r["ID"] for r in good[4:]}
    assert set(examples["test"]) == {key_file.name.split(".")[0] for key_file in key_files}
    labels = {r["ID"]: r["MANUAL KEY"] for r in good}
    labels.update({k.name.split(".")[0]: k.read_text().strip() for k in key_files})
    for split_examples in examples.values():
        for track_id, example in split_examples.items():
            tonic, mode = labels[track_id].split()
            assert KEY_NAMES[example["key"]] == f"{FLATS.get(tonic, tonic)} {mode}"


def test_emomusic(tmp_path):
    source = tmp_path / "src"
    (source / "annotations").mkdir(parents=True)
    train_artist = _artist_in_bucket(False, 10, 8)
    valid_artist = _artist_in_bucket(True, 10, 8)
    songs = [  # song_id, artist, MediaEval 2013 set, mean arousal, mean valence
        (2, train_artist, "development", 3.1, 3.0),
        (3, f"\t{train_artist} ", "development", 4.2, 5.5),
        (5, valid_artist, "development", 6.0, 2.2),
        (7, "Someone Else", "evaluation", 7.5, 6.1),
        (11, "Someone Else", "evaluation", 2.25, 8.0),
        (13, train_artist, "development", 5.0, 5.0),  # annotated, but its clip is missing
    ]
    header = "song_id,file_name,Artist,Song title,start of the segment (min.sec),"
    header += "end of the segment (min.sec),Genre,Mediaeval 2013 set\n"
    info = [f'{i},{i}.mp3,"{a}",Title {i},0.0,45.0,Rock,{s}\n' for i, a, s, _, _ in songs]
    extra = "99,99.mp3,Unannotated,Title,0.0,45.0,Pop,development\n"  # not in the 744
    (source / "annotations" / "songs_info.csv").write_text(header + "".join(info) + extra)
    static = "song_id,mean_arousal,std_arousal,mean_valence,std_valence\n"
    static += "".join(f"{i},{ar},0.9,{va},1.1\n" for i, _, _, ar, va in songs)
    (source / "annotations" / "static_annotations.csv").write_text(static)
    for song_id, *_ in songs[:-1]:
        tone(source / "clips_45seconds" / f"{song_id}.mp3")

    # Made-up songs: split by the artist rule (the default, JukeMIR's table, names the 744).
    summary = prepare(
        "emomusic", source, tmp_path / "data", split_mode="artist", mel=MEL, progress=False
    )
    assert summary.split_sizes == {"train": 2, "valid": 1, "test": 2}
    assert [row["path"] for row in read_tsv(summary.skipped_tsv)] == ["clips_45seconds/13.mp3"]
    examples = read_back("emomusic", tmp_path / "data")
    assert set(examples["train"]) == {"2", "3"} and set(examples["valid"]) == {"5"}
    assert set(examples["test"]) == {"7", "11"}
    for song_id, _, _, arousal, valence in songs[:-1]:
        example = next(e[str(song_id)] for e in examples.values() if str(song_id) in e)
        assert example["arousal"] == pytest.approx(arousal, abs=1e-6)  # raw, not z-scored
        assert example["valence"] == pytest.approx(valence, abs=1e-6)

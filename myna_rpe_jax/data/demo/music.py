"""A seeded, procedurally generated music set with known genre, key, tempo, mood and tags.

Each track is a chord progression in one of the 24 keys (root-position triads or diatonic
sevenths, a bass line, a melody from the scale) played by one additive-synthesis instrument
over one of six rhythm styles with synthetic drums. A genre is a rhythm style plus a typical
instrument and tempo range, so genre, key, tempo and instrument are all learnable from audio.
Arousal and valence are functions of audible, level-independent properties (tempo,
brightness, note density, drum level relative to the music, mode) plus a little noise.

Track i depends only on (seed, i): generating 10 or 100 tracks gives the same first 10.
Tracks i = 12h + g and 12h + g + 6 form artist 6h + g (genre g); artists, not tracks, are
split train/valid/test (1/2, 1/6, 1/3), so no artist appears in two splits. The split is
stratified: every 576 tracks hold, for each of the 24 keys, 12 train, 4 valid and 8 test
tracks, and for each genre 48, 16 and 32, so the probes' test scores can be read.

This module holds the labels and the music (genres, rhythms, keys, the notes of each track,
the metadata CSV); the sounds that play the notes (instruments, drums) are in `synth`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import re

import numpy as np
import soundfile as sf
import tqdm

from myna_rpe_jax import files
from myna_rpe_jax.data.demo.synth import BASS, TIMBRES, Voice, drum_kit, fade_and_normalise, mix_in
from myna_rpe_jax.data.keys import KEY_NAMES

SAMPLE_RATE = 22050  # Hz of the generated wav files (data_prep.make_demo --sample-rate)
DEMO_GENRES = ("rock", "electronic", "jazz", "waltz", "ambient", "hiphop")
INSTRUMENTS = ("organ", "pluck", "pad", "brass", "bell", "piano")
_OTHER_TAGS = ("major", "minor", "slow", "medium", "fast", "percussive", "no-drums")
DEMO_TAGS = DEMO_GENRES + INSTRUMENTS + _OTHER_TAGS
METADATA_COLUMNS = (
    "track_id",
    "path",
    "split",
    "artist",
    "genre",
    "key",
    "tempo_bpm",
    "arousal",
    "valence",
    "tags",
)
# Split of artist (h, g) is _SPLIT_CYCLE[(h + g) % 6]: every 6 artists of a genre hold 3
# train, 1 valid, 2 test. In block b (half-blocks 2b and 2b + 1) key k is played by genre
# (k - b) % 6, so over 24 blocks (576 tracks) each key meets every cycle position equally
# often: 12 train, 4 valid, 8 test tracks per key (tests/data/test_demo_music.py).
_SPLIT_CYCLE = ("train", "test", "train", "test", "train", "valid")


@dataclasses.dataclass(frozen=True)
class _Rhythm:
    """One bar of a style, positions in beats: drum hits (name, beat, velocity), chord
    strikes, bass notes; `swing` delays off-beat melody eighths to 2/3 of the beat."""

    beats_per_bar: int
    drums: tuple[tuple[str, float, float], ...]
    chords: tuple[float, ...]
    bass: tuple[float, ...]
    swing: bool = False


def _hats(beats: int, step: float, velocity: float, name: str = "hat") -> tuple:
    return tuple((name, k * step, velocity) for k in range(int(beats / step)))


_RHYTHMS = {
    "rock": _Rhythm(
        4,
        (("kick", 0, 1), ("kick", 2, 1), ("kick", 2.5, 0.7), ("snare", 1, 1), ("snare", 3, 1))
        + _hats(4, 0.5, 0.5),
        chords=(0, 2),
        bass=(0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5),
    ),
    "four_on_floor": _Rhythm(
        4,
        (("kick", 0, 1), ("kick", 1, 1), ("kick", 2, 1), ("kick", 3, 1))
        + (("snare", 1, 0.8), ("snare", 3, 0.8))
        + tuple(("hat", b + 0.5, 0.6) for b in range(4)),
        chords=(0, 1.5, 2.5),
        bass=(0.5, 1.5, 2.5, 3.5),
    ),
    "swing": _Rhythm(
        4,
        (("ride", 0, 0.8), ("ride", 1, 0.8), ("ride", 5 / 3, 0.5), ("ride", 2, 0.8))
        + (("ride", 3, 0.8), ("ride", 11 / 3, 0.5), ("hat", 1, 0.5), ("hat", 3, 0.5))
        + (("kick", 0, 0.5),),
        chords=(0, 5 / 3, 3),
        bass=(0, 1, 2, 3),
        swing=True,
    ),
    "waltz": _Rhythm(
        3,
        (("kick", 0, 1), ("snare", 1, 0.5), ("snare", 2, 0.5)) + _hats(3, 1, 0.4),
        chords=(1, 2),
        bass=(0,),
    ),
    "sparse": _Rhythm(4, (("kick", 0, 0.6), ("hat", 2, 0.4)), chords=(0,), bass=(0,)),
    "halftime": _Rhythm(
        4,
        (("kick", 0, 1), ("kick", 1.75, 0.8), ("kick", 2.5, 0.9), ("snare", 2, 1))
        + _hats(4, 0.5, 0.5),
        chords=(0, 2),
        bass=(0, 1.75, 2.5),
    ),
}


@dataclasses.dataclass(frozen=True)
class _Genre:
    rhythm: str
    instrument: str  # on an artist's first track and 40% of second ones: 70% overall
    tempo: tuple[float, float]
    notes_per_beat: tuple[float, ...]  # melody densities to draw from
    sevenths: float  # probability of seventh chords
    drums: float  # probability that the drums play on an artist's second track


_GENRES = {
    "rock": _Genre("rock", "brass", (100, 145), (1, 2), 0.0, 1.0),
    "electronic": _Genre("four_on_floor", "pluck", (118, 140), (2, 4), 0.2, 1.0),
    "jazz": _Genre("swing", "bell", (130, 180), (1, 2), 1.0, 0.9),
    "waltz": _Genre("waltz", "organ", (84, 126), (1, 2), 0.0, 0.85),
    "ambient": _Genre("sparse", "pad", (60, 80), (0.25, 0.5), 0.5, 0.15),
    "hiphop": _Genre("halftime", "piano", (70, 96), (1, 2), 0.5, 1.0),
}

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
_HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)
# Scale degrees (0 = tonic) per bar; minor ones use a major V (harmonic minor) like most
# tonal music, which also keeps a minor key distinguishable from its relative major.
_PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4), (0, 3, 0, 4)),
    "minor": ((0, 3, 4, 0), (0, 5, 3, 4), (0, 6, 5, 4), (0, 0, 3, 4)),
}
_JAZZ_PROGRESSION = (0, 1, 4, 0)


@dataclasses.dataclass(frozen=True)
class TrackSpec:
    """Everything that defines one demo track and its labels."""

    index: int
    seed: int
    track_id: str
    artist: str
    split: str
    genre: str
    key: int  # index into KEY_NAMES
    instrument: str
    tempo_bpm: float
    brightness: float  # [-1, 1]: spectral tilt of the instrument
    notes_per_beat: float
    rest_prob: float
    drum_level: float  # 0 = no drums, else drum gain relative to the music
    sevenths: bool
    progression: tuple[int, ...]
    arousal: float
    valence: float

    @property
    def mode(self) -> str:
        return "minor" if self.key >= 12 else "major"

    @property
    def tags(self) -> tuple[str, ...]:
        bucket = "slow" if self.tempo_bpm < 90 else "medium" if self.tempo_bpm < 130 else "fast"
        drums = "percussive" if self.drum_level > 0 else "no-drums"
        return (self.genre, self.instrument, self.mode, bucket, drums)


def _layout(index: int) -> tuple[int, int, int, str]:
    """(genre index, key, artist number, split) of track `index`: balanced by construction.

    Within each block of 24 tracks every key appears once and every genre four times;
    over 144 tracks each (genre, key) pair appears exactly once.
    """
    block, pos = divmod(index, 24)
    genre = index % 6
    half_block = index // 12
    split = _SPLIT_CYCLE[(half_block + genre) % len(_SPLIT_CYCLE)]
    return genre, (pos + block) % 24, 6 * half_block + genre, split


def track_spec(index: int, seed: int = 0) -> TrackSpec:
    """The labels and synthesis parameters of track `index` of the set drawn with `seed`."""
    genre_index, key, artist, split = _layout(index)
    genre_name = DEMO_GENRES[genre_index]
    genre = _GENRES[genre_name]
    rng = np.random.default_rng([seed, index])
    mode = "minor" if key >= 12 else "major"
    # An artist's first track is typical of its genre (typical instrument; drums if the
    # genre mostly has them), its second one is drawn; so every split that holds a genre
    # holds its typical instrument and drum style.
    first_of_artist = index % 12 < 6
    instrument = genre.instrument
    if not first_of_artist and rng.random() > 0.4:
        instrument = str(rng.choice([i for i in INSTRUMENTS if i != genre.instrument]))
    tempo = float(rng.uniform(*genre.tempo))
    brightness = float(np.clip(rng.uniform(-1, 1) + _artist_traits(seed, artist)[0], -1, 1))
    notes_per_beat = float(rng.choice(genre.notes_per_beat))
    rest_prob = float(rng.uniform(0.05, 0.3))
    has_drums = genre.drums >= 0.5 if first_of_artist else rng.random() < genre.drums
    drum_level = float(rng.uniform(0.4, 1.0)) if has_drums else 0.0
    sevenths = bool(rng.random() < genre.sevenths)
    if genre_name == "jazz":
        progression = _JAZZ_PROGRESSION
    else:
        options = _PROGRESSIONS[mode]
        progression = options[rng.integers(len(options))]

    # Level-independent arousal cues, each scaled to about [-1, 1].
    tempo_n = (tempo - 120) / 60
    notes_per_second = notes_per_beat * (1 - rest_prob) * tempo / 60
    density_n = float(np.clip((math.log2(notes_per_second) - 1) / 2, -1, 1))
    drums_n = 2 * drum_level - 1 if drum_level > 0 else -1.0
    arousal = 0.35 * tempo_n + 0.25 * brightness + 0.2 * density_n + 0.2 * drums_n
    valence = 0.55 * (1 if mode == "major" else -1) + 0.3 * tempo_n + 0.15 * brightness
    noise = rng.normal(0, 0.05, size=2)
    return TrackSpec(
        index=index,
        seed=seed,
        track_id=f"demo{index:05d}",
        artist=f"artist{artist:04d}",
        split=split,
        genre=genre_name,
        key=key,
        instrument=instrument,
        tempo_bpm=round(tempo, 2),
        brightness=brightness,
        notes_per_beat=notes_per_beat,
        rest_prob=rest_prob,
        drum_level=drum_level,
        sevenths=sevenths,
        progression=tuple(int(d) for d in progression),
        arousal=round(float(np.clip(arousal + noise[0], -1, 1)), 4),
        valence=round(float(np.clip(valence + noise[1], -1, 1)), 4),
    )


def _artist_traits(seed: int, artist: int) -> tuple[float, np.ndarray]:
    """An artist's brightness offset and per-harmonic gains [16]: its slight signature."""
    rng = np.random.default_rng([seed, 1_000_003, artist])
    return float(rng.normal(0, 0.15)), np.clip(1 + 0.25 * rng.standard_normal(16), 0.5, 1.5)


def _chord_offsets(degree: int, minor: bool, seventh: bool) -> list[int]:
    """Semitones above the tonic of a root-position diatonic triad/seventh on `degree`."""
    scale = _MAJOR if not minor else _HARMONIC_MINOR if degree == 4 else _MINOR
    steps = [degree + 2 * j for j in range(4 if seventh else 3)]
    return [scale[s % 7] + 12 * (s // 7) for s in steps]


def _compose(
    spec: TrackSpec, rhythm: _Rhythm, num_bars: int, rng: np.random.Generator
) -> list[tuple[str, float, float, int, float]]:
    """The notes of the track: (voice "lead"|"bass", start beat, length in beats, MIDI pitch,
    velocity). Bass roots and melody thirds on the downbeats, the tonic opening each
    progression and harmonic-minor dominants make the labelled key the one a listener (or
    a chroma-based key finder) hears."""
    tonic, minor = spec.key % 12, spec.key >= 12
    step = 1.0 / spec.notes_per_beat
    melody_pos = np.arange(0, rhythm.beats_per_bar, step)
    if rhythm.swing:
        melody_pos = np.where(melody_pos % 1 == 0.5, melody_pos + 1 / 6, melody_pos)
    strikes = (*rhythm.chords, rhythm.beats_per_bar)
    previous = 72 + (tonic - 72) % 12  # the melody starts near the tonic above C5
    notes = []
    for b in range(num_bars):
        t0 = b * rhythm.beats_per_bar
        degree = spec.progression[b % len(spec.progression)]
        # Sevenths colour the other chords; a tonic seventh would blur the key.
        offsets = _chord_offsets(degree, minor, spec.sevenths and degree != 0)
        root = 53 + (tonic + offsets[0] - 53) % 12  # chord roots in F3..E4
        chord = [root + o - offsets[0] for o in offsets]
        for pos, nxt in zip(strikes[:-1], strikes[1:], strict=True):
            velocity = rng.uniform(0.85, 1.0) * 0.5 / len(chord)
            notes += [("lead", t0 + pos, nxt - pos, midi, velocity) for midi in chord]
        for j, pos in enumerate(rhythm.bass):
            tone = chord[0] if j == 0 else chord[rng.choice((0, 1, 2))]  # then any triad tone
            notes.append(("bass", t0 + pos, 0.9, 36 + (tone - 36) % 12, 0.45))
        scale = _HARMONIC_MINOR if minor and degree == 4 else _MINOR if minor else _MAJOR
        scale_pcs = {(tonic + o) % 12 for o in scale}
        for pos in melody_pos:
            if pos > 0 and rng.random() < spec.rest_prob:
                continue
            # Downbeats take the chord's third (it carries the mode), other beats a chord
            # tone, off-beats any scale tone.
            if pos == 0:
                pcs = {chord[1] % 12}
            elif pos % 1 == 0:
                pcs = {m % 12 for m in chord}
            else:
                pcs = scale_pcs
            allowed = [m for m in range(62, 86) if m % 12 in pcs]
            near = [m for m in allowed if 0 < abs(m - previous) <= 7]
            previous = int(rng.choice(near or allowed))
            notes.append(("lead", t0 + pos, 0.9 * step, previous, rng.uniform(0.8, 1.0) * 0.45))
    return notes


def render_track(
    spec: TrackSpec, seconds: float = 20.0, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Synthesises the track described by `spec`: float32 [seconds * sample_rate], peak 0.9."""
    rng = np.random.default_rng([spec.seed, spec.index, 1])
    rhythm = _RHYTHMS[_GENRES[spec.genre].rhythm]
    _, gains = _artist_traits(spec.seed, _layout(spec.index)[2])
    tilt = 0.6 - 0.6 * spec.brightness  # 0 (bright, flat spectrum) .. 1.2 (dull)
    voices = {
        "lead": Voice(TIMBRES[spec.instrument], tilt, gains, sample_rate),
        "bass": Voice(BASS, 0.0, np.ones(16), sample_rate),
    }
    beat = 60.0 / spec.tempo_bpm
    num_bars = int(seconds / (rhythm.beats_per_bar * beat)) + 1
    out = np.zeros(int(round(seconds * sample_rate)), dtype=np.float32)
    for voice, start, length, midi, velocity in _compose(spec, rhythm, num_bars, rng):
        mix_in(out, start * beat, voices[voice].note(midi, length * beat, velocity), sample_rate)
    if spec.drum_level > 0:
        kit = drum_kit(rng, sample_rate)
        for b in range(num_bars):
            for name, pos, velocity in rhythm.drums:
                start = (b * rhythm.beats_per_bar + pos) * beat + rng.normal(0, 0.002)
                mix_in(out, start, kit[name] * (velocity * spec.drum_level), sample_rate)
    return fade_and_normalise(out, sample_rate)


def generate_demo(
    out_dir: str | os.PathLike,
    num_tracks: int = 96,
    seconds: float = 20.0,
    seed: int = 0,
    sample_rate: int = SAMPLE_RATE,
    progress: bool = False,
) -> list[dict[str, str]]:
    """Writes `<out_dir>/audio/<track_id>.wav` (16-bit mono) and `<out_dir>/metadata.csv`.

    Returns the metadata rows (dicts keyed by METADATA_COLUMNS, all values strings).
    """
    if num_tracks < 1 or seconds <= 0 or sample_rate < 8000:
        raise ValueError(
            f"need num_tracks >= 1, seconds > 0 and sample_rate >= 8000; got {num_tracks}, "
            f"{seconds}, {sample_rate}"
        )
    audio_dir = os.path.join(out_dir, "audio")
    os.makedirs(audio_dir, exist_ok=True)
    rows = []
    for index in tqdm.trange(num_tracks, desc="demo tracks", unit="track", disable=not progress):
        spec = track_spec(index, seed)
        relative = f"audio/{spec.track_id}.wav"
        sf.write(
            os.path.join(out_dir, relative),
            render_track(spec, seconds, sample_rate),
            sample_rate,
            subtype="PCM_16",
        )
        rows.append(
            {
                "track_id": spec.track_id,
                "path": relative,
                "split": spec.split,
                "artist": spec.artist,
                "genre": spec.genre,
                "key": KEY_NAMES[spec.key],
                "tempo_bpm": f"{spec.tempo_bpm:.2f}",
                "arousal": f"{spec.arousal:.4f}",
                "valence": f"{spec.valence:.4f}",
                "tags": "|".join(spec.tags),
            }
        )
    # Whole or absent: a set interrupted while its metadata is written is not taken for done.
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=METADATA_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    files.write_text(os.path.join(out_dir, "metadata.csv"), text.getvalue())
    # A larger set generated here before would leave tracks that no row lists.
    written = {f"{row['track_id']}.wav" for row in rows}
    for name in os.listdir(audio_dir):
        if re.fullmatch(r"demo\d{5,}\.wav", name) and name not in written:
            os.remove(os.path.join(audio_dir, name))
    return rows

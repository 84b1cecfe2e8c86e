"""Sound synthesis for the demo music set: additive instruments, synthetic drums, mixing.

Instruments (`Timbre`, played by `Voice`) are harmonic spectra read from band-limited
wavetables, with an attack/decay envelope and a bright-to-body crossfade; drums (`drum_kit`)
are sine sweeps and filtered noise. Nothing here knows about genres, keys or labels: that is
`music`, which composes the notes and renders tracks with these sounds.
"""

from __future__ import annotations

import dataclasses

import numpy as np

_TABLE_SIZE = 4096


@dataclasses.dataclass(frozen=True)
class Timbre:
    """Additive instrument: harmonic amplitudes at the attack ("bright") and later ("body"),
    crossfaded with time constant `bright_tau` (negative: body to bright over the attack)."""

    bright: dict[int, float]
    body: dict[int, float]
    attack: float
    decay: float | None  # exponential decay time constant; None = sustained
    release: float
    bright_tau: float
    tremolo: float = 0.0


def _saw(n: int, slope: float) -> dict[int, float]:
    return {k: k**-slope for k in range(1, n + 1)}


# The lead instruments, by name (music.INSTRUMENTS), and the bass.
TIMBRES = {
    "organ": Timbre({1: 1, 2: 0.8, 3: 0.6, 4: 0.5, 6: 0.4, 8: 0.3}, {}, 0.01, None, 0.05, 0.0),
    "pluck": Timbre(_saw(16, 1.0), _saw(5, 2.5), 0.003, 0.35, 0.05, 0.08),
    "pad": Timbre(_saw(8, 1.6), {}, 0.4, None, 0.6, 0.0, tremolo=0.1),
    "brass": Timbre(_saw(14, 1.0), _saw(5, 2.0), 0.06, None, 0.08, -1.0),
    "bell": Timbre({1: 1, 4: 0.6, 10: 0.3}, {1: 1}, 0.002, 1.2, 0.1, 0.15, tremolo=0.25),
    "piano": Timbre(_saw(12, 1.2), _saw(6, 2.2), 0.002, 0.9, 0.1, 0.25),
}
BASS = Timbre({1: 1, 2: 0.5, 3: 0.2}, {1: 1, 2: 0.2}, 0.005, 0.6, 0.05, 0.1)


class Voice:
    """Renders notes of one timbre from band-limited wavetables (additive synthesis with
    the harmonic sum precomputed per period, so a note costs a table lookup per sample).

    `tilt` darkens the spectrum (harmonic k scaled by k**-tilt); `gains` [16] are per-harmonic
    gains (harmonic k takes gains[k % 16]), an artist's signature.
    """

    def __init__(self, timbre: Timbre, tilt: float, gains: np.ndarray, sr: int):
        self.timbre, self.tilt, self.gains, self.sr = timbre, tilt, gains, sr
        t = np.arange(int(6 * sr)) / sr  # longest note: a 4-beat bar at 60 BPM plus release
        env = np.minimum(t / timbre.attack, 1.0)
        if timbre.decay is not None:
            env = env * np.exp(-t / timbre.decay)
        if timbre.tremolo:
            env = env * (1 - timbre.tremolo * (0.5 - 0.5 * np.cos(2 * np.pi * 5.5 * t)))
        self.env = env.astype(np.float32)
        if timbre.bright_tau > 0:
            mix = np.exp(-t / timbre.bright_tau)
        else:
            mix = 0.8 * np.minimum(t / timbre.attack, 1.0)
        self.mix = mix.astype(np.float32) if timbre.body else None
        self.tables: dict[tuple[str, int], np.ndarray] = {}

    def _table(self, which: str, max_harmonic: int) -> np.ndarray:
        """One period [_TABLE_SIZE] of the harmonic sum, without partials above Nyquist."""
        key = (which, max_harmonic)
        if key not in self.tables:
            harmonics = self.timbre.bright if which == "bright" else self.timbre.body
            spectrum = np.zeros(_TABLE_SIZE // 2 + 1, dtype=complex)
            for k, amp in harmonics.items():
                if k <= max_harmonic:
                    spectrum[k] = -0.5j * _TABLE_SIZE * amp * k**-self.tilt * self.gains[k % 16]
            table = np.fft.irfft(spectrum, n=_TABLE_SIZE)
            self.tables[key] = (table / np.sqrt(np.mean(table**2))).astype(np.float32)
        return self.tables[key]

    def note(self, midi: float, duration: float, velocity: float) -> np.ndarray:
        """A note of `duration` seconds plus its release: float32 [samples]."""
        freq = 440.0 * 2 ** ((midi - 69) / 12)
        held = int(duration * self.sr)
        release = max(1, int(self.timbre.release * self.sr))
        length = min(held + release, len(self.env))
        n = np.arange(length)
        index = (n * (freq * _TABLE_SIZE / self.sr)).astype(np.int64) & (_TABLE_SIZE - 1)
        max_harmonic = max(1, int(0.45 * self.sr / freq))
        wave = self._table("bright", max_harmonic)[index]
        if self.mix is not None:
            body = self._table("body", max_harmonic)[index]
            wave = body + self.mix[:length] * (wave - body)
        fade = np.clip((held + release - n) / release, 0.0, 1.0).astype(np.float32)
        return velocity * wave * self.env[:length] * fade


def drum_kit(rng: np.random.Generator, sr: int) -> dict[str, np.ndarray]:
    """Kick (sine sweep), snare (noise + tone), closed hat and ride (high-passed noise):
    float32 [samples] each, keyed "kick", "snare", "hat", "ride"."""

    def times(seconds: float) -> np.ndarray:
        return np.arange(int(seconds * sr)) / sr

    def highpassed_noise(n: int) -> np.ndarray:
        return 0.5 * np.diff(rng.standard_normal(n + 1))

    tk, ts, th, tr = times(0.35), times(0.25), times(0.08), times(0.9)
    sweep = 45 + 180 * np.exp(-tk / 0.025)
    kick = np.sin(2 * np.pi * np.cumsum(sweep) / sr) * np.exp(-tk / 0.12)
    kick += 0.8 * highpassed_noise(len(tk)) * np.exp(-tk / 0.004)  # the beater's click
    snare = 0.8 * highpassed_noise(len(ts)) * np.exp(-ts / 0.07)
    snare += 0.6 * np.sin(2 * np.pi * 185 * ts) * np.exp(-ts / 0.04)
    hat = 0.5 * highpassed_noise(len(th)) * np.exp(-th / 0.018)
    metal = sum(np.sin(2 * np.pi * f * tr) for f in (3150, 4270, 5640) if f < 0.45 * sr)
    ride = (0.3 * highpassed_noise(len(tr)) + 0.1 * metal) * np.exp(-tr / 0.3)
    kit = {"kick": kick, "snare": snare, "hat": hat, "ride": ride}
    return {name: sound.astype(np.float32) for name, sound in kit.items()}


def mix_in(out: np.ndarray, start_s: float, wave: np.ndarray, sr: int) -> None:
    """Adds wave [samples] into out [samples] from `start_s` seconds on, cut at out's end."""
    start = max(0, int(start_s * sr))
    stop = min(len(out), start + len(wave))
    if stop > start:
        out[start:stop] += wave[: stop - start]


def fade_and_normalise(out: np.ndarray, sample_rate: int) -> np.ndarray:
    """5 ms fades at both ends of out [samples] (in place; no clicks), then scaled to peak 0.9."""
    fade = min(len(out) // 2, int(0.005 * sample_rate))
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    out[:fade] *= ramp
    out[len(out) - fade :] *= ramp[::-1]
    peak = float(np.max(np.abs(out)))
    return out * np.float32(0.9 / peak) if peak > 0 else out

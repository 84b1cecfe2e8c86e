"""Musical keys: the 24 key classes, parsing of key labels, and the MIREX weighted score.

Class index = pitch_class + 12 * mode, with pitch classes spelled with flats
(C, Db, D, Eb, E, F, Gb, G, Ab, A, Bb, B) and mode 0 = major, 1 = minor.
"""

from __future__ import annotations

import re

import numpy as np

PITCH_CLASSES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor")
KEY_NAMES = tuple(f"{pc} {mode}" for mode in MODES for pc in PITCH_CLASSES)
NUM_KEYS = len(KEY_NAMES)

_NATURALS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_KEY_RE = re.compile(r"^\s*([A-Ga-g])\s*([#b♯♭]?)\s*[:\s]?\s*(major|minor|maj|min|m)?\s*$")


def parse_key(text: str) -> int:
    """Parses a key label such as "C minor", "D# major", "Bb min" or "f#m" to a class index.

    Sharps are mapped to their enharmonic flats. Raises ValueError for anything that is not
    exactly one key (e.g. "-", "F minor / G# major", "G minor/major"), so callers can skip
    ambiguous annotations with a reason instead of guessing.
    """
    match = _KEY_RE.match(text)
    if match is None:
        raise ValueError(f"not a single key: {text!r} (expected e.g. 'C minor' or 'Eb major')")
    letter, accidental, mode = match.groups()
    pitch = _NATURALS[letter.upper()] + {"#": 1, "♯": 1, "b": -1, "♭": -1, "": 0}[accidental]
    is_minor = mode in ("minor", "min", "m") or (mode is None and letter.islower())
    return pitch % 12 + 12 * int(is_minor)


def mirex_weights(allow_descending_fifths: bool = False) -> np.ndarray:
    """The [24, 24] MIREX key score matrix W[reference, estimate].

    1.0 same key; 0.5 the estimate is a perfect fifth above the reference in the same mode
    (also a fifth below if `allow_descending_fifths`); 0.3 relative major/minor;
    0.2 parallel major/minor; 0 otherwise. This is mir_eval.key.weighted_score's definition.
    """
    weights = np.zeros((NUM_KEYS, NUM_KEYS))
    for ref in range(NUM_KEYS):
        ref_pc, ref_minor = ref % 12, ref // 12
        for est in range(NUM_KEYS):
            est_pc, est_minor = est % 12, est // 12
            interval = (est_pc - ref_pc) % 12
            if ref == est:
                score = 1.0
            elif ref_minor == est_minor and (
                interval == 7 or (allow_descending_fifths and interval == 5)
            ):
                score = 0.5
            elif ref_minor != est_minor and interval == (3 if ref_minor else 9):
                score = 0.3
            elif ref_minor != est_minor and interval == 0:
                score = 0.2
            else:
                score = 0.0
            weights[ref, est] = score
    return weights


def mirex_score(reference: np.ndarray, estimate: np.ndarray, **kwargs) -> float:
    """Mean MIREX weighted score of estimated vs reference key indices (both [N] ints)."""
    reference, estimate = np.asarray(reference), np.asarray(estimate)
    if reference.shape != estimate.shape:
        raise ValueError(f"shapes differ: reference {reference.shape}, estimate {estimate.shape}")
    return float(mirex_weights(**kwargs)[reference, estimate].mean())

import numpy as np
import pytest

from myna_rpe_jax.data import keys
from tests.conftest import SHARED_DATASETS


@pytest.mark.parametrize(
    "text,name",
    [
        ("C minor", "C minor"),
        ("D# minor", "Eb minor"),
        ("A# major", "Bb major"),
        ("Bb min", "Bb minor"),
        ("f#m", "Gb minor"),
        ("G", "G major"),
        ("E major", "E major"),
    ],
)
def test_parse_key_maps_sharps_to_flats(text, name):
    assert keys.KEY_NAMES[keys.parse_key(text)] == name


@pytest.mark.parametrize("text", ["-", "F minor / G# major", "G minor/major", "", "H major"])
def test_parse_key_refuses_anything_but_one_key(text):
    with pytest.raises(ValueError, match="not a single key"):
        keys.parse_key(text)


def test_every_published_giantsteps_key_parses():
    folder = SHARED_DATASETS / "giantsteps-key" / "annotations" / "key"
    files = sorted(folder.glob("*.key"))
    if not files:
        pytest.skip(f"published annotation files not found in {folder}")
    parsed = [keys.parse_key(f.read_text()) for f in files]
    assert len(parsed) == 604 and set(parsed) <= set(range(24))


def test_mirex_weights_structure():
    w = keys.mirex_weights()
    np.testing.assert_array_equal(np.diag(w), 1.0)
    c_major, g_major, a_minor, c_minor = 0, 7, 12 + 9, 12
    assert w[c_major, g_major] == 0.5 and w[g_major, c_major] == 0.0
    assert w[c_major, a_minor] == 0.3 and w[a_minor, c_major] == 0.3
    assert w[c_major, c_minor] == 0.2 and w[c_minor, c_major] == 0.2
    assert keys.mirex_weights(allow_descending_fifths=True)[g_major, c_major] == 0.5
    # Each reference has exactly one key of each kind: 1 + 0.5 + 0.3 + 0.2.
    np.testing.assert_allclose(w.sum(axis=1), 2.0)

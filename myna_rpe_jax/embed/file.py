"""The embedding file format (`.npz`): one reader and one writer for embed, probe and playlist.

Arrays, one row per track (N tracks, D dimensions), never pickled:

    track_ids   [N] str
    embeddings  [N, D] float32
    split       [N] str ("" outside a prepared dataset)
    meta        [] str, JSON: how the file was made, and "skipped" (files that failed)
    label_<key> [N] or [N, C], one per label of a prepared dataset

Only numpy and json here, so light tools (playlist) read the format without importing the
model or the audio decoders that `embed` needs.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np

from myna_rpe_jax import files

# What `save_npz` writes and `load_npz` requires; strict=False needs only the first two.
FIELDS = ("track_ids", "embeddings", "split", "meta")
MINIMAL_FIELDS = FIELDS[:2]


@dataclasses.dataclass
class Embeddings:
    """What an embedding run produced: one row per embedded track, and what was skipped."""

    track_ids: list[str]
    embeddings: np.ndarray  # [N, D] float32
    split: list[str]
    labels: dict[str, np.ndarray]  # label key -> [N] or [N, C]
    skipped: list[str]
    meta: dict


def save_npz(path: str | Path, result: Embeddings) -> Path:
    """Writes the embedding file format shared with probe and playlist (see the README)."""
    path = Path(path)
    arrays = {f"label_{key}": value for key, value in result.labels.items()}
    # A killed run never leaves a half-written file to be reused; two probes writing one
    # --output cannot write into each other's file (files.atomic_path).
    # Through a file object: given a name, np.savez would append ".npz" to the temporary one.
    with files.atomic_path(path) as partial, open(partial, "wb") as handle:
        np.savez(
            handle,
            track_ids=np.asarray(result.track_ids, dtype=str),
            embeddings=result.embeddings,
            split=np.asarray(result.split, dtype=str),
            meta=np.asarray(json.dumps({**result.meta, "skipped": result.skipped})),
            **arrays,
        )
    return path


_WRITER = "`python -m myna_rpe_jax.embed`"


def _field(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """npz[key], or a ValueError naming the file and the field when it is damaged or holds
    Python objects (which only pickle, never loaded here, could read)."""
    try:
        return npz[key]
    except (zipfile.BadZipFile, OSError, EOFError) as err:  # a bad CRC shows only on read
        raise ValueError(
            f"{path}: field {key!r} cannot be read, the file is damaged ({err}); write it again"
        ) from err
    except ValueError as err:
        raise ValueError(
            f"{path}: field {key!r} holds Python objects (an array of dtype object), which are"
            " not read (that would need pickle); save it as numbers or strings, e.g."
            " np.asarray(track_ids, dtype=str)"
        ) from err


def load_npz(path: str | Path, *, strict: bool = True) -> Embeddings:
    """Reads an embedding file (no pickle).

    strict=True requires every field `save_npz` writes (FIELDS). strict=False reads any .npz
    holding track_ids [N] and embeddings [N, D], e.g. one written with `np.savez` by another
    tool: a missing split reads as "" for every track, a missing meta as {} (no skipped).

    Raises FileNotFoundError when path does not exist, and ValueError naming the file and the
    field when it is not an .npz, lacks a required field or its fields disagree in length.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embeddings file {path} does not exist")
    try:
        f = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:  # EOF: an empty file
        raise ValueError(f"not an embedding file (.npz from {_WRITER}): {path}") from err
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"not an embedding file (.npz from {_WRITER}): {path} holds one array")
    with f:
        missing = sorted(set(FIELDS if strict else MINIMAL_FIELDS) - set(f.files))
        if missing:
            fix = "expected an .npz written by `python -m myna_rpe_jax.embed` (keys "
            fix += "track_ids, embeddings, ...)"
            if not set(missing) & set(MINIMAL_FIELDS):
                fix += "; load_npz(path, strict=False) reads one without split and meta"
            raise ValueError(f"{path} lacks {missing}: {fix}")
        arrays = {key: _field(f, key, path) for key in f.files}
        ids = [str(t) for t in arrays["track_ids"]]
        emb = np.asarray(arrays["embeddings"], np.float32)
        split = [str(s) for s in arrays["split"]] if "split" in f.files else [""] * len(ids)
        meta = json.loads(str(arrays["meta"])) if "meta" in f.files else {}
        labels = {key[len("label_") :]: arrays[key] for key in f.files if key.startswith("label_")}
    if emb.ndim != 2 or len(emb) != len(ids) or len(split) != len(ids):
        raise ValueError(
            f"{path}: embeddings {emb.shape} and split ({len(split)}) do not match "
            f"{len(ids)} track_ids; expected embeddings [N, D] and split [N]"
        )
    return Embeddings(ids, emb, split, labels, meta.pop("skipped", []), meta)

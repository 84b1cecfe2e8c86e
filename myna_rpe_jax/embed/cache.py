"""A cache of embedding files (the probe's OUT/embeddings/*.npz), reused only for the same
parameters, embedding-deciding model settings and prepared data files (`cached`).

Each file's meta holds what made it; a probe compares that with what it would compute. A file
that cannot be read is the cache's own: it is made again, with a warning, not a dead end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
import numpy as np

from myna_rpe_jax.embed.file import Embeddings, load_npz, save_npz
from myna_rpe_jax.run.checkpoints import config_changes

log = logging.getLogger("myna_rpe_jax.embed")

# config.model fields that choose how attention is computed, not what it computes: the same
# embeddings up to float rounding, at another speed or memory (docs/long_tracks.md), so the
# embedding caches are shared across them (as across max_tokens and max_padding).
SPEED_ONLY_FIELDS = (
    "attention_kernel",
    "alibi_tile_skip",
    "attention_block_size",
    "blockwise_threshold",
)
# What reading a damaged cache file raises (a bad CRC surfaces as BadZipFile only on read).
_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile)


def params_digest(params) -> str:
    """A digest (16 hex digits) of a parameter tree: every array's path, dtype, shape and
    bytes. Two checkpoints share it only when they hold the same parameters, so a run
    retrained into the same workdir never reuses the old one's embeddings."""
    digest = hashlib.blake2b(digest_size=8)
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]:
        array = np.ascontiguousarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype}{array.shape};".encode())
        digest.update(array.reshape(-1).view(np.uint8))  # any dtype, bfloat16 too; no copy
    return digest.hexdigest()


def json_digest(value) -> str:
    """A digest (8 hex digits) of a JSON value, short enough for a file name."""
    text = json.dumps(value, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def embedding_model_fields(model: ml_collections.ConfigDict) -> dict:
    """config.model as JSON without SPEED_ONLY_FIELDS: the model settings that decide the
    embeddings (with the parameters)."""
    fields = json.loads(model.to_json_best_effort())
    return {key: value for key, value in fields.items() if key not in SPEED_ONLY_FIELDS}


def prepared_files_digest(name: str, data_dir: Path) -> str:
    """A digest (16 hex digits) of the files of dataset `name` as prepared in data_dir: their
    names, sizes and modification times (a stat each, nothing read). A rebuild into the same
    data_dir (`data_prep.build --overwrite`) changes it; reading the dataset does not."""
    from myna_rpe_jax.data import datasets  # imports TensorFlow Datasets

    folder = datasets.prepared_dir(name, data_dir)
    digest = hashlib.blake2b(folder.as_posix().encode(), digest_size=8)
    for file in sorted(path for path in folder.iterdir() if path.is_file()):
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def stale_settings(meta: dict, expected: dict) -> str:
    """Why a cache file's meta does not match `expected`, as one line: `name cached -> now`
    per differing (dotted) field, `no name recorded` per field the file lacks; "" if none."""
    absent = [f"no {key} recorded" for key in expected if key not in meta]
    changes = config_changes({k: meta[k] for k in expected if k in meta}, expected)
    changed = [f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items()]
    return ", ".join(changed + absent)


def cached(
    path: Path, expected: dict, compute: Callable[[], Embeddings]
) -> tuple[Embeddings, bool]:
    """The embeddings in `path` when its meta holds every `expected` item, else `compute()`
    saved there (replacing a file of other settings, or one that cannot be read: the probe's
    own cache, remade rather than a dead end). Returns (embeddings, reused)."""
    if path.exists():
        try:
            cached_result = load_npz(path)
        except _UNREADABLE as err:  # e.g. cut short by a full disk, or copied in part
            reason = err.__cause__ or err  # load_npz's own message names the file again
            why = f"{type(reason).__name__}: {reason}"
            log.warning("recomputing %s: the cached file cannot be read (%s)", path, why)
        else:
            stale = stale_settings(cached_result.meta, expected)
            if not stale:
                log.info("reusing cached embeddings %s", path)
                return cached_result, True
            log.info("recomputing %s: it was made with other settings: %s", path, stale)
    result = compute()
    save_npz(path, result)
    return result, False

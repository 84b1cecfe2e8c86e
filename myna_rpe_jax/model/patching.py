"""Patchify a spectrogram into 16x16 tokens with their coordinates, and patchout them.

Coordinates are in patch units with `coords[..., 0]` = frequency row and
`coords[..., 1]` = time column, so a token keeps its place on the spectrogram even after
patchout has dropped most of its neighbours. Every positional scheme reads them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def grid_coords(num_rows: int, num_cols: int) -> np.ndarray:
    """(freq_row, time_col) of every patch of a rows x cols grid, row-major: [rows * cols, 2]."""
    rows, cols = np.meshgrid(np.arange(num_rows), np.arange(num_cols), indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=-1).astype(np.int32)


def patchify(spec: jax.Array, patch_size: int = 16) -> tuple[jax.Array, jax.Array]:
    """Cuts a batch of spectrograms into non-overlapping square patches.

    Args:
      spec: [B, F, T] mel bins x frames. F must be a multiple of `patch_size`; frames past the
        last whole patch (T mod patch_size of them, at most 15 frames = 0.15 s at 100 frames/s)
        are dropped.
      patch_size: side of a square patch.

    Returns:
      tokens: [B, N, patch_size**2], N = (F // p) * (T // p), ordered frequency-row-major
        (all time columns of the lowest row first); each token is its patch flattened
        frequency-major.
      coords: [N, 2] int32 (freq_row, time_col) of each token, shared by the whole batch.
    """
    batch, num_bins, num_frames = spec.shape
    if num_bins % patch_size:
        raise ValueError(
            f"spectrogram has {num_bins} mel bins, not a multiple of the patch size {patch_size}:"
            " use n_mels divisible by the patch size (128 mels for 16x16 patches)."
        )
    rows, cols = num_bins // patch_size, num_frames // patch_size
    if cols == 0:
        raise ValueError(
            f"spectrogram has {num_frames} frames, fewer than one patch ({patch_size} frames)."
        )
    spec = spec[:, :, : cols * patch_size]
    patches = spec.reshape(batch, rows, patch_size, cols, patch_size)
    tokens = patches.transpose(0, 1, 3, 2, 4).reshape(batch, rows * cols, patch_size**2)
    return tokens, jnp.asarray(grid_coords(rows, cols))


def num_kept(num_tokens: int, keep_fraction: float) -> int:
    """How many of `num_tokens` patchout keeps: round(fraction * N), at least 1."""
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"patchout keep fraction must be in (0, 1], got {keep_fraction}")
    return max(1, round(keep_fraction * num_tokens))


def patchout(
    rng: jax.Array, tokens: jax.Array, coords: jax.Array, num_keep: int
) -> tuple[jax.Array, jax.Array]:
    """Unstructured patchout: keeps a different random subset of tokens in every example.

    Args:
      rng: PRNG key.
      tokens: [B, N, P].
      coords: [N, 2] (shared) or [B, N, 2] coordinates of the tokens.
      num_keep: K, how many tokens to keep (static under jit).

    Returns:
      tokens [B, K, P] and coords [B, K, 2]: each kept token with its own coordinates, in
      their original order (positions are carried by the coordinates, not the order).
    """
    batch, num_tokens, _ = tokens.shape
    if not 1 <= num_keep <= num_tokens:
        raise ValueError(f"num_keep must be in [1, {num_tokens}], got {num_keep}")
    scores = jax.random.uniform(rng, (batch, num_tokens))
    # The K largest of i.i.d. uniforms are a uniformly random K-subset.
    _, keep = jax.lax.top_k(scores, num_keep)
    keep = jnp.sort(keep, axis=-1)
    coords = jnp.broadcast_to(coords, (batch, num_tokens, coords.shape[-1]))
    take = lambda a: jnp.take_along_axis(a, keep[..., None], axis=1)
    return take(tokens), take(coords)


def coordinate_uniforms(rng: jax.Array, coords: jax.Array) -> jax.Array:
    """A uniform in [0, 1) per token, keyed by `rng` and the token's (row, col): coords
    [..., 2] -> [...]. A token draws the same number wherever it sits in the token axis, so
    on a padded grid too."""
    keyed = lambda c: jax.random.uniform(jax.random.fold_in(jax.random.fold_in(rng, c[0]), c[1]))
    return jax.vmap(keyed)(coords.reshape(-1, 2)).reshape(coords.shape[:-1])


def patchout_real(
    rng: jax.Array, tokens: jax.Array, coords: jax.Array, real: jax.Array, keep_fraction: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Patchout of examples padded to a common length (the embedder's length buckets): each
    keeps round(keep_fraction x its real tokens), at least 1, of its real tokens, a uniformly
    random subset chosen by `coordinate_uniforms`, so the choice depends on neither how far
    the example was padded nor where it sits in the batch.

    Args:
      rng: PRNG key. tokens: [B, N, P]. coords: [N, 2] or [B, N, 2].
      real: [B, N] bool, False for the padding's tokens.
      keep_fraction: in (0, 1].

    Returns:
      tokens [B, K, P], coords [B, K, 2] and kept [B, K] bool, K = num_kept(N, keep_fraction)
      (static): an example's chosen tokens first, in their original order, then K minus
      their count other tokens, not kept (to be masked out of attention).
    """
    batch, num_tokens, _ = tokens.shape
    coords = jnp.broadcast_to(coords, (batch, num_tokens, coords.shape[-1]))
    scores = jnp.where(real, coordinate_uniforms(rng, coords), -1.0)  # padding ranks last
    _, best = jax.lax.top_k(scores, num_kept(num_tokens, keep_fraction))  # [B, K], best first
    count = jnp.maximum(1, jnp.round(keep_fraction * real.sum(axis=1)))  # <= K
    kept = jnp.arange(best.shape[1]) < count[:, None]
    # The chosen in their original order (tighter ALiBi tiles), the rest after them.
    order = jnp.argsort(jnp.where(kept, best, best + num_tokens), axis=-1)
    best, kept = jnp.take_along_axis(best, order, axis=1), jnp.take_along_axis(kept, order, axis=1)
    take = lambda a: jnp.take_along_axis(a, best[..., None], axis=1)
    return take(tokens), take(coords), kept & jnp.take_along_axis(real, best, axis=1)

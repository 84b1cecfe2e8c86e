"""Blockwise (flash-style) attention: exact, memory linear in the number of tokens.

The ALiBi bias is evaluated one [block, block] tile at a time with an online softmax, in the
forward and in the backward pass (a custom VJP that recomputes tiles from the saved
log-sum-exp), so a whole track fits where its [H, N, N] scores would not. With an ALiBi bias
whose `tile_skip` is on, the tiles it provably makes exactly zero are skipped (`tile_skip`).
Inside, q, k, v are [B, Np, H, Dh] with Np a multiple of `block`, and `key_valid` is None
(all keys real) or [B, Np] bool (False: padding or a masked key). Tiles are read with dynamic
slices and results written in place, so the only buffers of size N are the inputs, outputs
and residuals.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from myna_rpe_jax.model import tile_skip
from myna_rpe_jax.model.positional import AlibiBias

DEFAULT_BLOCK_SIZE = 512


# Score of a padded key. Finite, so `max` and `exp` never see inf - inf (which is NaN); exp of
# it minus any real score is exactly 0.
MASKED = -1e30


def blockwise_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: AlibiBias | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    key_mask: jax.Array | None = None,
) -> jax.Array:
    """Exact softmax attention in [block, block] tiles with an online softmax (flash attention).

    Never forms an [H, N, N] array: the ALiBi bias of each tile is computed from the tokens'
    coordinates, and the backward pass recomputes the tiles from the saved output and
    log-sum-exp instead of storing them. Memory: O(N (H Dh + H block)), forward and backward.
    The N tokens are cut into the fewest tiles of at most block_size (`tile_layout`), padded
    by a few tokens at most; padded keys are masked out, padded queries cropped.

    Args:
      q, k, v: [B, N, H, Dh].
      bias: optional ALiBi bias over the N tokens.
      block_size: tokens per query / key tile (capped at N).
      key_mask: optional [B, N] bool; False keys get zero weight (every query needs one True).

    Returns:
      [B, N, H, Dh], equal to `dense_attention` up to float rounding.
    """
    num_tokens = q.shape[1]
    block, num_tiles = tile_layout(num_tokens, block_size)
    padded = block * num_tiles
    q, k, v, bias, key_valid = pad_tokens(q, k, v, bias, key_mask, padded)
    if key_mask is None and padded == num_tokens:
        key_valid = None  # every key is real: no masking at all
    if bias is None or not bias.tile_skip:
        return _flash(q, k, v, bias, key_valid, block, False)[:, :num_tokens]
    return _skipping(q, k, v, bias, key_valid, block)[:, :num_tokens]


def _skipping(q, k, v, bias: AlibiBias, key_valid, block: int) -> jax.Array:
    """`_flash` with tile skipping, on the inputs in `skip_order`."""
    order, inputs = skip_order(q, k, v, bias, key_valid)
    return restore_order(_flash(*inputs, block, True), order)


def skip_order(q, k, v, bias: AlibiBias, key_valid):
    """(order, inputs): the inputs (q, k, v, bias, key_valid) in the order tile skipping
    needs, and the (token [B, Np], head [H]) permutations that `restore_order` undoes.

    Tokens are put in time order (the last coordinate; attention does not depend on the
    order, the bias is computed from the coordinates), so that a tile spans a short stretch of
    time rather than one frequency row of the whole track, and far tiles are far apart. Heads
    are put in order of decreasing slope, so that the heads a tile can skip are a prefix: each
    tile computes only the heads after it (a steep head skips most of a long track, a shallow
    one little), still batched over heads.
    """
    tokens = jnp.argsort(bias.coords[..., -1], axis=1, stable=True)
    by_time = lambda t: jnp.take_along_axis(
        t, tokens.reshape(tokens.shape + (1,) * (t.ndim - 2)), 1
    )
    heads = jnp.argsort(-bias.slopes)
    by_head = lambda t: jnp.take(by_time(t), heads, axis=2)
    bias = bias.replace(
        coords=by_time(bias.coords), is_patch=by_time(bias.is_patch), slopes=bias.slopes[heads]
    )
    key_valid = None if key_valid is None else by_time(key_valid)
    return (tokens, heads), (by_head(q), by_head(k), by_head(v), bias, key_valid)


def restore_order(out: jax.Array, order) -> jax.Array:
    """Attention output [B, Np, H, Dh] computed in `skip_order`, back in the input order."""
    tokens, heads = order
    out = jnp.take_along_axis(out, jnp.argsort(tokens, axis=1)[:, :, None, None], 1)
    return jnp.take(out, jnp.argsort(heads), axis=2)


def count_skipped_tiles(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: AlibiBias,
    block_size: int = DEFAULT_BLOCK_SIZE,
    key_mask: jax.Array | None = None,
) -> tuple[int, int, int]:
    """(head tiles skipped in the forward pass, in the backward pass, all head tiles) of
    `blockwise_attention(q, k, v, bias, block_size, key_mask)` with tile skipping."""
    block, num_tiles = tile_layout(q.shape[1], block_size)
    padded = pad_tokens(q, k, v, bias, key_mask, block * num_tiles)
    _, (q, k, v, bias, key_valid) = skip_order(*padded)
    out, logsumexp, forward = _flash_forward(q, k, v, bias, key_valid, block, True)
    residuals = (q, k, v, bias, key_valid, out, logsumexp)  # as the VJP saves them
    backward = _flash_backward(block, True, residuals, jnp.ones_like(out))[3]  # what it ran
    return int(forward), int(backward), q.shape[2] * num_tiles**2


def pad_tokens(q, k, v, bias: AlibiBias | None, key_mask, padded: int):
    """(q, k, v, bias, key_valid) with `padded` - N tokens appended: zeros for q, k, v [B, N,
    H, Dh]; non-patch tokens at coordinate 0 for the bias (None stays None); and key_valid
    [B, padded] bool, False for the padding and for keys key_mask [B, N] (or None) drops."""
    num_tokens = q.shape[1]
    pad = lambda t: jnp.pad(t, ((0, 0), (0, padded - num_tokens), (0, 0), (0, 0)))
    key_mask = jnp.ones(q.shape[:2], bool) if key_mask is None else key_mask
    key_valid = jnp.pad(key_mask, ((0, 0), (0, padded - num_tokens)))
    bias = None if bias is None else bias.pad(padded)
    return pad(q), pad(k), pad(v), bias, key_valid


def tile_layout(num_tokens: int, block_size: int) -> tuple[int, int]:
    """(tile, number of tiles) for N tokens: the fewest tiles of at most block_size tokens,
    all of one size, so that fewer tokens than tiles are padding.

    Padding N up to a multiple of block_size instead would nearly double the work of N just
    above it (513 tokens in two tiles of 512: 4x the score tiles of one).
    """
    if block_size < 1:
        raise ValueError(f"attention block_size must be >= 1, got {block_size}")
    num_tiles = -(-num_tokens // block_size)
    return -(-num_tokens // num_tiles), num_tiles


def _tile(x: jax.Array, index: jax.Array, block: int, axis: int = 1) -> jax.Array:
    """Tile `index` of x along the token axis."""
    return jax.lax.dynamic_slice_in_dim(x, index * block, block, axis)


def _put_tile(
    x: jax.Array, tile: jax.Array, index: jax.Array, block: int, axis: int = 1
) -> jax.Array:
    """Writes `tile` over tile `index` of x (in place inside a loop)."""
    return jax.lax.dynamic_update_slice_in_dim(x, tile.astype(x.dtype), index * block, axis)


def _tile_scores(q_tile, k_tile, bias, key_valid, q_index, k_index, block) -> jax.Array:
    """Scaled scores plus bias of one query tile vs one key tile ([B, block, H, Dh] each):
    [B, H, block, block] float32, MASKED where the key is not valid."""
    scale = q_tile.shape[-1] ** -0.5
    scores = jnp.einsum("bqhd,bkhd->bhqk", q_tile, k_tile, preferred_element_type=jnp.float32)
    scores = scores * scale
    if bias is not None:
        scores = scores + bias.block(q_index * block, block, k_index * block, block)
    if key_valid is not None:
        valid = _tile(key_valid, k_index, block)[:, None, None, :]
        scores = jnp.where(valid, scores, MASKED)
    return scores


def _keep_heads(old: jax.Array, new: jax.Array, first: int, axis: int) -> jax.Array:
    """`old` with heads first, first + 1, ... (along `axis`) replaced by `new`."""
    if first == 0:
        return new
    return jnp.concatenate([jax.lax.slice_in_dim(old, 0, first, axis=axis), new], axis=axis)


def _f32_einsum(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.einsum(spec, a, b.astype(a.dtype), preferred_element_type=jnp.float32)


def _flash_forward(q, k, v, bias, key_valid, block, skip):
    """Returns out [B, Np, H, Dh], the log-sum-exp of every query's scores [B, H, Np] and the
    number of head tiles skipped (`count_skipped_tiles`). With `skip`, key tiles are visited
    from the diagonal on, so that the running maximum is high when the far tiles come and
    `tile_skip.underflows` can drop them."""
    batch, padded, heads, head_dim = q.shape
    num_tiles = padded // block
    if skip:
        bounds = tile_skip.tile_bounds(q, k, bias, key_valid, block)

    def query_tile(i, buffers):
        out, logsumexp, skipped = buffers
        q_tile = _tile(q, i, block)

        def update(j, carry, first=0):
            """Adds key tile j to the online softmax of heads first, first + 1, ..."""
            running_max, denominator, acc = (x[:, first:] for x in carry)
            head_bias = None if bias is None else bias.replace(slopes=bias.slopes[first:])
            k_tile, v_tile = _tile(k, j, block)[:, :, first:], _tile(v, j, block)[:, :, first:]
            scores = _tile_scores(q_tile[:, :, first:], k_tile, head_bias, key_valid, i, j, block)
            new_max = jnp.maximum(running_max, scores.max(-1))
            probs = jnp.exp(scores - new_max[..., None])
            # Rescales what was accumulated under the old maximum.
            correction = jnp.exp(running_max - new_max)
            denominator = denominator * correction + probs.sum(-1)
            pv = _f32_einsum("bhqk,bkhd->bhqd", probs.astype(v.dtype), v_tile)
            new = (new_max, denominator, acc * correction[..., None] + pv)
            return tuple(_keep_heads(old, n, first, 1) for old, n in zip(carry, new, strict=True))

        def key_tile(t, carry):
            if not skip:
                return update(t, carry)
            j = (i + t) % num_tiles
            *state, count = carry
            bound = tile_skip.score_bound(bounds, bias.slopes, i, j, block)
            first = tile_skip.skipped_heads(bound, state[0])
            branches = [functools.partial(update, first=h) for h in range(heads)]
            branches.append(lambda j, state: state)  # every head skips
            state = jax.lax.switch(first, branches, j, tuple(state))
            return *state, count + first

        init = (
            jnp.full((batch, heads, block), MASKED, jnp.float32),
            jnp.zeros((batch, heads, block), jnp.float32),
            jnp.zeros((batch, heads, block, head_dim), jnp.float32),
        )
        init = (*init, skipped) if skip else init
        running_max, denominator, acc, *count = jax.lax.fori_loop(0, num_tiles, key_tile, init)
        # A fully masked tile seen before any valid key adds junk under the running maximum
        # MASKED; the first valid key's maximum rescales it by exp(MASKED - max) = 0. Every
        # query has a valid key, so the final maximum is a real score and denominator >= 1.
        out = _put_tile(out, (acc / denominator[..., None]).swapaxes(1, 2), i, block)
        lse = running_max + jnp.log(denominator)
        return out, _put_tile(logsumexp, lse, i, block, axis=2), count[0] if skip else skipped

    buffers = (jnp.zeros_like(q), jnp.zeros((batch, heads, padded), jnp.float32), jnp.int32(0))
    return jax.lax.fori_loop(0, num_tiles, query_tile, buffers)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _flash(q, k, v, bias, key_valid, block, skip):
    return _flash_forward(q, k, v, bias, key_valid, block, skip)[0]


def _flash_fwd(q, k, v, bias, key_valid, block, skip):
    out, logsumexp, _ = _flash_forward(q, k, v, bias, key_valid, block, skip)
    return out, (q, k, v, bias, key_valid, out, logsumexp)


def _flash_bwd(block, skip, residuals, d_out):
    """The custom VJP's backward: `_flash_backward`'s cotangents, none for bias and mask."""
    dq, dk, dv, _ = _flash_backward(block, skip, residuals, d_out)
    return dq, dk, dv, None, None


def _flash_backward(block, skip, residuals, d_out):
    """FlashAttention-2 backward: tiles of the attention weights are recomputed from the
    saved log-sum-exp, so nothing quadratic in N is stored. With `skip`, tiles whose weights
    exp(score - logsumexp) all underflow contribute exactly 0 and are not computed. Returns
    dq, dk, dv (in the inputs' dtypes) and the number of head tiles skipped."""
    q, k, v, bias, key_valid, out, logsumexp = residuals
    scale = q.shape[-1] ** -0.5
    num_tiles, num_heads = q.shape[1] // block, q.shape[2]
    # delta_i = sum_j P_ij dP_ij = dO_i . O_i, the softmax Jacobian's rank-one term.
    delta = _f32_einsum("bqhd,bqhd->bhq", d_out, out)
    if skip:
        bounds = tile_skip.tile_bounds(q, k, bias, key_valid, block)

    def key_tile(j, grads):
        k_tile, v_tile = _tile(k, j, block), _tile(v, j, block)

        def query_tile(i, carry):
            if not skip:
                return update(i, carry)
            bound = tile_skip.score_bound(bounds, bias.slopes, i, j, block)
            first = tile_skip.skipped_heads(bound, _tile(logsumexp, i, block, axis=2))
            branches = [functools.partial(update, first=h) for h in range(num_heads)]
            branches.append(lambda i, carry: carry)  # every head skips
            *updated, skipped = jax.lax.switch(first, branches, i, carry)
            return *updated, skipped + first  # heads 0 .. first - 1 skipped

        def update(i, carry, first=0):
            """Adds the gradients of query tile i vs key tile j for heads first, first + 1, ..."""
            dk, dv, dq, skipped = carry
            h = slice(first, None)
            q_tile, do_tile = _tile(q, i, block)[:, :, h], _tile(d_out, i, block)[:, :, h]
            head_bias = None if bias is None else bias.replace(slopes=bias.slopes[h])
            scores = _tile_scores(q_tile, k_tile[:, :, h], head_bias, key_valid, i, j, block)
            probs = jnp.exp(scores - _tile(logsumexp, i, block, axis=2)[:, h, :, None])
            dv_h = _f32_einsum("bhqk,bqhd->bkhd", probs.astype(do_tile.dtype), do_tile)
            d_probs = _f32_einsum("bqhd,bkhd->bhqk", do_tile, v_tile[:, :, h])
            d_scores = probs * (d_probs - _tile(delta, i, block, axis=2)[:, h, :, None]) * scale
            dk_h = _f32_einsum("bhqk,bqhd->bkhd", d_scores.astype(q.dtype), q_tile)
            dq_h = _f32_einsum("bhqk,bkhd->bqhd", d_scores, k_tile[:, :, h])
            dq_tile = _tile(dq, i, block)
            dq_tile = _keep_heads(dq_tile, dq_tile[:, :, h] + dq_h, first, 2)
            dk = _keep_heads(dk, dk[:, :, h] + dk_h, first, 2)
            dv = _keep_heads(dv, dv[:, :, h] + dv_h, first, 2)
            return dk, dv, _put_tile(dq, dq_tile, i, block), skipped

        dq, dk, dv, skipped = grads
        zeros = jnp.zeros(k_tile.shape, jnp.float32)
        carry = (zeros, zeros, dq, skipped)
        dk_tile, dv_tile, dq, skipped = jax.lax.fori_loop(0, num_tiles, query_tile, carry)
        return dq, _put_tile(dk, dk_tile, j, block), _put_tile(dv, dv_tile, j, block), skipped

    grads = (*(jnp.zeros(a.shape, jnp.float32) for a in (q, k, v)), jnp.int32(0))
    dq, dk, dv, skipped = jax.lax.fori_loop(0, num_tiles, key_tile, grads)
    # The bias is a function of coordinates, which carry no gradient; the mask is boolean.
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), skipped


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_backward(residuals, d_out: jax.Array, block: int, skip: bool = False):
    """Cotangents (dq, dk, dv, None, None) of attention from its residuals (q, k, v, bias,
    key_valid, out [B, Np, H, Dh], log-sum-exp [B, H, Np]), in tiles of `block` (Np a multiple
    of it), with tile skipping if `skip` (residuals in `skip_order`): `fused_alibi`'s backward."""
    return _flash_bwd(block, skip, residuals, d_out)

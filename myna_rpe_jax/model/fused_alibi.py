"""Fused ALiBi flash attention for GPU, written in Pallas (Triton).

The ALiBi bias is computed inside the kernel, tile by tile, from each token's coordinates,
`is_patch` flag and its head's slope, the way fused kernels take segment ids: no [H, N, N] or
[N, N] array exists at any point, and each [block, block] score tile lives only in registers.
One program handles one (query tile, example, head) and runs an online softmax over the key
tiles, writing the output and each query's log-sum-exp. The backward pass is
`blockwise.flash_backward` (XLA) from those residuals, so gradients match `blockwise`'s.
With the bias's `tile_skip` on, tokens go in time order and each program starts at its
diagonal key tile and branches past every key tile whose score bound makes all its weights
exactly 0 (`tile_skip`; results unchanged); the backward pass skips as blockwise does.

On a backend other than GPU the kernel runs in Pallas interpret mode: the same program, slowly,
which is how the CPU tests compare it with `dense_attention`. ALiBi models embed through it on
a GPU by default (`config.model.attention_kernel="auto"`, `attention.resolve_kernel`): on an
H200 it ran a 10-minute track 7x faster than `blockwise` (`device_report.py`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from myna_rpe_jax.model import blockwise, tile_skip
from myna_rpe_jax.model.positional import AlibiBias

DEFAULT_BLOCK = 64


def fused_alibi_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: AlibiBias | None = None,
    key_mask: jax.Array | None = None,
    *,
    block: int = DEFAULT_BLOCK,
    interpret: bool | None = None,
) -> jax.Array:
    """Softmax attention with the ALiBi bias evaluated inside one fused kernel.

    Args:
      q, k, v: [B, N, H, Dh], Dh a power of two (a Triton tile dimension).
      bias: optional ALiBi bias over the N tokens (`tile_skip`: skip the tiles it zeroes).
      key_mask: optional [B, N] bool; False keys get zero weight (every query needs one True).
      block: tokens per query / key tile of the kernel (a power of two >= 16).
      interpret: run in Pallas interpret mode (default: when the backend is not a GPU).

    Returns:
      [B, N, H, Dh], equal to `dense_attention` up to float rounding.
    """
    batch, num_tokens, heads, head_dim = q.shape
    if not takes_head_dim(head_dim) or block < 16 or block & (block - 1):
        raise ValueError(
            f"the fused ALiBi kernel needs a power-of-two head dimension and block >= 16, got "
            f"head dimension {head_dim} and block {block}; use attention_kernel='xla'"
        )
    if bias is None:  # slope 0: the same kernel, every bias term 0
        bias = AlibiBias(
            coords=jnp.zeros((batch, num_tokens, 1)),
            is_patch=jnp.zeros((batch, num_tokens), bool),
            slopes=jnp.zeros((heads,)),
        )
    inputs, order = _kernel_inputs(q, k, v, bias, key_mask, block)
    _, backward_block = _layout(num_tokens, block)
    out = _fused(*inputs, block, backward_block, bias.tile_skip, _interpret(interpret))
    if bias.tile_skip:
        out = blockwise.restore_order(out, order)
    return out[:, :num_tokens]


def count_skipped_tiles(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: AlibiBias,
    key_mask: jax.Array | None = None,
    *,
    block: int = DEFAULT_BLOCK,
    interpret: bool | None = None,
) -> tuple[int, int]:
    """(score tiles the kernel skips, all score tiles: B x H x T^2 for T tiles of `block`) of
    `fused_alibi_attention(q, k, v, bias.replace(tile_skip=True), key_mask, block=block)`;
    one score tile is one (example, head, query tile, key tile)."""
    inputs, _ = _kernel_inputs(q, k, v, bias.replace(tile_skip=True), key_mask, block)
    skipped = _forward(*inputs, block, True, _interpret(interpret))[2]
    tiles = inputs[0].shape[1] // block
    return int(skipped[..., ::block].sum()), q.shape[2] * q.shape[0] * tiles**2


def _interpret(interpret: bool | None) -> bool:
    """Pallas interpret mode: as asked, or by default wherever the backend is not a GPU."""
    return jax.default_backend() != "gpu" if interpret is None else interpret


def _kernel_inputs(
    q, k, v, bias: AlibiBias, key_mask, block: int
) -> tuple[tuple, jax.Array | None]:
    """(q, k, v, bias, key_valid) padded to the kernel's token count and, with
    bias.tile_skip, put in `blockwise.skip_order`; and that order (None without skipping)."""
    padded, _ = _layout(q.shape[1], block)
    inputs = blockwise.pad_tokens(q, k, v, bias, key_mask, padded)
    if not bias.tile_skip:
        return inputs, None
    order, inputs = blockwise.skip_order(*inputs)
    return inputs, order


def takes_head_dim(head_dim: int) -> bool:
    """Whether the kernel takes heads of this size: a power of two (a Triton tile dimension)."""
    return head_dim > 0 and not head_dim & (head_dim - 1)


def _layout(num_tokens: int, block: int) -> tuple[int, int]:
    """(padded token count, backward tile): the padded count is a multiple of the kernel's
    block and of the backward tile, which is about `blockwise.DEFAULT_BLOCK_SIZE` so that the
    XLA backward loops over few, large tiles."""
    tile, num_tiles = blockwise.tile_layout(num_tokens, blockwise.DEFAULT_BLOCK_SIZE)
    backward_block = -(-tile // block) * block
    return backward_block * num_tiles, backward_block


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _fused(q, k, v, bias, key_valid, block, backward_block, skip, interpret):
    return _forward(q, k, v, bias, key_valid, block, skip, interpret)[0]


def _fused_fwd(q, k, v, bias, key_valid, block, backward_block, skip, interpret):
    out, logsumexp, _ = _forward(q, k, v, bias, key_valid, block, skip, interpret)
    return out, (q, k, v, bias, key_valid, out, logsumexp)


def _fused_bwd(block, backward_block, skip, interpret, residuals, d_out):
    return blockwise.flash_backward(residuals, d_out, backward_block, skip)


_fused.defvjp(_fused_fwd, _fused_bwd)


def _forward(q, k, v, bias: AlibiBias, key_valid, block: int, skip: bool, interpret: bool):
    """(out [B, Np, H, Dh], log-sum-exp [B, H, Np] float32, key tiles skipped [B, H, Np]
    int32: each query tile's count, on each of its rows; None without `skip`) of the padded
    inputs (in `blockwise.skip_order` with `skip`)."""
    batch, padded, heads, head_dim = q.shape
    num_tiles = padded // block
    axes = bias.coords.shape[-1]
    # Per-token inputs as [B, Np] rows (one per coordinate axis): Triton tiles them like
    # segment ids, and a float is_patch turns the "both are patches" test into a product.
    coords = [bias.coords[..., c].astype(jnp.float32) for c in range(axes)]
    is_patch = bias.is_patch.astype(jnp.float32)
    tokens = lambda: pl.BlockSpec((None, block), lambda i, b, h: (b, i))
    keys = lambda: pl.BlockSpec((None, padded), lambda i, b, h: (b, 0))
    head_tile = lambda: pl.BlockSpec((None, block, None, head_dim), lambda i, b, h: (b, i, h, 0))
    head_all = lambda: pl.BlockSpec((None, padded, None, head_dim), lambda i, b, h: (b, 0, h, 0))
    per_row = lambda: pl.BlockSpec((None, None, block), lambda i, b, h: (b, h, i))
    in_specs = [
        head_tile(),
        head_all(),
        head_all(),
        keys(),  # key_valid
        pl.BlockSpec((None,), lambda i, b, h: (h,)),  # this head's slope
        tokens(),  # is_patch of the query tile
        keys(),  # is_patch of every key
        *[tokens() for _ in range(axes)],
        *[keys() for _ in range(axes)],
    ]
    args = [q, k, v, key_valid.astype(jnp.int32), bias.slopes.astype(jnp.float32), is_patch,
            is_patch, *coords, *coords]  # fmt: skip
    out_specs = [head_tile(), per_row()]
    out_shape = [
        jax.ShapeDtypeStruct(q.shape, q.dtype),
        jax.ShapeDtypeStruct((batch, heads, padded), jnp.float32),
    ]
    if skip:
        bounds = tile_skip.tile_bounds(q, k, bias, key_valid, block)
        in_specs += [
            per_row(),  # |q| / sqrt(Dh) of the query tile's rows
            pl.BlockSpec((None, None, num_tiles), lambda i, b, h: (b, h, 0)),  # key tiles' max |k|
            pl.BlockSpec((None, None, num_tiles), lambda i, b, h: (b, i, 0)),  # dmin to each
        ]
        args += [bounds.q_norm, bounds.k_norm, bounds.distance]
        out_specs.append(per_row())
        out_shape.append(jax.ShapeDtypeStruct((batch, heads, padded), jnp.int32))
    kernel = functools.partial(
        _kernel, axes=axes, metric=bias.metric, block=block, scale=head_dim**-0.5, skip=skip
    )
    outputs = pl.pallas_call(
        kernel,
        grid=(num_tiles, batch, heads),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=plgpu.CompilerParams(num_warps=4, num_stages=2),
        interpret=interpret,
        name="fused_alibi_attention",
    )(*args)
    return (*outputs, None) if not skip else tuple(outputs)


def _kernel(
    q_ref, k_ref, v_ref, valid_ref, slope_ref, q_patch_ref, k_patch_ref, *refs,
    axes: int, metric: str, block: int, scale: float, skip: bool,
):  # fmt: skip
    """One query tile of one example and head: an online softmax over every key tile.

    q_ref [block, Dh]; k_ref, v_ref [Np, Dh]; valid_ref, k_patch_ref [Np]; slope_ref [];
    q_patch_ref [block]; refs: `axes` query-coordinate refs [block], `axes` key-coordinate refs
    [Np]; with `skip`, the query rows' norms [block], the key tiles' max norm [T] and their
    distances dmin to this tile [T] (`tile_skip.TileBounds`); then the outputs o_ref
    [block, Dh], lse_ref [block] and, with `skip`, skipped_ref [block].
    """
    q_coord_refs, k_coord_refs = refs[:axes], refs[axes : 2 * axes]
    if skip:
        q_norm_ref, k_norm_ref, distance_ref, o_ref, lse_ref, skipped_ref = refs[2 * axes :]
    else:
        o_ref, lse_ref = refs[2 * axes :]
    q = q_ref[...]
    slope = slope_ref[()]
    q_patch = q_patch_ref[...]
    q_coords = [r[...] for r in q_coord_refs]
    num_key_tiles = k_ref.shape[0] // block
    query_tile = pl.program_id(0)  # read here: interpret mode has no program_id inside a loop

    def update(j, carry):
        """Adds key tile j to the online softmax."""
        acc, running_max, denominator = carry
        span = pl.ds(j * block, block)
        scores = plgpu.dot(q, k_ref[span, :], trans_b=True).astype(jnp.float32) * scale
        distance = jnp.zeros((block, block), jnp.float32)
        for q_coord, k_coord_ref in zip(q_coords, k_coord_refs, strict=True):
            diff = q_coord[:, None] - k_coord_ref[span][None, :]
            distance += jnp.abs(diff) if metric == "manhattan" else diff * diff
        if metric == "euclidean":
            distance = jnp.sqrt(distance)
        both = q_patch[:, None] * k_patch_ref[span][None, :]  # 1.0 where both are patches
        scores = scores - slope * (distance * both)
        scores = jnp.where(valid_ref[span][None, :] != 0, scores, blockwise.MASKED)
        new_max = jnp.maximum(running_max, scores.max(axis=-1))
        probs = jnp.exp(scores - new_max[:, None])
        correction = jnp.exp(running_max - new_max)  # rescales what came under the old max
        denominator = denominator * correction + probs.sum(axis=-1)
        pv = plgpu.dot(probs.astype(v_ref.dtype), v_ref[span, :]).astype(jnp.float32)
        return acc * correction[:, None] + pv, new_max, denominator

    def skipping_update(t, carry):
        """Key tile j = i + t (mod T), from the diagonal on so that the running maximum is
        high when the far tiles come, unless the tile's score bound underflows every weight:
        then adding it would leave the state bit-identical (`tile_skip`)."""
        *state, count = carry
        j = (query_tile + t) % num_key_tiles
        bound = q_norm_ref[...] * k_norm_ref[j] - slope * distance_ref[j]
        underflows = jnp.max(bound - state[1]) < -tile_skip.MARGIN
        state = jax.lax.cond(underflows, lambda j, s: s, update, j, tuple(state))
        return *state, count + underflows.astype(jnp.int32)

    init = (
        jnp.zeros(q.shape, jnp.float32),
        jnp.full((block,), blockwise.MASKED, jnp.float32),
        jnp.zeros((block,), jnp.float32),
    )
    if skip:
        acc, running_max, denominator, skipped = jax.lax.fori_loop(
            0, num_key_tiles, skipping_update, (*init, jnp.int32(0))
        )
        skipped_ref[...] = jnp.full((block,), skipped, jnp.int32)
    else:
        acc, running_max, denominator = jax.lax.fori_loop(0, num_key_tiles, update, init)
    # As in blockwise: every query has a valid key, so the denominator is >= 1.
    o_ref[...] = (acc / denominator[:, None]).astype(o_ref.dtype)
    lse_ref[...] = running_max + jnp.log(denominator)

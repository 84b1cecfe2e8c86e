"""Multi-head attention with ALiBi biases evaluated from token coordinates.

The bias is not an [H, N, N] array handed around but a `positional.AlibiBias`: the coordinates
and slopes it is computed from. Dense attention (here) materialises it at once; blockwise
attention (`blockwise.py`, whole tracks) evaluates it one [block, block] tile at a time with an
online softmax, so memory grows linearly with the number of tokens, forward and backward.

`attention` picks the implementation from the token count: dense up to `blockwise_threshold`
tokens (training chunks), blockwise above it (whole tracks). On GPU, attention without an ALiBi
bias or key mask in half precision goes to the fused cuDNN kernel; ALiBi stays blockwise there
too, because cuDNN takes a bias only as a materialised [N, N] array. `kernel="pallas"` sends
long inputs to `fused_alibi` instead: one Pallas kernel that computes the ALiBi bias inside it
(interpret mode off GPU). The encoder's default, "auto" (`resolve_kernel`), takes it when an
ALiBi model embeds on a GPU: 7x faster than blockwise on a 10-minute track on an H200.

Every implementation takes an optional `key_mask` [B, N]: keys where it is False get exactly
zero weight, so a batch of tracks padded to one length attends as each track alone would.

With an ALiBi bias whose `tile_skip` is on, blockwise attention skips, per tile and head (the
fused kernel per tile and program), the work where the bias provably makes every weight
exactly 0 in float32 (`tile_skip` states the criterion): far-apart tiles of a long track, for
the steep heads. The result is unchanged (bit-identical per tile; tokens, heads and key tiles
are visited in another order, so equal to the unskipped kernel within float32 rounding). By
default (`resolve_tile_skip`) the fused kernel skips, which made it 15-32% faster on an H200,
and blockwise does not: there the branching cost more than it saved, on the GPU and, for
tracks of a few minutes, on the 2-core CPU (docs/benchmarks.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from myna_rpe_jax.model.blockwise import DEFAULT_BLOCK_SIZE, MASKED, blockwise_attention
from myna_rpe_jax.model.fused_alibi import fused_alibi_attention, takes_head_dim
from myna_rpe_jax.model.positional import AlibiBias

DEFAULT_BLOCKWISE_THRESHOLD = 1024
# What runs attention over more tokens than the threshold: "xla" (blockwise, or cuDNN without a
# bias), "pallas" (`fused_alibi`), or "auto", which the encoder resolves to one of them.
KERNELS = ("auto", "xla", "pallas")


def resolve_kernel(
    kernel: str, *, alibi: bool, head_dim: int, train: bool, backend: str | None = None
) -> str:
    """The kernel "auto" stands for; "xla" and "pallas" stay as they are.

    "auto" is "pallas" for a forward pass outside training (train=False) of a model with an
    ALiBi bias, on a GPU (`backend`, default JAX's), when the fused kernel takes the head
    dimension (`fused_alibi.takes_head_dim`); "xla" otherwise. Training keeps "xla": jit
    partitions the train step over the devices and cannot partition the kernel's custom call
    (`train.config_check`); the embedder runs each device's share itself (shard_map). On an
    H200 the kernel embedded a 10-minute track 7x faster than blockwise (docs/benchmarks.md);
    off GPU it would run in interpret mode, far slower.
    """
    if kernel not in KERNELS:
        raise ValueError(f"attention kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel != "auto":
        return kernel
    on_gpu = (backend or jax.default_backend()) == "gpu"
    fused = on_gpu and alibi and not train and takes_head_dim(head_dim)
    return "pallas" if fused else "xla"


def resolve_tile_skip(tile_skip: bool | None, kernel: str) -> bool:
    """Whether ALiBi tile skipping is on for attention run by `kernel` ("xla" or "pallas",
    resolved): as set, or when unset (None, the default) with the fused kernel only. On an
    H200 skipping made the fused kernel 32% faster on a 10-minute track and 15% at 16,385
    tokens, level below; it made blockwise 36-43% slower there, and on the 2-core CPU it
    ranges from 19% slower (1 minute) to 20% faster (10 minutes): docs/benchmarks.md."""
    return kernel == "pallas" if tile_skip is None else tile_skip


def dense_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: AlibiBias | None = None,
    key_mask: jax.Array | None = None,
) -> jax.Array:
    """Softmax attention, scores in float32. Memory: O(H N^2).

    Args:
      q, k, v: [B, N, H, Dh].
      bias: optional ALiBi bias over the N tokens.
      key_mask: optional [B, N] bool; False keys get zero weight (every query needs one True).

    Returns:
      [B, N, H, Dh].
    """
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.dense()
    if key_mask is not None:
        logits = jnp.where(key_mask[:, None, None, :], logits, MASKED)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def fused_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, implementation: str | None = "cudnn"
) -> jax.Array:
    """Attention without a bias through `jax.nn.dot_product_attention` ([B, N, H, Dh] in/out).

    "cudnn" is the fused flash kernel on NVIDIA GPUs (float16/bfloat16 only); "xla" runs
    anywhere and is what the CPU tests check the layout and scaling with.
    """
    return jax.nn.dot_product_attention(q, k, v, implementation=implementation)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: AlibiBias | None = None,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    blockwise_threshold: int = DEFAULT_BLOCKWISE_THRESHOLD,
    key_mask: jax.Array | None = None,
    kernel: str = "xla",
) -> jax.Array:
    """Attention over [B, N, H, Dh] inputs; the implementation is chosen by sequence length.

    N <= blockwise_threshold: `dense_attention` (fastest for short chunks). Longer, with
    kernel "pallas": `fused_alibi_attention`. Longer, with "xla": the fused cuDNN kernel on GPU
    when there is neither an ALiBi bias nor a key mask and q is float16/bfloat16, otherwise
    `blockwise_attention` with `block_size` tiles. All paths compute the same function;
    key_mask [B, N] (optional) zeroes the weight of False keys. "auto" is resolved before this
    (`resolve_kernel`, which needs to know whether this is training).
    """
    if kernel not in ("xla", "pallas"):
        raise ValueError(f"attention kernel must be 'xla' or 'pallas', got {kernel!r}")
    num_tokens = q.shape[1]
    if num_tokens <= blockwise_threshold:
        return dense_attention(q, k, v, bias, key_mask)
    if kernel == "pallas":
        return fused_alibi_attention(q, k, v, bias, key_mask)
    if bias is None and key_mask is None and _cudnn_applies(q):
        return fused_attention(q, k, v)
    return blockwise_attention(q, k, v, bias, block_size, key_mask)


def _cudnn_applies(q: jax.Array) -> bool:
    """Whether cuDNN flash attention takes these queries: GPU, half precision, Dh <= 128 and a
    multiple of 8."""
    head_dim = q.shape[-1]
    return (
        jax.default_backend() == "gpu"
        and q.dtype in (jnp.float16, jnp.bfloat16)
        and head_dim <= 128
        and head_dim % 8 == 0
    )

"""Dense vs blockwise attention alone, by token count: where to put `vit.blockwise_threshold`.

python benchmarks/attention_kernels.py [--variant S/16] [--batch 1] [--tokens 129,257,...]
                                       [--block-sizes 256,512] [--grad]

One attention call (2-D ALiBi over a full patch grid plus CLS, float32, the variant's heads
and head width), jitted, median of --repeats calls after one warm-up, forward only unless
--grad (then value and gradient of a sum). Prints a table with the machine: the threshold
belongs where blockwise starts to win on your hardware.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import machine  # noqa: E402  benchmarks/machine.py
import numpy as np  # noqa: E402

from myna_rpe_jax.model import attention, blockwise, patching, positional, vit  # noqa: E402


def case(batch: int, num_tokens: int, heads: int, head_dim: int):
    """q, k, v [B, N, H, Dh] and the ALiBi bias of CLS + an 8-row patch grid."""
    rng = np.random.default_rng(0)
    q, k, v = (
        jnp.asarray(rng.normal(size=(batch, num_tokens, heads, head_dim)), jnp.float32)
        for _ in range(3)
    )
    grid = patching.grid_coords(8, -(-(num_tokens - 1) // 8))[: num_tokens - 1]
    coords = np.concatenate([np.zeros((1, 2)), grid]).astype(np.float32)
    coords = jnp.asarray(np.broadcast_to(coords, (batch, num_tokens, 2)))
    is_patch = jnp.broadcast_to(jnp.arange(num_tokens) > 0, (batch, num_tokens))
    slopes = jnp.asarray(positional.alibi_slopes(heads))
    return q, k, v, positional.AlibiBias(coords, is_patch, slopes)


def median_ms(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", type=machine.variant, default="S/16")
    parser.add_argument("--batch", type=machine.at_least(1), default=1)
    parser.add_argument(
        "--tokens", type=machine.number_list(2), default=[129, 257, 513, 1025, 2049, 4097]
    )
    parser.add_argument("--block-sizes", type=machine.number_list(1), default=[256, 512])
    parser.add_argument("--repeats", type=machine.at_least(1), default=5)
    parser.add_argument("--grad", action="store_true", help="time value and gradient")
    args = parser.parse_args()

    sizes, _ = vit.parse_variant(args.variant)
    heads, head_dim = sizes["num_heads"], sizes["width"] // sizes["num_heads"]
    blocks = args.block_sizes
    kernels = {"dense": lambda q, k, v, bias: attention.dense_attention(q, k, v, bias)}
    for block in blocks:
        kernels[f"blockwise {block}"] = lambda q, k, v, bias, block=block: (
            blockwise.blockwise_attention(q, k, v, bias, block)
        )

    print(f"machine: {machine.describe()}; JAX {jax.__version__} on {jax.default_backend()}")
    what = "forward + backward" if args.grad else "forward"
    print(
        f"{args.variant} attention ({heads} heads x {head_dim}), batch {args.batch}, {what}, ms\n"
    )
    print("| tokens | " + " | ".join(kernels) + " | dense / best blockwise |")
    print("|---" * (len(kernels) + 2) + "|")
    for num_tokens in args.tokens:
        q, k, v, bias = case(args.batch, num_tokens, heads, head_dim)
        row = {}
        for name, kernel in kernels.items():
            fn = lambda q, k, v, bias, kernel=kernel: kernel(q, k, v, bias).sum()
            fn = jax.jit(jax.value_and_grad(fn, (0, 1, 2)) if args.grad else fn)
            row[name] = median_ms(fn, (q, k, v, bias), args.repeats)
        best = min(value for name, value in row.items() if name != "dense")
        cells = " | ".join(f"{value:.1f}" for value in row.values())
        print(f"| {num_tokens:,} | {cells} | {row['dense'] / best:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

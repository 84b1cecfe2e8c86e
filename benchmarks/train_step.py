"""Train-step throughput of the encoder at the paper's batch and masking.

python benchmarks/train_step.py [--variant S/16] [--batch 1024] [--posemb alibi2d] [--steps 3]

Times the real jitted, data-parallel `loop.train_step` on random spectrograms (no data
loading), after one compile step, and prints a table with the device.
"""

from __future__ import annotations

import argparse
import functools
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import machine  # noqa: E402  benchmarks/machine.py
import numpy as np  # noqa: E402

from configs import common  # noqa: E402
from myna_rpe_jax import distributed  # noqa: E402
from myna_rpe_jax.model import vit  # noqa: E402
from myna_rpe_jax.train import loop  # noqa: E402


def measure(variant: str, batch: int, posemb: str, steps: int, frames: int, dtype: str) -> dict:
    config = common.get_config(posemb=tuple(posemb.split(",")))
    config.model.update(variant=variant, dtype=dtype)
    encoder = vit.encoder_from_config(config.model)
    tx, schedule = loop.make_optimizer(config.optim, total_steps=1000)
    mesh = distributed.data_mesh()
    repl = distributed.replicated(mesh)
    rng = jax.random.key(0)
    sample = jnp.zeros((1, 128, frames))
    state = jax.jit(functools.partial(loop.init_state, encoder, tx), out_shardings=repl)(
        rng, sample
    )
    step_fn = jax.jit(
        functools.partial(loop.train_step, encoder=encoder, tx=tx, schedule=schedule),
        in_shardings=(repl, distributed.batch_sharded(mesh), repl),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )
    data = np.random.default_rng(0).uniform(-80, 0, (2, batch, 128, frames)).astype(np.float16)
    batch_arrays = distributed.global_batch_from_local(
        {"view_a": data[0], "view_b": data[1], "index": np.arange(batch, dtype=np.int32)}, mesh
    )
    start = time.perf_counter()
    state, metrics = step_fn(state, batch_arrays, rng)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step_fn(state, batch_arrays, rng)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - start) / steps
    return dict(compile_s=compile_s, step_s=step_s, examples_per_s=batch / step_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="S/16")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--posemb", default="alibi2d", help="comma-separated scheme names")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    devices = jax.devices()
    print(
        f"machine: {machine.describe()};"
        f" jax {jax.__version__} on {len(devices)} x {devices[0].device_kind}"
    )
    print(
        f"{args.variant}, posemb {args.posemb}, batch {args.batch} pairs of {args.frames}"
        f" frames, 10% patchout, {args.dtype}\n"
    )
    result = measure(args.variant, args.batch, args.posemb, args.steps, args.frames, args.dtype)
    print("| compile + first step (s) | step (s) | examples/s |")
    print("|---|---|---|")
    print(
        f"| {result['compile_s']:.1f} | {result['step_s']:.2f} | {result['examples_per_s']:.1f} |"
    )


if __name__ == "__main__":
    main()

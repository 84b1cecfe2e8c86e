"""Train-step throughput of the encoder, beside a plain Flax ViT step, against the matmul peak.

python benchmarks/train_step.py [--variant S/16] [--batch 1024] [--posemb alibi2d] [--steps 5]
                                [--frames 256] [--dtype float32] [--no-plain] [--profile]
                                [--small]

Times the real jitted, data-parallel `train.step.train_step` on random spectrograms (no data
loading), after one compile step. In the same run it measures the device's matmul peak (a
jitted fp32 `a @ a`, `machine.matmul_peak`, before and after the steps; the larger counts) and
times a plain reference step written here as plainly as possible (flax
`nn.MultiHeadDotProductAttention`, learned positions, `optax.adamw`, InfoNCE; same width,
depth, heads, MLP and token count after patchout), so that the ratio and the share of the peak
(MFU: 3 x forward model FLOPs, `machine.vit_forward_flops`, per second over the peak) are read
in one run. The two steps take turns, one step each, so a machine whose load drifts (a shared
CPU) slows both alike; the table gives each step's median and best time and MFU at both (the
peak is itself a best of several). A third row runs only the step's GEMMs at their shapes
(`build_matmuls`): its MFU is the ceiling of any step on this device; a fourth runs only our
optimizer's update (`build_optimizer`), and the step's time is split into the two and the
rest. It also prints what
XLA's cost analysis counts for all three compiled steps and how many HLO instructions of each
kind they hold, to see where ours differs.
--profile: then traces a few of our steps with the JAX profiler and prints where they went
(`step_profile.py`: device busy time against wall time, matmuls against the rest, top ops).
--small: a tiny model on a few examples (seconds; the test suite runs it).
It imports `train.step`, not `train.loop`, whose imports (clu's writers, tfds) pull in
TensorFlow, which a bare JAX GPU image lacks (device_report.py imports this module).
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import re
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import machine  # noqa: E402  benchmarks/machine.py
import numpy as np  # noqa: E402
import optax  # noqa: E402
import step_profile  # noqa: E402  benchmarks/step_profile.py

from configs import common  # noqa: E402
from myna_rpe_jax import distributed  # noqa: E402
from myna_rpe_jax.model import patching, vit  # noqa: E402
from myna_rpe_jax.train.step import init_state, make_optimizer, train_step  # noqa: E402

_HLO_KINDS = ("dot", "convolution", "gather", "scatter", "while", "convert", "fusion")


def time_alternating(runs: list[dict], steps: int) -> list[list[float]]:
    """Seconds of each of `steps` steps of every run, the runs taking turns one step at a time.

    A run is dict(fn=step(state, *args) -> (state, out), state=..., args=(...)), fn jitted or
    already compiled (`hlo_profile`); its state is threaded through (and donated). One untimed
    first call each warms it up (and compiles a jitted fn).
    """
    for run in runs:
        run["state"], out = run["fn"](run["state"], *run["args"])
        jax.block_until_ready(out)
    times = [[] for _ in runs]
    for _ in range(steps):
        for run, seconds in zip(runs, times, strict=True):
            start = time.perf_counter()
            run["state"], out = run["fn"](run["state"], *run["args"])
            jax.block_until_ready((run["state"], out))
            seconds.append(time.perf_counter() - start)
    return times


def hlo_profile(step_fn, *args) -> dict:
    """Compile time, XLA's FLOP count of the compiled step, its HLO instructions by kind, and
    the compiled step itself ("fn": timing it skips the second trace and lowering that calling
    the jitted function would pay, seconds for a B/16 step)."""
    start = time.perf_counter()
    compiled = step_fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    ops = collections.Counter(re.findall(r"= \S+ (\w[\w-]*)\(", compiled.as_text()))
    ops = {k: ops[k] for k in _HLO_KINDS}
    return dict(compile_s=compile_s, xla_flops=float(cost.get("flops", 0.0)), ops=ops, fn=compiled)


def _our_parts(variant, posemb, frames, dtype, shardings=None):
    """(encoder, optimizer, LR schedule, fresh TrainState) as `train.loop.train` makes them."""
    config = common.get_config(posemb=tuple(posemb.split(",")))
    config.model.update(variant=variant, dtype=dtype)
    encoder = vit.encoder_from_config(config.model)
    tx, schedule = make_optimizer(config.optim, total_steps=1000)
    init = jax.jit(functools.partial(init_state, encoder, tx), out_shardings=shardings)
    return encoder, tx, schedule, init(jax.random.key(0), jnp.zeros((1, 128, frames)))


def build_ours(variant, batch, posemb, frames, dtype) -> dict:
    """Our step as `train.loop.train` jits it: state replicated (donated), batch sharded."""
    mesh = distributed.data_mesh()
    repl = distributed.replicated(mesh)
    encoder, tx, schedule, state = _our_parts(variant, posemb, frames, dtype, repl)
    step_fn = jax.jit(
        functools.partial(train_step, encoder=encoder, tx=tx, schedule=schedule),
        in_shardings=(repl, distributed.batch_sharded(mesh), repl),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )
    data = np.random.default_rng(0).uniform(-80, 0, (2, batch, 128, frames)).astype(np.float16)
    batch_arrays = distributed.global_batch_from_local(
        {"view_a": data[0], "view_b": data[1], "index": np.arange(batch, dtype=np.int32)}, mesh
    )
    return dict(fn=step_fn, state=state, args=(batch_arrays, jax.random.key(0)))


def build_optimizer(variant, posemb, frames, dtype) -> dict:
    """Only our step's optimizer update (clipping, AdamW with its decay mask, the schedule)
    and its application, on gradients shaped like the parameters. It reads and writes every
    parameter and both moments: memory traffic, no model FLOPs."""
    _, tx, _, state = _our_parts(variant, posemb, frames, dtype)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), state.params)

    def step(state, grads):
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(params=params, opt_state=opt_state), ()

    return dict(fn=jax.jit(step, donate_argnums=0), state=state, args=(grads,), flops=0)


def measure_ours(variant, batch, posemb, steps, frames, dtype) -> dict:
    """Our step alone (`device_report.py`): compile time, XLA's counts, the mean step time,
    and "run", the compiled step ready to run again (to profile it without compiling again)."""
    run = build_ours(variant, batch, posemb, frames, dtype)
    counts = hlo_profile(run["fn"], run["state"], *run["args"])
    run["fn"] = counts.pop("fn")
    (times,) = time_alternating([run], steps)
    return dict(step_s=float(np.mean(times)), run=run, **counts)


# ---- the plain reference step: no tuning, written as a first ViT would be ------------------


class PlainViT(nn.Module):
    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens):  # [B, K, P] kept patches -> CLS [B, D]
        x = nn.Dense(self.width, dtype=self.dtype)(tokens)
        x = x + self.param("pos", nn.initializers.normal(0.02), (1, *x.shape[1:]))
        cls = jnp.broadcast_to(
            self.param("cls", nn.initializers.zeros, (1, 1, self.width)), x[:, :1].shape
        )
        x = jnp.concatenate([cls, x], axis=1)
        for _ in range(self.depth):
            y = nn.LayerNorm(dtype=self.dtype)(x)
            x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=self.dtype)(y)
            y = nn.LayerNorm(dtype=self.dtype)(x)
            y = nn.Dense(self.mlp_dim, dtype=self.dtype)(y)
            x = x + nn.Dense(self.width, dtype=self.dtype)(nn.gelu(y, approximate=False))
        return nn.LayerNorm(dtype=self.dtype)(x)[:, 0].astype(jnp.float32)


def build_plain(variant, batch, frames, dtype, keep) -> dict:
    sizes, patch = vit.parse_variant(variant)
    model = PlainViT(**sizes, dtype=jnp.dtype(dtype))
    num_patches = (128 // patch) * (frames // patch)
    num_keep = patching.num_kept(num_patches, keep)
    tx = optax.adamw(2e-4, weight_decay=1e-4)

    def embed(params, views, rng):  # views [2B, F, T]: patchify, keep a random subset
        tokens, _ = patching.patchify(views.astype(jnp.float32), patch)
        kept = jax.random.permutation(rng, num_patches)[:num_keep]
        return model.apply(params, tokens[:, kept])

    def step(state, views, rng):
        params, opt_state = state

        def loss_fn(params):
            z = embed(params, views, rng)
            z = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
            z_a, z_b = z[0::2], z[1::2]
            logits = z_a @ z_b.T / 0.1
            labels = jnp.arange(z_a.shape[0])
            ce = optax.softmax_cross_entropy_with_integer_labels
            return (ce(logits, labels).mean() + ce(logits.T, labels).mean()) / 2

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    views = jnp.asarray(
        np.random.default_rng(0).uniform(-80, 0, (2 * batch, 128, frames)), jnp.float16
    )
    rng = jax.random.key(0)
    params = model.init(rng, jnp.zeros((1, num_keep, patch * patch)))
    state = (params, tx.init(params))
    return dict(fn=jax.jit(step, donate_argnums=0), state=state, args=(views, rng))


# ---- the step's matmuls alone: the ceiling of MFU at these shapes ---------------------------


def _dense_shapes(variant: str) -> list[tuple[int, int]]:
    """(in, out) of every dense layer a step multiplies by, patch embedding first."""
    sizes, patch = vit.parse_variant(variant)
    width, mlp = sizes["width"], sizes["mlp_dim"]
    layer = [(width, 3 * width), (width, width), (width, mlp), (mlp, width)]  # qkv, out, MLP
    return [(patch * patch, width), *layer * sizes["depth"]]


def _tokens_per_view(variant: str, frames: int, keep: float) -> int:
    """Tokens of one training view: the patches patchout keeps, plus CLS."""
    _, patch = vit.parse_variant(variant)
    return patching.num_kept((128 // patch) * (frames // patch), keep) + 1


def build_matmuls(variant, batch, frames, dtype, keep) -> dict:
    """Only the GEMMs of one step, at its shapes: per dense layer the forward Y = X W and the
    backward dX = dY W^T and dW = X^T dY (the patch embedding needs no dX). Nothing else: no
    attention, norm, activation or optimiser. Its MFU is the most any step could reach."""
    rows, dt = 2 * batch * _tokens_per_view(variant, frames, keep), jnp.dtype(dtype)
    shapes = _dense_shapes(variant)
    dims = sorted({d for shape in shapes for d in shape})
    keys = iter(jax.random.split(jax.random.key(0), len(shapes) + len(dims)))
    normal = lambda *shape: jax.random.normal(next(keys), shape, dt) * 0.05  # noqa: E731
    weights = tuple(normal(d_in, d_out) for d_in, d_out in shapes)
    inputs = {d: normal(rows, d) for d in dims}

    def step(weights, inputs):
        out = []
        for i, ((d_in, _), w) in enumerate(zip(shapes, weights, strict=True)):
            x = inputs[d_in]
            y = x @ w  # the layer's own output stands in for dY, so no two layers share a dot
            out.append(x.T @ y)  # dW
            if i:
                out.append(y @ w.T)  # dX
        return weights, out

    flops = sum(
        2 * rows * d_in * d_out * (2 if i == 0 else 3) for i, (d_in, d_out) in enumerate(shapes)
    )
    return dict(fn=jax.jit(step, donate_argnums=0), state=weights, args=(inputs,), flops=flops)


def step_flops(variant: str, batch: int, frames: int, keep: float) -> int:
    """Model FLOPs of one train step: 3 x the forward of 2 x batch views of kept + CLS tokens."""
    sizes, patch = vit.parse_variant(variant)
    tokens = _tokens_per_view(variant, frames, keep)
    forward = machine.vit_forward_flops(
        tokens, sizes["width"], sizes["depth"], sizes["mlp_dim"], patch
    )
    return 3 * 2 * batch * forward


def table(rows: list[dict], flops: int, batch: int, peak: float) -> str:
    """One line per step: compile time, median and best step time, and MFU at each."""
    lines = [
        "| step | compile (s) | step (s) median / best | examples/s | model GFLOP"
        " | MFU median / best | XLA GFLOP"
        " | HLO dot / gather / scatter / while / convert / fusion |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ops = " / ".join(str(row["ops"][k]) for k in _HLO_KINDS if k != "convolution")
        median, best = float(np.median(row["times"])), min(row["times"])
        row_flops = row.get("flops", flops)  # the matmuls and optimizer rows count their own
        mfu = lambda seconds, f=row_flops: f"{100 * f / seconds / peak:.0f}%"  # noqa: E731
        shares = f"{mfu(median)} / {mfu(best)}" if row_flops else "-"
        model = f"{row_flops / 1e9:.4g}" if row_flops else "-"
        lines.append(
            f"| {row['name']} | {row['compile_s']:.1f} | {median:.3f} / {best:.3f}"
            f" | {batch / median:.1f} | {model} | {shares}"
            f" | {row['xla_flops'] / 1e9:.4g} | {ops} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="S/16")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--posemb", default="alibi2d", help="comma-separated scheme names")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each")
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--no-plain", action="store_true", help="do not time the plain step")
    parser.add_argument("--profile", action="store_true", help="profile our step afterwards")
    parser.add_argument("--small", action="store_true", help="tiny model, batch 4: seconds")
    args = parser.parse_args(argv)
    if args.small:
        args.variant, args.batch, args.frames, args.steps = "tiny", 4, 96, 2
    devices = jax.devices()
    print(
        f"machine: {machine.describe()};"
        f" jax {jax.__version__} on {len(devices)} x {devices[0].device_kind}"
    )
    keep = common.get_config().model.patchout_keep
    print(
        f"{args.variant}, posemb {args.posemb}, batch {args.batch} pairs of {args.frames}"
        f" frames, {100 * (1 - keep):.0f}% patchout, {args.dtype}"
    )
    peak_size = 256 if args.small else 2048
    peak_before = machine.matmul_peak(peak_size, args.dtype)
    runs = [
        dict(
            name="ours",
            **build_ours(args.variant, args.batch, args.posemb, args.frames, args.dtype),
        )
    ]
    if not args.no_plain:
        runs.append(
            dict(
                name="plain", **build_plain(args.variant, args.batch, args.frames, args.dtype, keep)
            )
        )
    runs.append(
        dict(
            name="its matmuls alone",
            **build_matmuls(args.variant, args.batch, args.frames, args.dtype, keep),
        )
    )
    runs.append(
        dict(
            name="its optimizer update alone",
            **build_optimizer(args.variant, args.posemb, args.frames, args.dtype),
        )
    )
    for run in runs:
        run.update(hlo_profile(run["fn"], run["state"], *run["args"]))
    for run, times in zip(runs, time_alternating(runs, args.steps), strict=True):
        run["times"] = times
    # The peak before and after the steps; MFU is over the larger (a load may come and go).
    peak_after = machine.matmul_peak(peak_size, args.dtype)
    peak = max(peak_before, peak_after)
    print(
        f"measured {args.dtype} matmul peak: {peak / 1e9:.0f} GFLOP/s (before the steps"
        f" {peak_before / 1e9:.0f}, after {peak_after / 1e9:.0f})\n"
    )
    print(table(runs, step_flops(args.variant, args.batch, args.frames, keep), args.batch, peak))
    if not args.no_plain:
        ratio = lambda stat: stat(runs[0]["times"]) / stat(runs[1]["times"])  # noqa: E731
        print(f"\nours / plain step time: {ratio(np.median):.2f} (median), {ratio(min):.2f} (best)")
    median = {run["name"]: float(np.median(run["times"])) for run in runs}
    rest = median["ours"] - median["its matmuls alone"] - median["its optimizer update alone"]
    print(
        "\n'its matmuls alone' runs only the step's GEMMs at its shapes (forward and both"
        " backward products of every dense layer): its MFU is the ceiling any step reaches"
        " here. 'its optimizer update alone' is our clipping + AdamW update and its"
        f" application. Ours (median) = matmuls {median['its matmuls alone']:.3f} s + optimizer"
        f" {median['its optimizer update alone']:.3f} s + {rest:.3f} s of everything else"
        " (attention softmax and its small per-head products, GELU, LayerNorm, patchout"
        " gathers, the loss, dispatch)."
    )
    if args.profile:
        profile = step_profile.profile_steps(runs[0], min(args.steps, 3))
        print(f"\nOur step under the JAX profiler:\n\n{step_profile.table(profile)}")


if __name__ == "__main__":
    main()

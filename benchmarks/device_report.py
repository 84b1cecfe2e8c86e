"""One report of this device for the README: train step, embedding, a long track, attention.

python benchmarks/device_report.py            # on a GPU: under 8 minutes on one H100/A100
python benchmarks/device_report.py --small    # any machine, seconds: every section, tiny sizes
python benchmarks/device_report.py --sections track,attention   # only these (printed as done)

Prints a markdown table per section, headed by the device and its measured matmul peak (a
jitted n x n `a @ a` in each dtype, `machine.matmul_peak`; MFU is against it):

- train step (`benchmarks/train_step.py`'s real step): S/16 and B/16, bfloat16 and float32,
  batch 1024 pairs of 256 frames, 10% patchout: compile s, step s, examples/s, MFU; then
  where the S/16 bfloat16 step's time went under the JAX profiler (`step_profile.py`: the
  device's busy share of the step, kernels per step, matmuls against the rest, top kernels);
- embedding throughput: 30 s clips per second through `embed.embedder.Embedder` (random
  parameters), full and chunk mode;
- one 10-minute track in one pass (S/16, 2-D ALiBi), blockwise and with the fused Pallas
  kernel (`model.attention_kernel`), each with and without tile skipping: time, XLA's
  temporary buffers and peak device memory (`device.memory_stats()`, where the backend
  reports it);
- attention kernels by token count (dense, blockwise and the fused Pallas ALiBi kernel, the
  last two with and without tile skipping; off GPU the Pallas kernel runs in interpret mode,
  so its CPU times mean nothing);
- GPU-only tests (`pytest -m gpu`: the compiled Pallas kernel, cuDNN attention); they skip
  where there is no GPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # configs/ at the repo root

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import machine  # noqa: E402  benchmarks/machine.py
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import step_profile  # noqa: E402  benchmarks/step_profile.py
import train_step  # noqa: E402  benchmarks/train_step.py

from myna_rpe_jax.embed.embedder import Embedder  # noqa: E402
from myna_rpe_jax.model import (  # noqa: E402
    attention,
    blockwise,
    fused_alibi,
    patching,
    positional,
    vit,
)

FULL = dict(
    variants=("S/16", "B/16"), batch=1024, frames=256, steps=3, clips=64, track_minutes=10.0,
    tokens=(257, 1025, 4097, 16385), peak_n=8192, threshold=1024,
)  # fmt: skip
SMALL = dict(
    variants=("tiny",), batch=4, frames=96, steps=1, clips=2, track_minutes=0.1,
    tokens=(65, 257), peak_n=256, threshold=64,
)  # fmt: skip
DTYPES = ("bfloat16", "float32")


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _progress(text: str) -> None:
    """One finished row on stderr at once: a report cut by a time limit still shows it."""
    print(f"  {text}", file=sys.stderr, flush=True)


def _best_seconds(fn, repeats: int = 3) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


FAILED: list[str] = []  # what `_or_failure` caught; the report then exits 1


def _or_failure(fn, what: str):
    """fn(), or None after printing its traceback to stderr: on a borrowed GPU one kernel that
    does not compile must not cost the rest of the report."""
    try:
        return fn()
    except Exception:  # noqa: BLE001  (reported, and the table says "failed")
        print(f"{what} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        FAILED.append(what)
        return None


def train_section(sizes: dict, peaks: dict) -> str:
    keep = 0.1
    rows, profiled = [], None
    for variant in sizes["variants"]:
        flops = train_step.step_flops(variant, sizes["batch"], sizes["frames"], keep)
        for dtype in DTYPES:
            r = train_step.measure_ours(
                variant, sizes["batch"], "alibi2d", sizes["steps"], sizes["frames"], dtype
            )
            if (variant, dtype) == (sizes["variants"][0], DTYPES[0]):
                profiled = _or_failure(
                    lambda r=r: step_profile.profile_steps(r["run"], sizes["steps"]), "profile"
                )
            del r["run"]  # its state and executable: device memory the next model needs
            mfu = 100 * flops / r["step_s"] / peaks[dtype]
            rows.append(
                [variant, dtype, f"{r['compile_s']:.1f}", f"{r['step_s']:.3f}"]
                + [f"{sizes['batch'] / r['step_s']:.0f}", f"{mfu:.0f}%"]
            )
            _progress(f"train {variant} {dtype}: {r['step_s']:.3f} s/step")
    header = ["model", "dtype", "compile s", "step s", "examples/s", "MFU"]
    title = f"Train step: batch {sizes['batch']} pairs of {sizes['frames']} frames, 10% patchout"
    where = f"{sizes['variants'][0]} {DTYPES[0]} step under the JAX profiler"
    profile = step_profile.table(profiled) if profiled else "failed (stderr)"
    return f"{title}\n\n{_markdown(header, rows)}\n\n{where}:\n\n{profile}"


def _random_encoder(variant: str, **fields):
    encoder = vit.encoder_from_config(ml_collections.ConfigDict(dict(variant=variant, **fields)))
    spec = jnp.zeros((1, encoder.n_mels, 256))
    return encoder, jax.jit(lambda s: encoder.init(jax.random.key(0), s, train=False))(spec)


def embed_section(sizes: dict) -> str:
    rows = []
    clip_frames = 3000  # 30 s at 100 frames/s
    rng = np.random.default_rng(0)
    for variant in sizes["variants"]:
        encoder, params = _random_encoder(variant)
        embedder = Embedder(encoder, params["params"], chunk_frames=256)
        mels = [
            rng.uniform(-80, 0, (encoder.n_mels, clip_frames)).astype(np.float16)
            for _ in range(sizes["clips"])
        ]
        for mode in ("full", "chunks"):
            # The untimed first call compiles each batch shape (seconds each on a GPU).
            seconds = _best_seconds(
                lambda e=embedder, m=mels, mode=mode: e.embed(m, mode), repeats=1
            )
            rows.append([variant, mode, f"{sizes['clips'] / seconds:.1f}"])
            _progress(f"embed {variant} {mode}: {sizes['clips'] / seconds:.1f} clips/s")
    header = ["model", "mode", "30 s clips/s"]
    return f"Embedding, {sizes['clips']} clips of 30 s, random parameters\n\n" + _markdown(
        header, rows
    )


def track_section(sizes: dict) -> str:
    """One track in one pass with each long-input attention kernel (`model.attention_kernel`).

    The device's peak memory is the process's high-water mark, so each row also gives XLA's
    own count of the executable's temporary buffers, which belongs to that row alone."""
    variant = sizes["variants"][0]
    frames = round(sizes["track_minutes"] * 60 * 100)
    rows = []
    for kernel in attention.KERNELS:
        for skip in (False, True):
            name = kernel + (" + tile skip" if skip else "")
            row = _or_failure(
                lambda k=kernel, s=skip: _track_row(variant, k, s, frames, sizes), name
            )
            rows.append(row or [variant, name, "-", "-", "failed (stderr)", "-", "-", "-"])
            _progress(f"track {name}: {row[5] if row else 'failed'} s")
    header = ["model", "kernel", "audio", "tokens", "compile s", "time s", "XLA temp GB"]
    header.append("process peak device GB")
    title = "One track in one pass (2-D ALiBi; xla: blockwise, pallas: fused_alibi)"
    return f"{title}\n\n" + _markdown(header, rows)


def _track_row(variant: str, kernel: str, skip: bool, frames: int, sizes: dict) -> list[str]:
    encoder, params = _random_encoder(
        variant,
        attention_kernel=kernel,
        alibi_tile_skip=skip,
        blockwise_threshold=sizes["threshold"],
    )
    spec = jnp.asarray(np.random.default_rng(0).uniform(-80, 0, (1, encoder.n_mels, frames)))
    fn = jax.jit(lambda p, s: encoder.apply(p, s, train=False)[0])
    start = time.perf_counter()
    compiled = fn.lower(params, spec).compile()
    compile_s = time.perf_counter() - start
    seconds = _best_seconds(lambda: compiled(params, spec), repeats=1)
    temp = compiled.memory_analysis()
    temp = f"{temp.temp_size_in_bytes / 1024**3:.2f}" if temp else "n/a"
    peak = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    peak = f"{peak / 1024**3:.2f}" if peak else "n/a (backend does not report)"
    tokens = (encoder.n_mels // 16) * (frames // 16) + 1
    minutes = f"{sizes['track_minutes']:g} min"
    return [
        variant,
        kernel + (" + tile skip" if skip else ""),
        minutes,
        f"{tokens:,}",
        f"{compile_s:.1f}",
        f"{seconds:.2f}",
        temp,
        peak,
    ]


def attention_section(sizes: dict) -> str:
    model_sizes, _ = vit.parse_variant(sizes["variants"][0])
    heads, head_dim = model_sizes["num_heads"], model_sizes["width"] // model_sizes["num_heads"]
    kernels = {
        "dense": lambda q, k, v, b: attention.dense_attention(q, k, v, b),
        "blockwise": lambda q, k, v, b: blockwise.blockwise_attention(q, k, v, b),
        "blockwise, tile skip": lambda q, k, v, b: blockwise.blockwise_attention(
            q, k, v, b.replace(tile_skip=True)
        ),
        "fused ALiBi (Pallas)": fused_alibi.fused_alibi_attention,
        "fused ALiBi, tile skip": lambda q, k, v, b: fused_alibi.fused_alibi_attention(
            q, k, v, b.replace(tile_skip=True)
        ),
    }
    rows = []
    for num_tokens in sizes["tokens"]:
        rng = np.random.default_rng(0)
        q, k, v = (
            jnp.asarray(rng.normal(size=(1, num_tokens, heads, head_dim)), jnp.float32)
            for _ in range(3)
        )
        grid = patching.grid_coords(8, -(-(num_tokens - 1) // 8))[: num_tokens - 1]
        coords = jnp.asarray(np.concatenate([np.zeros((1, 2)), grid])[None], jnp.float32)
        is_patch = (jnp.arange(num_tokens) > 0)[None]
        bias = positional.AlibiBias(coords, is_patch, jnp.asarray(positional.alibi_slopes(heads)))
        row = [f"{num_tokens:,}"]
        for name, kernel in kernels.items():
            if name == "dense" and num_tokens > 8192:
                row.append("-")
                continue
            fn = jax.jit(kernel)
            time_it = lambda fn=fn, args=(q, k, v, bias): _best_seconds(lambda: fn(*args))
            seconds = _or_failure(time_it, f"{name} at {num_tokens} tokens")
            row.append("failed (stderr)" if seconds is None else f"{1e3 * seconds:.1f}")
        rows.append(row)
    title = f"Attention forward, {heads} heads x {head_dim}, float32, ms"
    return f"{title}\n\n" + _markdown(["tokens", *kernels], rows)


def gpu_test_files(root: Path) -> list[str]:
    """The test files holding GPU-only tests, relative to root. Collecting all of tests/
    would import every test's dependencies (TensorFlow, tfds, spotipy), which a bare JAX GPU
    image does not have (docs/benchmarks.md, "On a GPU machine without PyPI")."""
    found = (root / "tests").rglob("test_*.py")
    return sorted(str(p.relative_to(root)) for p in found if "mark.gpu" in p.read_text("utf-8"))


def gpu_tests_env(environ: dict) -> dict:
    """The child's environment. tests/conftest.py pins JAX to the CPU unless JAX_PLATFORMS is
    set, so every GPU test would skip on the GPU: an empty value lets JAX choose. This process
    already holds JAX's preallocated 75% of the GPU, so the child allocates as it goes."""
    platforms = environ.get("JAX_PLATFORMS", "")
    return dict(environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", JAX_PLATFORMS=platforms)


def gpu_tests_failure(returncode: int, summary: str, backend: str) -> str | None:
    """What went wrong in the GPU tests' run (pytest's exit code and last line), or None. On a
    GPU a skip is a failure too: it means the tests did not see the device."""
    if returncode != 0:
        return f"pytest exited {returncode}"
    if backend == "gpu" and "skipped" in summary:
        return "GPU-only tests skipped on a GPU"
    return None


def gpu_tests_section(sizes: dict) -> str:
    """Runs `pytest -m gpu` over the GPU-only test files in a fresh process."""
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "gpu", "-p", "no:cacheprovider"]
    command += gpu_test_files(root)
    done = subprocess.run(
        command, cwd=root, env=gpu_tests_env(os.environ), capture_output=True, text=True
    )
    lines = done.stdout.strip().splitlines() or ["(no output)"]
    failure = gpu_tests_failure(done.returncode, lines[-1], jax.default_backend())
    if failure:
        FAILED.append(failure)
    shown = "\n".join(lines[-40:]) if failure else lines[-1]
    return f"GPU-only tests (`pytest -m gpu`, exit {done.returncode})\n\n```\n{shown}\n```"


SECTIONS = {
    "train": train_section,
    "embed": embed_section,
    "track": track_section,
    "attention": attention_section,
    "tests": gpu_tests_section,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes: every section, seconds")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (to rerun what a time limit cut)",
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {','.join(SECTIONS)}")
    sizes = SMALL if args.small else FULL
    device = jax.devices()[0]
    peaks = {dtype: machine.matmul_peak(sizes["peak_n"], dtype) for dtype in DTYPES}
    peak_text = ", ".join(f"{d} {p / 1e12:.2f} TFLOP/s" for d, p in peaks.items())
    print(f"# Device report: {device.device_kind} ({jax.default_backend()})\n")
    print(f"{time.strftime('%Y-%m-%d')}; host {machine.describe()}; JAX {jax.__version__};")
    print(f"measured matmul peak (n = {sizes['peak_n']}): {peak_text}\n")
    for section in (SECTIONS[name] for name in chosen):
        start = time.perf_counter()
        text = section(sizes, peaks) if section is train_section else section(sizes)
        print(f"{text}\n\n({section.__name__}: {time.perf_counter() - start:.0f} s)\n", flush=True)
    if FAILED:
        sys.exit(f"failed (tracebacks above, on stderr): {', '.join(FAILED)}")


if __name__ == "__main__":
    main()

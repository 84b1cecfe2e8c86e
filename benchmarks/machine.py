"""The machine line every benchmark prints, so figures are never quoted without it."""

import argparse
import os
import platform


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def simd() -> str:
    """The widest x86 vector extension the CPU reports ("AVX-512", "AVX2"), or "" if none is
    known: hosts sold under one name ("AMD EPYC") differ in it by 3x in matmul peak."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        return ""
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")):
        if flag in flags:
            return name
    return ""


def describe() -> str:
    """E.g. "AMD EPYC 7B13 (AVX-512), 2 cores, 24 GB RAM"."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    vector = f" ({simd()})" if simd() else ""
    return f"{cpu_name()}{vector}, {os.cpu_count()} cores, {memory:.0f} GB RAM"


def matmul_peak(n: int = 2048, dtype: str = "float32", repeats: int = 5) -> float:
    """The device's measured matmul rate, FLOP/s: best of `repeats` jitted n x n `a @ a`
    (2 n^3 FLOPs each), after a warm-up call. Quoted beside every MFU figure."""
    import time

    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    square = jax.jit(lambda x: x @ x)
    jax.block_until_ready(square(a))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(square(a))
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def vit_forward_flops(tokens: int, width: int, depth: int, mlp_dim: int, patch: int = 16) -> int:
    """Model FLOPs of one ViT forward pass over `tokens` tokens (multiply-add = 2 FLOPs): patch
    embedding, and per layer the q/k/v/out projections (8 N D^2), the MLP (4 N D M) and the
    attention scores and weighted sum (4 N^2 D). Softmax, norms and biases are left out."""
    per_layer = 8 * tokens * width**2 + 4 * tokens * width * mlp_dim + 4 * tokens**2 * width
    return 2 * tokens * patch * patch * width + depth * per_layer


# argparse types of the benchmarks' flags: a bad value is a usage error, not a traceback.


def at_least(low: float, kind: type = int):
    """An argparse type: a `kind` number >= `low` (NaN refused)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value >= low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value

    return parse


def number_list(low: float, kind: type = int):
    """An argparse type: comma-separated `kind` numbers, each >= `low`, at least one."""
    one = at_least(low, kind)

    def parse(text: str) -> list:
        values = [one(part) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError("lists no value")
        return values

    return parse


def variant(text: str) -> str:
    """An argparse type: a ViT variant name the model knows (`vit.parse_variant`)."""
    from myna_rpe_jax.model import vit

    try:
        vit.parse_variant(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text

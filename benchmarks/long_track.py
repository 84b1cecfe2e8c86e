"""Time and peak memory of embedding a whole track: dense vs blockwise attention vs chunking.

For each model and track length (at the mel frame rate, 100 frames/s by default) it embeds
one random log-mel spectrogram of that length with an untrained encoder (the timing does not
depend on the weights) three ways:

- dense: the whole track in one pass with dense attention ([H, N, N] scores per layer);
- blockwise: the whole track in one pass with blockwise (flash) attention, linear memory,
  skipping the tiles ALiBi makes exactly zero (`model.alibi_tile_skip=True`);
- noskip: the same without tile skipping (the default; the result is the same);
- chunks: non-overlapping training-length chunks (256 frames), 64 per batch, CLS embeddings
  averaged: the chunk-and-average baseline, cut by the product's rule (`data.chunks.chunk_mel`,
  as `--mode chunks` embeds: the tail shorter than a chunk is dropped).

Every measurement runs in a fresh subprocess, so peak RSS (`getrusage`, the whole process:
JAX runtime, parameters, input and activations) does not carry over. Time is one compiled
call (the best of up to 3 for short ones), compilation not included, as wall seconds and
CPU seconds of all threads (less sensitive to other load on the machine). Dense runs that would
not fit are compiled but not run; XLA's buffer assignment gives the memory they need. Runs
whose time, extrapolated from the previous length, exceeds --max-run-seconds are only
compiled, to report that memory ("XLA temp", GB, on top of the ~0.3 GB runtime and the
parameters). --compile-only does that for every run: a quick check of what fits.

Every one-pass cell also gets its share of the machine's matmul peak ("% peak": the model
FLOPs of the projections, MLP and attention, `machine.vit_forward_flops`, over the wall time,
against a jitted fp32 `a @ a` measured at the start of the same run). --small runs a tiny
model on a few seconds of audio (the test suite runs it).

    python benchmarks/long_track.py                               # tiny and S/16, all lengths
    python benchmarks/long_track.py --variants tiny --minutes 0.5 1 --methods blockwise chunks
    python benchmarks/long_track.py --compile-only                # memory needs only, ~3 min
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import machine  # benchmarks/machine.py

METHODS = ("dense", "blockwise", "noskip", "chunks")
ONE_PASS = ("dense", "blockwise", "noskip")
_GB = 1024**3


# ---- worker: one measurement in its own process ----------------------------------------------


def _encoder(variant: str, posemb: str, method: str, block_size: int, dtype: str):
    import ml_collections

    from myna_rpe_jax.model import vit

    # The blockwise column is blockwise at every length; `attention` itself would stay dense
    # up to its threshold (1024 tokens).
    threshold = {"dense": sys.maxsize, "blockwise": 0, "noskip": 0, "chunks": sys.maxsize}[method]
    cfg = dict(variant=variant, posemb=(posemb,), dtype=dtype, attention_block_size=block_size)
    cfg["alibi_tile_skip"] = method != "noskip"
    return vit.encoder_from_config(
        ml_collections.ConfigDict(dict(cfg, blockwise_threshold=threshold))
    )


def _embed_fn(encoder, method: str, chunk_batch: int):
    """spec [1, F, T] -> embedding [D]; for chunks, chunks [K, F, chunk_frames] -> [D]."""
    import jax

    apply = lambda params, spec: encoder.apply(params, spec, train=False)[0]
    if method != "chunks":
        return lambda params, spec: apply(params, spec)[0]

    def chunked(params, chunks):
        embed = lambda batch: apply(params, batch)
        per_chunk = jax.lax.map(lambda c: embed(c[None])[0], chunks, batch_size=chunk_batch)
        return per_chunk.mean(0)

    return chunked


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(job: dict) -> dict:
    import jax
    import numpy as np

    encoder = _encoder(job["variant"], job["posemb"], job["method"], job["block"], job["dtype"])
    frames = job["frames"]
    from myna_rpe_jax.data.chunks import chunk_mel

    spec = np.random.default_rng(0).uniform(-80.0, 0.0, (1, encoder.n_mels, frames))
    if job["method"] == "chunks":  # the product's chunks (a view: cutting costs nothing)
        spec = chunk_mel(spec[0], job["chunk_frames"])
    spec = jax.numpy.asarray(spec, jax.numpy.float32)
    params = jax.jit(lambda s: encoder.init(jax.random.key(0), s, train=False))(spec[:1, :, :256])
    fn = jax.jit(_embed_fn(encoder, job["method"], job["chunk_batch"]))
    start = time.perf_counter()
    compiled = fn.lower(params, spec).compile()
    result = {"compile_s": time.perf_counter() - start}
    needs = compiled.memory_analysis().temp_size_in_bytes
    result["temp_gb"] = needs / _GB
    if job["method"] == "dense" and needs > job["max_dense_gb"] * _GB:
        return dict(result, skipped=f"n/a (needs {needs / _GB:.1f} GB)")
    if job["skip"]:
        return dict(result, skipped=job["skip"])
    times = []  # (wall, CPU) seconds; CPU time of all threads is less sensitive to other load
    while len(times) < 3 and sum(wall for wall, _ in times) < 2.0:
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        jax.block_until_ready(compiled(params, spec))
        times.append((time.perf_counter() - start, _cpu_seconds() - cpu_start))
    result["time_s"], result["cpu_s"] = min(times)
    result["rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / _GB
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        result["device_gb"] = stats["peak_bytes_in_use"] / _GB
    return result


# ---- driver ------------------------------------------------------------------------------------


def _tokens(frames: int, n_mels: int = 128, patch: int = 16) -> int:
    return (n_mels // patch) * (frames // patch) + 1


def _run_job(job: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(job)],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"skipped": f"failed (exit {proc.returncode}): {' | '.join(tail)}"}
    return json.loads(lines[-1].removeprefix("RESULT "))


def _estimate(previous: tuple[int, float] | None, tokens: int, method: str) -> float | None:
    """Seconds at `tokens`, extrapolated from (tokens, seconds) of the previous length."""
    if previous is None:
        return None
    power = 1 if method == "chunks" else 2  # full attention is quadratic in tokens
    return previous[1] * (tokens / previous[0]) ** power


def _cell(result: dict | None) -> tuple[str, str]:
    if result is None:
        return "-", "-"
    if "skipped" in result:
        needs = f"(XLA temp {result['temp_gb']:.2f})" if "temp_gb" in result else "-"
        return result["skipped"], needs
    memory = f"{result['rss_gb']:.2f}"
    if "device_gb" in result:
        memory += f" (device {result['device_gb']:.2f})"
    return f"{result['time_s']:.2f} ({result['cpu_s']:.1f})", memory


def _share_of_peak(result: dict | None, flops: float, peak: float) -> str:
    if not result or "time_s" not in result:
        return "-"
    return f"{100 * flops / result['time_s'] / peak:.0f}%"


def _table(rows: list[dict], methods: list[str], compile_only: bool, peak: float) -> str:
    header = ["model", "audio", "tokens"]
    for method in methods:
        header += [f"{method} XLA temp GB"] if compile_only else [f"{method} s (CPU s)"]
        header += [] if compile_only else [f"{method} peak RSS GB"]
        header += [f"{method} % peak"] if method in ONE_PASS and not compile_only else []
    compare = {"blockwise", "chunks"} <= set(methods) and not compile_only
    if compare:
        header.append("blockwise / chunks (CPU)")
    saving = {"blockwise", "noskip"} <= set(methods) and not compile_only
    if saving:
        header.append("tile skipping saves")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["variant"], f"{row['minutes']:g} min", f"{row['tokens']:,}"]
        for method in methods:
            if compile_only:
                cells.append(f"{row[method].get('temp_gb', float('nan')):.2f}")
            else:
                cells += _cell(row.get(method))
                if method in ONE_PASS:
                    cells.append(_share_of_peak(row.get(method), row["flops"], peak))
        if compare:
            block, chunk = row.get("blockwise") or {}, row.get("chunks") or {}
            ratio = "-"
            if "time_s" in block and "time_s" in chunk:
                ratio = f"{block['time_s'] / chunk['time_s']:.1f}x"
                ratio += f" ({block['cpu_s'] / chunk['cpu_s']:.1f}x)"
            cells.append(ratio)
        if saving:
            skip, full = row.get("blockwise") or {}, row.get("noskip") or {}
            saved = "-"
            if "time_s" in skip and "time_s" in full:
                saved = f"{100 * (1 - skip['time_s'] / full['time_s']):.0f}%"
                saved += f" ({100 * (1 - skip['cpu_s'] / full['cpu_s']):.0f}% CPU)"
            cells.append(saved)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["tiny", "S/16"])
    parser.add_argument("--minutes", nargs="+", type=float, default=[0.5, 1, 3, 5, 10, 20])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--posemb", default="alibi2d", help="alibi2d, alibi1d or rope")
    parser.add_argument("--frames-per-second", type=float, default=None, help="default: MelConfig")
    parser.add_argument("--block-size", type=int, default=512, help="blockwise attention tile")
    parser.add_argument("--chunk-frames", type=int, default=256, help="chunk-and-average length")
    parser.add_argument("--chunk-batch", type=int, default=64, help="chunks per forward pass")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--max-dense-gb", type=float, default=6.0, help="run dense only below")
    parser.add_argument(
        "--max-run-seconds", type=float, default=900.0, help="skip longer runs (0: never skip)"
    )
    parser.add_argument(
        "--compile-only",
        action="store_true",
        help="only report the memory XLA allocates for each run (fast; nothing is run)",
    )
    parser.add_argument("--json", default="", help="also write all results to this file")
    parser.add_argument(
        "--small", action="store_true", help="tiny model, 6 s of audio: a check that it runs"
    )
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(_measure(json.loads(args.worker))), flush=True)
        return []
    if args.small:
        args.variants, args.minutes = ["tiny"], [0.1]
        args.methods = [m for m in args.methods if m != "dense"]
    import jax

    from myna_rpe_jax.data import audio
    from myna_rpe_jax.model import vit

    fps = args.frames_per_second or audio.MelConfig().frames_per_second
    where = f"{machine.describe()}; JAX {jax.__version__} on {jax.default_backend()}"
    print(f"{where}; {args.posemb}, {args.dtype}, {fps:g} frames/s, block {args.block_size}")
    print(f"load average at start: {os.getloadavg()[0]:.1f}", flush=True)
    peak = machine.matmul_peak(256 if args.small else 2048)
    print(f"measured fp32 matmul peak: {peak / 1e9:.0f} GFLOP/s", flush=True)
    rows = []
    for variant in args.variants:
        previous: dict[str, tuple[int, float]] = {}
        for minutes in sorted(args.minutes):
            frames = round(minutes * 60 * fps)
            row = dict(variant=variant, minutes=minutes, frames=frames, tokens=_tokens(frames))
            sizes, patch = vit.parse_variant(variant)
            row["flops"] = machine.vit_forward_flops(
                row["tokens"], sizes["width"], sizes["depth"], sizes["mlp_dim"], patch
            )
            for method in args.methods:
                estimate = _estimate(previous.get(method), row["tokens"], method)
                skip = "compile only" if args.compile_only else ""
                if args.max_run_seconds and estimate and estimate > args.max_run_seconds:
                    skip = f"skipped (~{estimate:.0f} s est.)"
                job = dict(
                    skip=skip,
                    variant=variant,
                    posemb=args.posemb,
                    method=method,
                    frames=frames,
                    block=args.block_size,
                    chunk_frames=args.chunk_frames,
                    chunk_batch=args.chunk_batch,
                    dtype=args.dtype,
                    max_dense_gb=args.max_dense_gb,
                )
                row[method] = result = _run_job(job)
                if "time_s" in result:
                    previous[method] = (row["tokens"], result["time_s"])
                print(f"{variant} {minutes:g} min {method}: {_cell(result)}", flush=True)
            rows.append(row)
    print(f"load average at end: {os.getloadavg()[0]:.1f}\n")
    print(_table(rows, args.methods, args.compile_only, peak))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=where, peak=peak, args=vars(args), rows=rows), f, indent=1)
    return rows


if __name__ == "__main__":
    main()

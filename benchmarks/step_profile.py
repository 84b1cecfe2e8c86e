"""Where a compiled step's time goes on its device: a `jax.profiler` trace of a few steps, read
back and cut into busy time, idle time and the ops that took it.

    summary = profile_steps(run, steps=3)   # run = dict(fn=, state=, args=), already warm
    print(table(summary))

Device ops are the events on the accelerator's own timelines: on a GPU the "Stream" lines of
the "/device:GPU:N" processes (one event per kernel; XProf's derived "XLA Ops" line when no
stream line is there), on a CPU the events of the threads XLA runs its thunks on (GEMMs and
fusions; the runtime's own spans left out). Busy time is the union of their intervals,
since ops on two streams or threads overlap (op time, their sum, can exceed it). Busy / wall
says how much of a step the device computed at all: the rest is kernel-launch and dispatch
gaps, host work and waiting. A launch-bound step (many short kernels) shows a small busy
share and a short median op. A table follows, by kind of op: matrix products (`MATMUL`, by
kernel name: XLA's dots and GEMM fusions, cuBLAS/cuDNN/CUTLASS kernels, YNNPACK on CPU) and
everything else, and the ops that took the most time.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import re
import tempfile
import time

import jax
import numpy as np

# Kernel names of matrix products: XLA's dot thunks and GEMM fusions, YNNPACK/XNNPACK/oneDNN
# on CPU, cuBLAS (gemm, "nvjet" on Hopper), CUTLASS/"xmma" and cuDNN kernels on GPU.
MATMUL = re.compile(r"dot|gemm|matmul|ynn|xnn|onednn|cublas|cutlass|xmma|nvjet|cudnn", re.I)
# XLA:CPU's threads that run thunks: its compute pool, and the client's dispatch thread that
# runs small programs itself.
_CPU_COMPUTE = re.compile(r"XLAEigen|XLAPjRtCpuClient")
# The runtime's own spans on those threads, and control flow whose body ops are events too.
_WRAPPER = re.compile(
    r"^(ThunkExecutor|ThreadpoolListener|CommonPjRt|end: |(while|conditional|call)(\.\d+)?$)"
)


@dataclasses.dataclass(frozen=True)
class Op:
    name: str
    start_us: float
    dur_us: float


@dataclasses.dataclass
class StepProfile:
    """Per step: wall seconds, busy seconds, op count; ops by kind and the top ops."""

    wall_s: float
    busy_s: float
    ops_per_step: float
    median_op_us: float
    lanes: list[str]
    kinds: dict[str, tuple[float, float]]  # kind -> (seconds per step, ops per step)
    top: list[tuple[str, float, float]]  # (name, seconds per step, calls per step)


def union_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals."""
    total, reach = 0.0, -np.inf
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def device_ops(events: list[dict]) -> tuple[list[Op], list[str]]:
    """The device's ops among a Chrome-trace event list, and the lanes (process: thread)
    they came from."""
    processes, threads = {}, {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            processes[e["pid"]] = e["args"]["name"]
        elif e.get("ph") == "M" and e.get("name") == "thread_name":
            threads[(e["pid"], e["tid"])] = e["args"]["name"]
    gpus = {pid for pid, name in processes.items() if name.startswith("/device:GPU")}
    lanes_by_kind = collections.defaultdict(set)
    for (pid, tid), name in threads.items():
        if pid in gpus and name.startswith("Stream"):
            lanes_by_kind["stream"].add((pid, tid))
        elif pid in gpus and name == "XLA Ops":
            lanes_by_kind["xla ops"].add((pid, tid))
        elif _CPU_COMPUTE.search(name):
            lanes_by_kind["cpu"].add((pid, tid))
    kind = next((k for k in ("stream", "xla ops", "cpu") if lanes_by_kind[k]), None)
    lanes = lanes_by_kind[kind] if kind else set()
    ops = [
        Op(e["name"], float(e["ts"]), float(e["dur"]))
        for e in events
        if e.get("ph") == "X"
        and (e.get("pid"), e.get("tid")) in lanes
        and not _WRAPPER.match(e["name"])
    ]
    names = collections.Counter(
        f"{processes.get(pid, pid)}: {re.sub(r'/-?[0-9]+$', '', threads[(pid, tid)])}"
        for pid, tid in lanes
    )
    return ops, [f"{name} x{n}" if n > 1 else name for name, n in sorted(names.items())]


def summarise(ops: list[Op], lanes: list[str], steps: int, wall_s: float, top: int = 8):
    """A StepProfile of `steps` steps that took `wall_s` seconds in all."""
    busy = union_us([(op.start_us, op.start_us + op.dur_us) for op in ops]) / 1e6
    by_name, calls = collections.Counter(), collections.Counter()
    kinds = collections.defaultdict(lambda: [0.0, 0])
    for op in ops:
        base = re.sub(r"\.\d+$", "", op.name)  # fusion.12 and fusion.13: one kind of op
        by_name[base] += op.dur_us / 1e6
        calls[base] += 1
        kind = kinds["matmul" if MATMUL.search(op.name) else "other"]
        kind[0] += op.dur_us / 1e6
        kind[1] += 1
    return StepProfile(
        wall_s=wall_s / steps,
        busy_s=busy / steps,
        ops_per_step=len(ops) / steps,
        median_op_us=float(np.median([op.dur_us for op in ops])) if ops else 0.0,
        lanes=lanes,
        kinds={k: (s / steps, n / steps) for k, (s, n) in sorted(kinds.items())},
        top=[(name, s / steps, calls[name] / steps) for name, s in by_name.most_common(top)],
    )


def profile_steps(run: dict, steps: int) -> StepProfile:
    """Traces `steps` steps of run = dict(fn=step(state, *args) -> (state, out), state, args),
    fn already warm (compiled and run once), into a temporary folder, and summarises the
    trace. Updates run["state"]."""
    with tempfile.TemporaryDirectory() as logdir:
        with jax.profiler.trace(logdir, create_perfetto_trace=True):
            start = time.perf_counter()
            for _ in range(steps):
                run["state"], out = run["fn"](run["state"], *run["args"])
            jax.block_until_ready((run["state"], out))
            wall = time.perf_counter() - start
        paths = glob.glob(f"{logdir}/**/*.trace.json.gz", recursive=True)
        if len(paths) != 1:
            raise RuntimeError(f"expected one *.trace.json.gz under {logdir}, found {paths}")
        with gzip.open(paths[0]) as f:
            events = json.load(f)["traceEvents"]
    return summarise(*device_ops(events), steps, wall)


def table(p: StepProfile) -> str:
    """The profile as markdown: one line of totals, ops by kind, the top ops."""
    share = 100 * p.busy_s / p.wall_s if p.wall_s else 0.0
    lines = [
        f"step {1e3 * p.wall_s:.1f} ms, device busy {1e3 * p.busy_s:.1f} ms ({share:.0f}%),"
        f" {p.ops_per_step:.0f} ops per step, median op {p.median_op_us:.1f} us"
        f" (lanes: {'; '.join(p.lanes) or 'none found'})",
        "",
        "| ops | op time, ms per step | share of op time | ops per step |",
        "|---|---|---|---|",
    ]
    op_time = sum(seconds for seconds, _ in p.kinds.values()) or 1.0
    for kind, (seconds, count) in p.kinds.items():
        share = f"{100 * seconds / op_time:.0f}%"
        lines.append(f"| {kind} | {1e3 * seconds:.2f} | {share} | {count:.0f} |")
    lines += ["", "| top op | ms per step | calls per step |", "|---|---|---|"]
    lines += [f"| `{name[:60]}` | {1e3 * s:.2f} | {n:.0f} |" for name, s, n in p.top]
    return "\n".join(lines)

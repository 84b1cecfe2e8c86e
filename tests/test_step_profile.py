"""benchmarks/step_profile.py: reading a profiler trace into busy time and ops."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import step_profile  # noqa: E402


@pytest.mark.parametrize("seed", range(5))
def test_union_of_intervals_equals_counting_covered_points(seed):
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, 200, 30)
    intervals = [(float(s), float(s + rng.integers(0, 40))) for s in starts]
    covered = np.zeros(260, bool)
    for start, end in intervals:
        covered[int(start) : int(end)] = True
    assert step_profile.union_us(intervals) == covered.sum()


def _meta(pid, name, tid=None):
    kind = "process_name" if tid is None else "thread_name"
    return {"ph": "M", "pid": pid, "name": kind, "args": {"name": name}, "tid": tid}


def _op(pid, tid, name, ts, dur):
    return {"ph": "X", "pid": pid, "tid": tid, "name": name, "ts": ts, "dur": dur}


def test_gpu_trace_counts_each_kernel_once_from_the_stream_lines():
    """XProf's derived "XLA Ops" line repeats the kernels and the host has its own events:
    only the streams count, and two overlapping streams are busy once."""
    events = [
        _meta(1, "/host:CPU"),
        _meta(1, "python", tid=10),
        _meta(2, "/device:GPU:0"),
        _meta(2, "Stream #7(Compute)", tid=7),
        _meta(2, "Stream #8(Compute)", tid=8),
        _meta(2, "XLA Ops", tid=99),
        _op(1, 10, "PjitFunction(train_step)", 0, 1000),
        _op(2, 7, "sm90_xmma_gemm_bf16", 0, 40),
        _op(2, 8, "loop_add_fusion", 20, 40),  # overlaps the GEMM by 20 us
        _op(2, 7, "input_reduce_fusion.3", 100, 10),
        _op(2, 99, "dot.1", 0, 40),
    ]
    ops, lanes = step_profile.device_ops(events)
    assert sorted(op.name for op in ops) == [
        "input_reduce_fusion.3",
        "loop_add_fusion",
        "sm90_xmma_gemm_bf16",
    ]
    assert lanes == ["/device:GPU:0: Stream #7(Compute)", "/device:GPU:0: Stream #8(Compute)"]
    profile = step_profile.summarise(ops, lanes, steps=1, wall_s=1e-3)
    assert profile.busy_s == pytest.approx(70e-6)  # [0, 60) and [100, 110)
    assert profile.kinds["matmul"] == pytest.approx((40e-6, 1))
    assert profile.kinds["other"] == pytest.approx((50e-6, 2))


def test_cpu_trace_keeps_thunks_and_drops_the_runtime_spans():
    events = [
        _meta(1, "/host:CPU"),
        _meta(1, "tf_XLAEigen/-123", tid=3),
        _meta(1, "tf_XLAEigen/456", tid=4),
        _op(1, 3, "ThunkExecutor::Execute", 0, 100),
        _op(1, 3, "ynn_fusion.12", 0, 60),
        _op(1, 4, "select_select_fusion", 10, 30),
        _op(1, 4, "end: ynn_fusion", 60, 1),
        _op(1, 4, "while.2", 0, 100),
    ]
    ops, lanes = step_profile.device_ops(events)
    assert sorted(op.name for op in ops) == ["select_select_fusion", "ynn_fusion.12"]
    assert lanes == ["/host:CPU: tf_XLAEigen x2"]


def test_profile_of_a_real_step_finds_its_matmul():
    @jax.jit
    def step(state, x):
        return jnp.tanh(state @ x), ()

    run = dict(fn=step, state=jnp.ones((256, 256)) / 256, args=(jnp.eye(256),))
    run["state"], _ = step(run["state"], *run["args"])
    profile = step_profile.profile_steps(run, steps=2)
    assert profile.ops_per_step >= 2 and "matmul" in profile.kinds and "other" in profile.kinds
    assert 0 < profile.busy_s <= profile.wall_s
    table = step_profile.table(profile)
    assert "| matmul |" in table and "device busy" in table

"""The benchmarks' --small modes run end to end and print their tables (so they cannot rot)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_small(script: str) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user runs them
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--small"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_device_report_small_prints_every_section():
    out = run_small("device_report.py")
    assert out.startswith("# Device report: ")
    for title in ("Train step:", "Embedding,", "One track in one pass", "Attention forward"):
        assert title in out
    assert "| tiny | bfloat16 |" in out and "| tiny | float32 |" in out
    assert "| tiny | chunks |" in out and "GPU-only tests:" in out


@pytest.mark.slow
def test_train_step_small_prints_ours_beside_plain_with_mfu():
    out = run_small("train_step.py")
    assert "matmul peak:" in out and "| ours |" in out and "| plain |" in out
    assert "ours / plain step time:" in out


@pytest.mark.slow
def test_long_track_small_prints_share_of_peak_and_skip_saving():
    out = run_small("long_track.py")
    assert "| blockwise % peak |" in out and "tile skipping saves" in out
    assert "| tiny | 0.1 min | 297 |" in out

"""The benchmarks' --small modes run end to end and print their tables (so they cannot rot)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_small(script: str, *args: str) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user runs them
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--small", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,  # a hang guard: a loaded 2-core machine took > 240 s for quality.py
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
    assert "tiny bfloat16 step under the JAX profiler" in out and "| matmul |" in out
    assert "| tiny | chunks |" in out and "| tiny | pallas |" in out
    assert "fused ALiBi (Pallas)" in out and "failed (stderr)" not in out
    # No GPU here: the GPU-only tests are found, skip, and pytest exits 0.
    assert "GPU-only tests (`pytest -m gpu`, exit 0)" in out and "skipped" in out


@pytest.mark.slow
def test_train_step_small_prints_ours_beside_plain_with_mfu():
    out = run_small("train_step.py", "--profile")
    assert "matmul peak:" in out and "| ours |" in out and "| plain |" in out
    assert "ours / plain step time:" in out
    # The GEMMs-only row counts its FLOPs by hand: XLA's cost analysis must count the same.
    (row,) = [line for line in out.splitlines() if line.startswith("| its matmuls alone |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert float(cells[4]) == pytest.approx(float(cells[6]), rel=0.02), row
    assert "| its optimizer update alone |" in out and "s of everything else" in out
    assert "Our step under the JAX profiler" in out and "device busy" in out


@pytest.mark.slow
def test_long_track_small_prints_share_of_peak_and_skip_saving():
    out = run_small("long_track.py")
    assert "| blockwise % peak |" in out and "tile skipping saves" in out
    assert "| tiny | 0.1 min | 297 |" in out


@pytest.mark.slow
def test_quality_small_trains_probes_and_prints_both_tables(tmp_path, demo_root):
    out = run_small("quality.py", "--out", str(tmp_path / "quality"), "--data-dir", str(demo_root))
    assert "## Recipe choices" in out and "## One pass over the whole track" in out
    assert "| base: 2-D ALiBi" in out and "| learned: learned absolute table (chunks) |" in out
    assert "| base at random init (chunks) |" in out and "| log-mel stats |" in out
    for mode in ("chunks", "full", "full+ls", "patchout", "patchout+ls"):
        assert f"| base {mode} |" in out
    assert "learned full" not in out  # a learned table cannot embed whole tracks
    assert (tmp_path / "quality" / "results.png").stat().st_size > 0


@pytest.mark.slow
def test_data_prep_small_prints_the_builder_beside_decoding_alone():
    out = run_small("data_prep.py")
    assert "| decode + log-mel alone | 1 |" in out
    assert "| builder (decode + log-mel + write) | 1 |" in out and "| 1.00x |" in out
    assert "| wav | 44100 |" in out  # the per-core section


def test_bootstrap_small_prints_vectorised_beside_the_loop_that_agrees():
    out = run_small("bootstrap.py")
    rows = [line for line in out.splitlines() if line.startswith(("| tags", "| keys", "| r2"))]
    assert len(rows) == 3, out
    for line in rows:
        assert float(line.strip("|").split("|")[-1]) < 1e-9, line  # same scores as the loop


# ---- the device report on a bare JAX GPU image (docs/benchmarks.md) -------------------------

# What such an image lacks and cannot be carried to it as a few small wheels: TensorFlow alone
# is over 500 MB. The report and the GPU-only tests must run without them.
NOT_ON_A_JAX_IMAGE = ("tensorflow", "tensorflow_datasets", "keras", "spotipy", "array_record")


def _imported_by(code: str) -> list[str]:
    probe = f"import sys; {code}; print(sorted({{m.split('.')[0] for m in sys.modules}}))"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=f"{ROOT}:{ROOT / 'benchmarks'}")
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return [name for name in eval(out.stdout) if name in NOT_ON_A_JAX_IMAGE]


def test_device_report_and_gpu_tests_import_nothing_a_bare_jax_image_lacks():
    assert _imported_by("import device_report") == []
    files = [f.removesuffix(".py").replace("/", ".") for f in _device_report().gpu_test_files(ROOT)]
    assert files == ["tests.model.test_gpu"]
    assert _imported_by("; ".join(f"import {name}" for name in ["tests.conftest", *files])) == []


def _device_report():
    sys.path[:0] = [str(ROOT / "benchmarks")]
    try:
        import device_report
    finally:
        del sys.path[0]
    return device_report


def test_gpu_tests_run_on_the_device_the_report_runs_on():
    """tests/conftest.py pins JAX to the CPU unless JAX_PLATFORMS is set: the report's child
    must not be pinned, or every GPU test would skip on the GPU and the section say 'exit 0'."""
    environ = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    env = _device_report().gpu_tests_env(environ)
    probe = "import tests.conftest, jax; print(repr(jax.config.jax_platforms))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() in ("''", "None"), out.stdout
    assert (
        _device_report().gpu_tests_env(dict(environ, JAX_PLATFORMS="cuda"))["JAX_PLATFORMS"]
        == "cuda"
    )


def test_gpu_tests_that_skip_on_a_gpu_fail_the_report():
    failure = _device_report().gpu_tests_failure
    assert failure(0, "7 skipped in 1.31s", "gpu") == "GPU-only tests skipped on a GPU"
    assert failure(0, "5 passed, 2 skipped in 9.0s", "gpu") == "GPU-only tests skipped on a GPU"
    assert failure(0, "7 passed in 9.0s", "gpu") is None
    assert failure(0, "7 skipped in 1.31s", "cpu") is None  # no GPU: skipping is right
    assert failure(1, "1 failed, 6 passed in 9.0s", "gpu") == "pytest exited 1"

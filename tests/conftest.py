"""Test set-up: 4 fake CPU devices and quiet TensorFlow, fixed before jax or tf is imported;
a small demo dataset shared by every test (and every xdist worker) that needs prepared data."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# librosa's numba functions cache their machine code beside librosa's sources (or in
# NUMBA_CACHE_DIR). Two test processes compiling one function into one cache at once left an
# entry that segfaults every later process; a fresh folder per test process avoids the race.
# (xdist sets PYTEST_XDIST_WORKER only after this file runs, so it cannot name the folder.)
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="myna-numba-")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

DEMO = dict(tracks=24, seconds=4.0, seed=0)


def _shared_datasets() -> Path:
    """The benchmarks' published split/annotation files: ../shared beside the checkout."""
    beside = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    return beside if beside.is_dir() else Path("/work/shared/datasets")


SHARED_DATASETS = _shared_datasets()


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A folder holding the prepared 24-track demo set (as config.data.data_dir)."""
    from myna_rpe_jax.data import locations

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "demo_data"
    locations.ensure_demo(root, **DEMO)  # its build lock: one xdist worker builds, others wait
    return root


@pytest.fixture
def tiny_config(demo_root):
    """configs/tiny.py on the shared demo set, sized for a test: 8 tracks a batch, 64 frames."""
    from configs import tiny

    config = tiny.get_config()
    config.data.update(
        data_dir=str(demo_root),
        demo_tracks=DEMO["tracks"],
        demo_seconds=DEMO["seconds"],
        chunk_frames=(64,),
        read_threads=2,
    )
    config.batch_size = 8
    config.total_steps = 6
    config.log_every = 1
    config.checkpoint_every = 3
    config.eval_every = 0  # tests/train/test_evals.py turns the probes on
    return config

"""Contrastive pretraining of the Myna-RPE encoder: the command line.

python -m myna_rpe_jax.train --config=configs/alibi2d.py --workdir=runs/alibi2d \
    [--config.total_steps=1000 --config.batch_size=256 ...]

See `loop.train` for what a run does and writes.
"""

from __future__ import annotations

import logging as std_logging

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from myna_rpe_jax import distributed
from myna_rpe_jax.train import loop


def _quiet_orbax_info_logs() -> None:
    """Orbax logs every save step by step at INFO; keep its warnings, drop the rest."""
    logging.get_absl_logger().addFilter(
        lambda record: record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _quiet_orbax_info_logs()
    distributed.maybe_initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    history = loop.train(_CONFIG.value, _WORKDIR.value)
    if history and jax.process_index() == 0:
        logging.info("done: step %d, loss %.4f", history[-1]["step"], history[-1]["loss"])


_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/alibi2d.py; override fields with --config.x=y."
)


_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and summaries.")


_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "Multi-host: host:port of process 0 (not needed under SLURM)."
)


_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Multi-host: number of processes.")


_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "Multi-host: this process's index.")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)

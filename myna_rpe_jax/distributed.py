"""Multi-host start-up and the data-parallel device mesh (failures.py: how processes stop
together)."""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def maybe_initialize(
    coordinator_address: str = "", num_processes: int = 0, process_id: int = -1
) -> None:
    """Starts JAX's distributed runtime when asked to, or when SLURM launched several tasks.

    Must run before any other JAX call. With explicit arguments (all three) they are used as
    given; under SLURM (`srun` with more than one task) JAX reads the cluster from the
    environment. A single process needs nothing.
    """
    if coordinator_address:
        if num_processes < 1 or process_id < 0:
            raise ValueError("--coordinator_address needs --num_processes and --process_id as well")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        jax.distributed.initialize()
    else:
        return
    logging.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def data_mesh(devices=None) -> Mesh:
    """A 1-D ("data",) mesh over `devices` (default: every device of every process).

    Built as a plain Mesh (implicit sharding): `jax.make_mesh` now defaults to Explicit axis
    types, which breaks implicit sharding of gradients (docs/design.md, traps).
    """
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split across the data axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch_from_local(local: dict, mesh: Mesh) -> dict:
    """Assembles each process's slice of the batch into global arrays sharded over devices."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local
    )

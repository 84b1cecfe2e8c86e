"""Multi-host start-up, set-up steps every process finishes or none, and the data mesh."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from myna_rpe_jax.errors import UserError

DATA_AXIS = "data"
# Bytes of a set-up step's name and of its error message in the row each process gathers.
_WHAT_BYTES, _MESSAGE_BYTES = 200, 1000


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


class OtherProcessError(UserError):
    """Another process failed in a set-up step, or reached another one (another config)."""


@contextlib.contextmanager
def all_or_none(what: str) -> Iterator[None]:
    """A set-up step (`what`, e.g. "checking the config") that every process finishes, or
    every process stops in: the processes meet at its end, and if one failed (a data_dir
    missing on one host) the others raise `OtherProcessError` with its message instead of
    waiting in the next collective until JAX's runtime gives up with an unrelated error
    ("Gloo context initialization failed: DEADLINE_EXCEEDED"). The failing process raises
    its own error. The block must not run a collective itself, and every process must go
    through the same steps in the same order (their names are compared). A single process
    just runs the block.
    """
    if jax.process_count() == 1:
        yield
        return
    try:
        yield
    except Exception as error:
        _gather_status(what, _describe(error))
        raise
    problem = disagreement(_gather_status(what, ""))
    if problem:
        raise OtherProcessError(problem)


def _describe(error: Exception) -> str:
    return str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"


def _text_bytes(text: str, size: int) -> np.ndarray:
    """`text` as utf-8, cut to `size` bytes and zero-padded: [size] uint8."""
    row = np.zeros(size, np.uint8)
    data = np.frombuffer(text.encode()[:size], np.uint8)
    row[: len(data)] = data
    return row


def _gather_status(what: str, message: str) -> list[tuple[str, str]]:
    """Every process's (step name, error message or "") in process order."""
    row = np.concatenate([_text_bytes(what, _WHAT_BYTES), _text_bytes(message, _MESSAGE_BYTES)])
    rows = np.asarray(multihost_utils.process_allgather(row))  # [processes, bytes]
    return [(_bytes_text(row[:_WHAT_BYTES]), _bytes_text(row[_WHAT_BYTES:])) for row in rows]


def _bytes_text(row: np.ndarray) -> str:
    """The text `_text_bytes` wrote (a multi-byte character cut at the end is dropped)."""
    return row.tobytes().rstrip(b"\0").decode(errors="ignore")


def disagreement(statuses: list[tuple[str, str]]) -> str:
    """'' when every process finished the same step without an error; else what went wrong,
    naming the processes (`statuses`: (step name, error message or "") per process)."""
    steps = [what for what, _ in statuses]
    if len(set(steps)) > 1:
        where = "; ".join(f"process {i}: {what}" for i, what in enumerate(steps))
        return (
            f"the processes reached different set-up steps ({where}): they run different"
            " configs. Start every process with the same --config and the same overrides"
            " (only config.data.data_dir may differ between hosts)."
        )
    failed = [(i, message) for i, (_, message) in enumerate(statuses) if message]
    return "; ".join(f"process {i} stopped while {steps[i]}: {message}" for i, message in failed)


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

"""A multi-process run stops together: a failure on one process stops every process within
seconds, each saying which process failed and why, instead of leaving the others waiting in
a collective until JAX's runtime gives up (minutes later, with an unrelated error).

- `all_or_none(what)`: a set-up step every process finishes or none. The processes meet at
  its end and compare (step, error): this also catches processes started with different
  configs, which reach different steps.
- `stop_together()`: the whole run. A process that fails publishes its message in JAX's
  coordination service (its key-value store); a watcher thread on every other process sees
  it, prints `error: process 1 failed: ...` and exits at once: its main thread may be
  blocked in a collective that will never complete. `exit_if_failed` then ends the failing
  process without JAX's shutdown barrier, which would wait 300 s for processes already gone.

Measured on loopback, two CPU processes (tests/train/test_multihost.py): a data_dir missing
on process 1 used to stop process 0 after 41 s with "Gloo context initialization failed:
DEADLINE_EXCEEDED", now in 4 s; an error on process 1 at step 3 used to leave both
processes waiting 300 s, then abort (exit 134, "Fatal Python error: Aborted" and a C++
stack), now both stop within a second or two.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from myna_rpe_jax.errors import UserError

# Bytes of a set-up step's name and of its error message in the row each process gathers.
_WHAT_BYTES, _MESSAGE_BYTES = 200, 1000
# Keys in the coordination service: failed/<process> = its message; stopped/<process> once
# a process has seen another's failure; exiting/<process> once a failed one has printed its
# error. Process 0 holds the service (its key-value store): it exits last.
_FAILED, _STOPPED = "myna_rpe_jax/failed/", "myna_rpe_jax/stopped/"
_EXITING = "myna_rpe_jax/exiting/"
_POLL_S = 0.5  # how often a watcher looks for a failure (one small RPC to process 0)
_ACK_TIMEOUT_S = 30.0  # how long a failing process waits for the others to have seen it

_failed_here = threading.Event()  # this process failed and told the others
_peer_failed = threading.Event()  # another process failed: the watcher is ending this one
_failure_shared = threading.Event()  # a failure already known to every process


class OtherProcessError(UserError):
    """Another process failed in a set-up step, or reached another one (another config)."""


@contextlib.contextmanager
def all_or_none(what: str) -> Iterator[None]:
    """A set-up step (`what`, e.g. "checking the config") that every process finishes, or
    every process stops in: the processes meet at its end, and if one failed (a data_dir
    missing on one host) the others raise `OtherProcessError` with its message. The failing
    process raises its own error. The block must not run a collective itself, and every
    process must go through the same steps in the same order (their names are compared).
    A single process just runs the block.
    """
    if jax.process_count() == 1:
        yield
        return
    try:
        yield
    except Exception as error:
        _gather_status(what, _describe(error))
        raised_everywhere(error)
        raise
    problem = disagreement(_gather_status(what, ""))
    if problem:
        raise raised_everywhere(OtherProcessError(problem))


def raised_everywhere(error: Exception) -> Exception:
    """`error`, marked as one every process knows of (they compared notes in a collective
    and all stop): `stop_together` then does not tell the others about it."""
    _failure_shared.set()
    return error


@contextlib.contextmanager
def stop_together() -> Iterator[None]:
    """Runs a multi-process command's body (after `jax.distributed.initialize`) so that a
    failure in this process stops the others, and one in another stops this one (exit 1,
    `error: process i failed: <its message>`). A single process just runs the body."""
    if jax.process_count() == 1:
        yield
        return
    done = threading.Event()
    threading.Thread(target=_watch, args=(done,), daemon=True, name="stop-together").start()
    try:
        yield
    except (Exception, KeyboardInterrupt) as error:
        while _peer_failed.is_set():  # a collective broke because a peer left: the watcher
            time.sleep(1.0)  # prints why and exits; nothing more to say here
        if not _failure_shared.is_set():
            _publish(_describe(error))
        raise
    finally:
        done.set()


def exit_if_failed(code: int) -> int:
    """`code`, unless this process failed and told the others (`stop_together`): then it
    exits now with `code`, skipping JAX's shutdown barrier (300 s waiting for processes that
    have already stopped)."""
    if _failed_here.is_set():
        sys.stdout.flush()
        sys.stderr.flush()
        with contextlib.suppress(Exception):  # process 0 waits for this before it exits
            _client().key_value_set(f"{_EXITING}{jax.process_index()}", "")
        os._exit(code)
    return code


def _client():
    # jax has no public handle on its coordination service; orbax uses this one as well.
    from jax._src import distributed as jax_distributed

    return jax_distributed.global_state.client


def _entries(prefix: str) -> dict[int, str]:
    """The coordination service's keys under `prefix`: process index -> value."""
    return {int(key.rsplit("/", 1)[1]): value for key, value in _client().key_value_dir_get(prefix)}


def _publish(message: str) -> None:
    """Tells the other processes that this one failed, and waits (up to _ACK_TIMEOUT_S) until
    each has seen it: process 0 holds the key-value store, which goes when it exits."""
    _failed_here.set()
    me = jax.process_index()
    logging.error("process %d failed; telling the other processes to stop", me)
    try:
        _client().key_value_set(f"{_FAILED}{me}", message[:_MESSAGE_BYTES])
        _wait_for(_STOPPED, set(range(jax.process_count())), also=_FAILED)
    except Exception as error:  # the service is gone (process 0 stopped): nobody to tell
        logging.warning("could not tell the other processes: %s", error)


def _wait_for(prefix: str, processes: set[int], also: str | None = None) -> None:
    """Until every process in `processes` has a key under `prefix` (or `also`), at most
    _ACK_TIMEOUT_S: a process that hangs or died cannot hold the others for ever."""
    deadline = time.monotonic() + _ACK_TIMEOUT_S
    while time.monotonic() < deadline:
        seen = _entries(prefix).keys() | (_entries(also).keys() if also else set())
        if processes <= seen:
            return
        time.sleep(_POLL_S)


def _watch(done: threading.Event) -> None:
    """Until `done`: exits this process when another one has published a failure."""
    me = jax.process_index()
    while not done.wait(_POLL_S):
        try:
            failed = {i: message for i, message in _entries(_FAILED).items() if i != me}
        except Exception:  # the service is gone; JAX's own agent stops this process
            return
        if failed and not _failed_here.is_set():
            _peer_failed.set()
            print(f"error: {peer_failure(failed)}", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            with contextlib.suppress(Exception):
                _client().key_value_set(f"{_STOPPED}{me}", "")
                if me == 0:  # the others lose the service when this process exits
                    _wait_for(_EXITING, set(failed))
            os._exit(1)


def peer_failure(failed: dict[int, str]) -> str:
    """The line a process prints when others failed (`failed`: process index -> message)."""
    causes = "; ".join(f"process {i} failed: {message}" for i, message in sorted(failed.items()))
    return f"{causes}. This process stops too (the failed process's output has the details)."


def _describe(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    return str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"


def _text_bytes(text: str, size: int) -> np.ndarray:
    """`text` as utf-8, cut to `size` bytes and zero-padded: [size] uint8."""
    row = np.zeros(size, np.uint8)
    data = np.frombuffer(text.encode()[:size], np.uint8)
    row[: len(data)] = data
    return row


def _bytes_text(row: np.ndarray) -> str:
    """The text `_text_bytes` wrote (a multi-byte character cut at the end is dropped)."""
    return row.tobytes().rstrip(b"\0").decode(errors="ignore")


def _gather_status(what: str, message: str) -> list[tuple[str, str]]:
    """Every process's (step name, error message or "") in process order."""
    row = np.concatenate([_text_bytes(what, _WHAT_BYTES), _text_bytes(message, _MESSAGE_BYTES)])
    rows = np.asarray(multihost_utils.process_allgather(row))  # [processes, bytes]
    return [(_bytes_text(row[:_WHAT_BYTES]), _bytes_text(row[_WHAT_BYTES:])) for row in rows]


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

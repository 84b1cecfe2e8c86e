"""Orbax checkpoints of the train state, and loading an encoder for inference.

A workdir holds `config.json` (the run's full config), `features.json` (the log-mel settings,
MelConfig fields, of its training data), `checkpoints/<step>/` and, for each resume with a
changed config, `config.until_step<N>.json`: the config in force up to step N (since the
previous archive, if any). config.json and features.json are all a checkpoint needs to be used
on another machine (docs/runs.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from myna_rpe_jax import files
from myna_rpe_jax.data.audio import MelConfig

CONFIG_FILE = "config.json"
FEATURES_FILE = "features.json"

log = logging.getLogger("myna_rpe_jax.run")


def checkpoint_manager(workdir: str | Path, keep: int = 3, async_save: bool = True):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save
    )
    return ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints", options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Starts writing `state` as `step` (waiting for the previous save first); a Ctrl-C
    meanwhile is raised once the call returns (`_interrupt_deferred`)."""
    with _interrupt_deferred():
        manager.save(step, args=ocp.args.StandardSave(state))


@contextlib.contextmanager
def saves_finished(manager: ocp.CheckpointManager):
    """The checkpoints saved in the block are whole when it ends, normally or not; on a
    Ctrl-C, it logs which step a rerun resumes from. A Ctrl-C while waiting is raised after.

    Without the wait, a KeyboardInterrupt exits while the background save runs: the
    interpreter shuts its executors down, and it fails in ~450 lines of tracebacks and leaves
    the step unfinished.
    """
    interrupted = False
    try:
        yield
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        with _interrupt_deferred():
            manager.wait_until_finished()
        if interrupted and manager.latest_step() is not None:
            log.warning(
                "interrupted; the latest checkpoint, step %d, is whole: rerun to resume there",
                manager.latest_step(),
            )


@contextlib.contextmanager
def _interrupt_deferred():
    """Holds a Ctrl-C (SIGINT) back until the block ends, then raises KeyboardInterrupt; a
    second one raises at once. Interrupted inside, orbax logs a traceback and drops the step
    being finalised. Does nothing off the main thread, or where SIGINT is not Python's
    KeyboardInterrupt (ignored, as in a background job, or handled by the caller)."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    pressed = []

    def hold(signum, frame) -> None:
        if pressed:
            raise KeyboardInterrupt
        pressed.append(signum)
        log.warning("interrupted: finishing the checkpoint being written (Ctrl-C again: stop now)")

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pressed:
        raise KeyboardInterrupt


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None):
    """Restores into the structure, shapes and shardings of `abstract_state`."""
    step = manager.latest_step() if step is None else step
    read_whole = _quiet_failed_read()  # as in _read_params
    restored = manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    read_whole()
    return restored


def damage(workdir: str | Path, step: int) -> str | None:
    """Why checkpoint `step` of `workdir` cannot be read at all (damaged files), or None: not
    a checkpoint that reads but fits no train state, which only a structured restore finds."""
    manager = checkpoint_manager(workdir, async_save=False)
    try:
        _read_params(manager, step, follow_latest=False)
    except OSError as err:
        return error_gist(err.__cause__ or err)
    return None


def flat_fields(tree: Any, path: str = "") -> dict[str, Any]:
    """A config as JSON (nested dicts) -> dotted field name ("model.posemb") -> leaf value."""
    if not isinstance(tree, dict):
        return {path.removesuffix("."): tree}
    return {k: v for key, sub in tree.items() for k, v in flat_fields(sub, f"{path}{key}.").items()}


def config_changes(
    old: dict, new: dict, absent: dict[str, Any] | None = None
) -> dict[str, tuple[Any, Any]]:
    """Dotted field name -> (old value, new value) for every field that differs (None: absent).
    `absent` (dotted name -> value) says what the code took for a field missing from `old`
    (a config written before the field existed); where `new` has that value, it is no change.
    """
    old, new = flat_fields(old), flat_fields(new)
    old |= {key: value for key, value in (absent or {}).items() if key in new.keys() - old}
    return {
        key: (old.get(key), new.get(key))
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    }


def write_config(
    workdir: str | Path,
    config: ml_collections.ConfigDict,
    step: int = 0,
    absent: dict[str, Any] | None = None,
) -> dict[str, tuple[Any, Any]]:
    """Writes `config.json`; returns what changed from the one already there (see
    `config_changes`, with `absent`). On a resume at `step` > 0 with a changed config the old
    file is first kept as `config.until_step<step>.json`, unless that exists: then a resume
    at the same step already archived the config the steps up to it ran with (the file being
    replaced ran no checkpointed step), and it is kept."""
    path = Path(workdir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    changes = {}
    if path.exists():
        changes = config_changes(json.loads(path.read_text()), json.loads(text), absent)
        archive = path.with_name(f"config.until_step{step}.json")
        if changes and step > 0 and not archive.exists():
            path.replace(archive)
    files.write_text(path, text)
    return changes


def config_file(workdir: str | Path, step: int | None = None) -> Path:
    """The config that checkpoint `step` was trained with: the earliest archive
    `config.until_step<N>.json` with N >= step (the config in force up to N), else
    config.json (the current one; also for step None, the latest)."""
    workdir = Path(workdir)
    if step is not None:
        archives = {}
        for archive in workdir.glob("config.until_step*.json"):
            number = archive.name.removeprefix("config.until_step").removesuffix(".json")
            if number.isdigit():
                archives[int(number)] = archive
        later = [n for n in archives if n >= step]
        if later:
            return archives[min(later)]
    return workdir / CONFIG_FILE


def read_config(workdir: str | Path, step: int | None = None) -> ml_collections.ConfigDict:
    """The run's config (`config_file`: the one checkpoint `step` was trained with)."""
    path = config_file(workdir, step)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: {workdir} is not a training workdir (train writes config.json"
            " and checkpoints/ there: python -m myna_rpe_jax.train --workdir=...)"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
            raise ValueError("no 'model' section")
        return ml_collections.ConfigDict(config)
    except (ValueError, UnicodeDecodeError, IsADirectoryError) as err:  # JSONDecodeError too
        raise ValueError(
            f"{path} is not the JSON config train writes ({err}): restore it from a copy of"
            " the run, or retrain into a new --workdir"
        ) from err


def load_params(workdir: str | Path, step: int | None = None) -> tuple[Any, int]:
    """The encoder parameters of a checkpoint (the latest if `step` is None), and its step.

    Restores without the optimiser's structure, so it works without knowing how the run was
    optimised, on any number of devices. A run still training into `workdir` may delete the
    latest step while it is read (its `keep_checkpoints`); the newer latest is read instead.
    """
    manager = checkpoint_manager(workdir, async_save=False)
    steps = manager.all_steps()
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {Path(workdir) / 'checkpoints'}")
    if step is not None and step not in steps:
        raise FileNotFoundError(f"no checkpoint at step {step} in {workdir}; have {sorted(steps)}")
    return _read_params(manager, max(steps) if step is None else step, follow_latest=step is None)


# Each retry reads a newer step than the last; a read outpaced this often by saves is hopeless.
_READ_ATTEMPTS = 5


def _read_params(manager: ocp.CheckpointManager, step: int, follow_latest: bool):
    """`load_params` once `step` is chosen. With `follow_latest`, a step that fails to read
    while a newer one has appeared (a run still training into the workdir saved it, and its
    `keep_checkpoints` is deleting this one) gives way to the newer; any other failure is an
    OSError."""
    # The saved shardings name the training devices; land everything on one local device
    # instead, so a run trained on N accelerators loads anywhere.
    args = ocp.args.StandardRestore(
        fallback_sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    )
    # Before the restore, not after it fails: the first stray callbacks come while orbax unwinds.
    read_whole = _quiet_failed_read()
    for attempt in range(_READ_ATTEMPTS):
        try:
            restored = manager.restore(step, args=args)
            break
        except Exception as err:  # orbax / tensorstore raise bare Exceptions for damaged files
            # A fresh manager: one whose restore failed on a vanished step refuses the others.
            manager = checkpoint_manager(Path(manager.directory).parent, async_save=False)
            now = manager.all_steps()
            # Orbax drops old steps only once a newer one is whole, and deletes file by file:
            # a newer step means this one may be half gone, not damaged.
            superseded = follow_latest and now and max(now) > step
            if not superseded or attempt == _READ_ATTEMPTS - 1:
                raise _unreadable(Path(manager.directory), step, now, err) from err
            log.warning("checkpoint step %d went while read; reading step %d", step, max(now))
            step = max(now)
    read_whole()  # nothing is left to call back
    params = restored["params"] if isinstance(restored, dict) else restored.params
    return params, step


def _unreadable(folder: Path, step: int, steps: list[int], error: Exception) -> OSError:
    """Why checkpoint `step` in `folder` could not be restored, given the `steps` there now."""
    others = sorted(set(steps) - {step})
    fix = f"load another step with --step ({others})" if others else "retrain the run"
    if step not in steps:
        return OSError(
            f"checkpoint step {step} in {folder} was deleted while it was read (a run still"
            f" training into {folder.parent} keeps only its last keep_checkpoints); {fix}"
        )
    return OSError(
        f"checkpoint step {step} in {folder} cannot be read, its files are damaged or"
        f" incomplete ({error_gist(error)}); {fix}"
    )


def error_gist(error: Exception, limit: int = 300) -> str:
    """The start of an orbax / tensorstore restore error: its first line (with the first tree
    path when it names one) up to its first sentence, at most `limit` characters. A state
    mismatch's whole message dumps both trees (~80 KB for ViT-S) and ends in hints that do not
    apply here; a damaged file's names every read that failed."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    gist = lines[0] if lines else type(error).__name__
    if gist.endswith(":") and len(lines) > 1:  # "... tree structures do not match:" + a path
        gist = f"{gist} {lines[1].rstrip(':')}"
    gist = gist.split(". ", 1)[0].rstrip(".")
    return gist if len(gist) <= limit else gist[: limit - 3].rstrip() + "..."


# asyncio's report of a failed read collected unread: one per array, with its whole spec.
_UNREAD_FAILURES = ("Task exception was never retrieved", "Future exception was never retrieved")


def _quiet_failed_read() -> Callable[[], None]:
    """Silences a failed restore's `Event loop is closed` callbacks and asyncio's reports of its
    unread reads (kept: they come when collected). Returns the undo, for a whole read."""
    previous_hook, asyncio_log = sys.unraisablehook, logging.getLogger("asyncio")
    quiet = lambda record: not record.getMessage().startswith(_UNREAD_FAILURES)  # noqa: E731
    sys.unraisablehook = _dropping_closed_loop_callbacks(previous_hook)
    asyncio_log.addFilter(quiet)

    def read_whole() -> None:
        sys.unraisablehook = previous_hook
        asyncio_log.removeFilter(quiet)

    return read_whole


def _dropping_closed_loop_callbacks(previous: Callable) -> Callable:
    """An unraisable hook that drops what a failed restore leaves behind and passes the rest
    to `previous`: tensorstore finishes its other reads and calls back into the event loop
    orbax has already closed, and each callback would print a `RuntimeError: Event loop is
    closed` traceback around the one-line error."""

    def hook(unraisable) -> None:
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and "Event loop is closed" in str(error)):
            previous(unraisable)

    return hook


def _has_checkpoint(workdir: Path) -> bool:
    folder = workdir / "checkpoints"
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


def mel_differences(run: MelConfig, data: MelConfig) -> dict[str, tuple[Any, Any]]:
    """MelConfig field -> (run value, data value) for every field that differs."""
    run_fields, data_fields = dataclasses.asdict(run), dataclasses.asdict(data)
    return {k: (v, data_fields[k]) for k, v in run_fields.items() if data_fields[k] != v}


def describe_differences(differences: dict[str, tuple[Any, Any]]) -> str:
    """`mel_differences` as one line: `hop_length 512 (run) vs 441 (data), ...`."""
    return ", ".join(
        f"{k} {run!r} (run) vs {data!r} (data)" for k, (run, data) in differences.items()
    )


def training_data_mel(data: ml_collections.ConfigDict) -> tuple[MelConfig, Path]:
    """The MelConfig the run's training data (`config.data`) was prepared with, from the
    prepared dataset's metadata, and that dataset's data_dir. Raises FileNotFoundError
    (datasets.DatasetNotPreparedError) when it is not prepared on this machine."""
    # Lazy: the training data machinery (and TensorFlow Datasets) only where it is needed.
    from myna_rpe_jax.data import datasets, locations

    data_dir = locations.training_dir(data)
    return MelConfig(**datasets.dataset_metadata(data.dataset, data_dir)["mel"]), data_dir


def record_features(workdir: str | Path, data: ml_collections.ConfigDict) -> MelConfig:
    """Writes WORKDIR/features.json, the log-mel settings of the run's (opened) training data;
    returns them. Call it once the training data is prepared, in every process: process 0
    writes (atomically), the others only check.

    A resumed run (a checkpoint in WORKDIR) whose data has other settings than the recorded
    ones is refused (ValueError naming the fields): its checkpoint learned other features.
    """
    workdir = Path(workdir)
    mel, data_dir = training_data_mel(data)
    path = workdir / FEATURES_FILE
    if path.exists() and _has_checkpoint(workdir):
        recorded = read_features_file(path)
        differences = mel_differences(recorded, mel)
        if differences:
            raise ValueError(
                f"{path}: this run was trained on other log-mel features than its data"
                f" {data.dataset!r} in {data_dir} has ({describe_differences(differences)});"
                " resume it on data prepared with the recorded settings, or train in a fresh"
                " --workdir."
            )
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(
            {"mel": dataclasses.asdict(mel), "dataset": data.dataset, "data_dir": str(data_dir)},
            indent=2,
            sort_keys=True,
        )
        files.write_text(path, text)
    return mel


def read_features_file(path: str | Path) -> MelConfig:
    """The MelConfig recorded in a run's features.json."""
    path = Path(path)
    try:
        return MelConfig(**json.loads(path.read_text(encoding="utf-8"))["mel"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f'{path}: not a features file ({err}); expected {{"mel": {{MelConfig fields}}}}'
            " as training writes it"
        ) from err


def read_features(workdir: str | Path) -> tuple[MelConfig, str]:
    """The log-mel settings a run was trained on, and where they came from.

    From WORKDIR/features.json. A run from before features.json was recorded falls back, with
    a warning, to the metadata of its training dataset on this machine; where neither exists
    it raises FileNotFoundError saying what is missing.
    """
    path = Path(workdir) / FEATURES_FILE
    if path.exists():
        return read_features_file(path), str(path.absolute())
    config = read_config(workdir)
    try:
        mel, data_dir = training_data_mel(config.data)
    except (FileNotFoundError, KeyError) as err:
        reason = str(err).splitlines()[0]
        raise FileNotFoundError(
            f"{path} not found, and the run's training dataset {config.data.dataset!r} is not"
            f" on this machine ({reason}): the log-mel settings the model was trained on are"
            f" unknown. Copy features.json from the machine it trained on into {workdir}, or"
            " prepare its training data there."
        ) from err
    source = f"training dataset {config.data.dataset!r} in {data_dir}"
    log.warning(
        "%s has no %s (a run from before it was recorded): using the log-mel settings of its %s",
        workdir,
        FEATURES_FILE,
        source,
    )
    return mel, source

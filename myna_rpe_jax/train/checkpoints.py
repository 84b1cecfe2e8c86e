"""Orbax checkpoints of the train state, and loading an encoder for inference.

A workdir holds `config.json` (the run's full config), `checkpoints/<step>/` and, for each
resume with a changed config, `config.until_step<N>.json`: the config in force up to step N
(since the previous archive, if any).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"


def checkpoint_manager(workdir: str | Path, keep: int = 3, async_save: bool = True):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save
    )
    return ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints", options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    manager.save(step, args=ocp.args.StandardSave(state))


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None):
    """Restores into the structure, shapes and shardings of `abstract_state`."""
    step = manager.latest_step() if step is None else step
    return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, sub in tree.items() for k, v in _flatten(sub, f"{prefix}{key}.").items()}


def config_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """Dotted field name -> (old value, new value) for every field that differs (None: absent)."""
    old, new = _flatten(old), _flatten(new)
    return {
        key.rstrip("."): (old.get(key), new.get(key))
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    }


def write_config(
    workdir: str | Path, config: ml_collections.ConfigDict, step: int = 0
) -> dict[str, tuple[Any, Any]]:
    """Writes `config.json`; returns what changed from the one already there (see
    `config_changes`). On a resume at `step` > 0 with a changed config the old file is first
    kept as `config.until_step<step>.json`, unless that exists: then a resume at the same
    step already archived the config the steps up to it ran with (the file being replaced
    ran no checkpointed step), and it is kept."""
    path = Path(workdir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    changes = {}
    if path.exists():
        changes = config_changes(json.loads(path.read_text()), json.loads(text))
        archive = path.with_name(f"config.until_step{step}.json")
        if changes and step > 0 and not archive.exists():
            path.replace(archive)
    path.write_text(text)
    return changes


def read_config(workdir: str | Path) -> ml_collections.ConfigDict:
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: {workdir} is not a training workdir (train writes config.json"
            " and checkpoints/ there: python -m myna_rpe_jax.train --workdir=...)"
        )
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def load_params(workdir: str | Path, step: int | None = None) -> tuple[Any, int]:
    """The encoder parameters of a checkpoint (the latest if `step` is None), and its step.

    Restores without the optimiser's structure, so it works without knowing how the run was
    optimised, on any number of devices.
    """
    manager = checkpoint_manager(workdir, async_save=False)
    steps = manager.all_steps()
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {Path(workdir) / 'checkpoints'}")
    if step is None:
        step = max(steps)
    elif step not in steps:
        raise FileNotFoundError(f"no checkpoint at step {step} in {workdir}; have {sorted(steps)}")
    # The saved shardings name the training devices; land everything on one local device
    # instead, so a run trained on N accelerators loads anywhere.
    single = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    restored = manager.restore(step, args=ocp.args.StandardRestore(fallback_sharding=single))
    params = restored["params"] if isinstance(restored, dict) else restored.params
    return params, step

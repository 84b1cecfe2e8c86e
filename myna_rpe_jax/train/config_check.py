"""The whole training config checked before any data work, and the fields derived from it.

`checked_config(config)` is the first thing a training run does: a wrong model variant,
positional scheme, patchout fraction, loss or optimiser field, batch size, run length,
checkpoint count, chunk length, split, dataset or evaluator name stops the run in seconds with
a `ConfigError` naming the field, its value and what is valid, before a demo set or a frame
store is built.
It returns a copy with `model.max_time_patches` derived from `data.chunk_frames` (the learned
table's length: the longest training chunk in patches), which config.json records for
embedding. On several processes, `check_same_everywhere` then stops them all unless they run
one config (each host may have its own `data.data_dir`).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from myna_rpe_jax import failures
from myna_rpe_jax.data.audio import MelConfig
from myna_rpe_jax.data.datasets import DATASET_NAMES, SPLITS
from myna_rpe_jax.data.datasets.common import build_command, canonical_split
from myna_rpe_jax.data.demo import music
from myna_rpe_jax.errors import ConfigError
from myna_rpe_jax.model import positional, vit
from myna_rpe_jax.objectives.objective import Objective


def max_time_patches(chunk_frames, patch_size: int) -> int:
    """The time columns of the learned table: the longest chunk, in patches."""
    return max(chunk_frames) // patch_size


def _check_chunk_frames(data: ml_collections.ConfigDict, patch_size: int) -> tuple[int, ...]:
    chunk_frames = data.chunk_frames
    if isinstance(chunk_frames, int):
        chunk_frames = (chunk_frames,)
    try:
        chunk_frames = tuple(chunk_frames)
    except TypeError:
        chunk_frames = ()
    valid = all(isinstance(n, int) and n > 0 and n % patch_size == 0 for n in chunk_frames)
    if not chunk_frames or not valid:
        raise ConfigError(
            f"config.data.chunk_frames={data.chunk_frames!r}: expected one or more positive"
            f" frame counts, each a multiple of the patch size {patch_size} (whole patches),"
            " e.g. --config.data.chunk_frames='(256,)'"
        )
    return chunk_frames


def demo_track_frames(seconds: float) -> int:
    """Frames of every demo track: generated at music.SAMPLE_RATE, resampled to the prepared
    log-mel's rate (the default MelConfig; dsp.resample: ceil) and framed as audio.log_mel
    does."""
    mel = MelConfig()  # the demo set is prepared with it (datasets.builder.DEFAULT_MEL)
    rate = music.SAMPLE_RATE
    samples = -(-round(seconds * rate) * mel.sample_rate // rate)
    return 1 + samples // mel.hop_length


def _check_demo_chunks(data: ml_collections.ConfigDict) -> None:
    # A chunk as long as a track has one place in it, and a longer one is the track looped
    # from its start (data/chunks.py): both views of a pair are then the same frames, and a
    # batch of long loops can exhaust memory. On the demo set, whose track length is known,
    # such chunks are refused.
    frames = demo_track_frames(data.demo_seconds)
    if max(data.chunk_frames) >= frames:
        mel = MelConfig()  # the demo set's (demo_track_frames)
        seconds = max(data.chunk_frames) * mel.hop_length / mel.sample_rate
        raise ConfigError(
            f"config.data.chunk_frames={tuple(data.chunk_frames)!r}: the demo tracks"
            f" (config.data.demo_seconds={data.demo_seconds!r}) have {frames} frames each, and a"
            f" chunk as long as a track, or the track looped, gives both views the same frames:"
            f" use chunks shorter than {frames} frames or --config.data.demo_seconds > {seconds:g}"
        )


def _check_data(data: ml_collections.ConfigDict) -> None:
    if data.dataset not in DATASET_NAMES:
        raise ConfigError(
            f"config.data.dataset={data.dataset!r} is not a dataset; choose from"
            f" {', '.join(DATASET_NAMES)}"
        )
    parts = [canonical_split(part.strip()) for part in str(data.split).split("+")]
    unknown = [part for part in parts if part not in SPLITS]
    if unknown or len(set(parts)) != len(parts):
        raise ConfigError(
            f"config.data.split={data.split!r}: name each of {', '.join(SPLITS)} at most once,"
            " joined with '+' (e.g. 'train' or 'train+valid+test')"
        )
    folder = Path(data.data_dir).expanduser() if data.data_dir else None
    if data.dataset != "demo" and folder is not None and not folder.is_dir():
        raise ConfigError(
            f"config.data.data_dir={data.data_dir!r} does not exist: pass the folder the dataset"
            f" {data.dataset!r} was prepared in, or prepare it there first:"
            f" {build_command(data.dataset, data.data_dir)}"
        )
    for field in ("prefetch", "read_threads"):  # batches assembled ahead; threads reading them
        value = getattr(data, field)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"config.data.{field}={value!r} must be a whole number >= 1")
    if data.dataset == "demo":
        for field in ("demo_tracks", "demo_seconds"):
            if not getattr(data, field) > 0:
                raise ConfigError(f"config.data.{field}={getattr(data, field)!r} must be positive")
        _check_demo_chunks(data)


def _check_batch(config: ml_collections.ConfigDict) -> None:
    batch, devices = config.batch_size, jax.device_count()
    if not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"config.batch_size={batch!r} must be a positive whole number")
    if batch % devices:
        suggested = max(devices, batch // devices * devices)
        raise ConfigError(
            f"config.batch_size={batch} is not divisible by the {devices} devices: choose a"
            f" multiple of {devices}, e.g. --config.batch_size={suggested}"
        )
    meaning = {
        "total_steps": "0: train for config.epochs epochs",
        "epochs": "the run's length when config.total_steps is 0",
    }
    for field, means in meaning.items():
        value = getattr(config, field)
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"config.{field}={value!r} must be a whole number >= 0 ({means})")
    if not (config.total_steps > 0 or config.epochs > 0):
        raise ConfigError("config.total_steps or config.epochs must be positive")
    for field in ("log_every", "checkpoint_every"):
        if not getattr(config, field) > 0:
            raise ConfigError(f"config.{field}={getattr(config, field)!r} must be positive")
    keep = config.keep_checkpoints  # orbax's max_to_keep (run/checkpoints.py); None: keep all
    if keep is not None and (not isinstance(keep, int) or keep < 1):
        raise ConfigError(
            f"config.keep_checkpoints={keep!r} must be a whole number >= 1 (how many of the"
            " latest checkpoints are kept; None keeps all)"
        )


# Each field of config.optim (train/step.py's make_optimizer): when it is wrong, and what is
# valid. NaN and infinities are refused for all (`_check_optim`): a NaN learning rate used to
# pass and stop the run only after its data work and first eval.
_OPTIM_FIELDS = (
    ("learning_rate", lambda v: v <= 0, "> 0 (the peak of the schedule)"),
    ("weight_decay", lambda v: v < 0, ">= 0 (0: none)"),
    ("warmup_fraction", lambda v: v < 0 or v >= 1, "in [0, 1): the share of steps warming up"),
    ("b1", lambda v: v < 0 or v >= 1, "in [0, 1)"),
    ("b2", lambda v: v < 0 or v >= 1, "in [0, 1)"),
    ("grad_clip_norm", lambda v: v <= 0, "> 0 (the largest global gradient norm)"),
)


def _check_seeds(config: ml_collections.ConfigDict) -> None:
    """numpy seeds the data order and the demo set from them: it takes whole numbers >= 0."""
    seeds = {
        "config.seed": config.get("seed"),
        "config.data.demo_seed": config.data.get("demo_seed"),
    }
    for name, value in seeds.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise ConfigError(f"{name}={value!r} must be a whole number >= 0")


def _check_optim(optim: ml_collections.ConfigDict) -> None:
    for field, wrong, valid in _OPTIM_FIELDS:
        value = optim.get(field)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or wrong(value)
        ):
            raise ConfigError(f"config.optim.{field}={value!r} must be {valid}")


def _check_model(model: ml_collections.ConfigDict) -> None:
    try:
        encoder = vit.encoder_from_config(model)
    except ValueError as err:
        raise ConfigError(f"config.model: {err}") from err
    if encoder.width % encoder.num_heads:
        raise ConfigError(
            f"config.model: width {encoder.width} is not divisible by num_heads {encoder.num_heads}"
        )
    if not 0 < encoder.patchout_keep <= 1:
        raise ConfigError(
            f"config.model.patchout_keep={encoder.patchout_keep!r} must be in (0, 1]: the"
            " fraction of the patches a training view keeps (1: no patchout)"
        )
    head_dim = encoder.width // encoder.num_heads
    if "rope" in encoder.posemb and head_dim % 4:
        raise ConfigError(
            f"config.model: RoPE rotates two axes, so the head size (width / num_heads ="
            f" {head_dim}) must be a multiple of 4"
        )
    if "sinusoidal" in encoder.posemb and encoder.width % 4:
        raise ConfigError(
            f"config.model: the 2-D sinusoidal embedding needs width divisible by 4, got"
            f" {encoder.width}"
        )
    if encoder.n_mels % encoder.patch_size:
        raise ConfigError(
            f"config.model.n_mels={encoder.n_mels} is not a multiple of the patch size"
            f" {encoder.patch_size}"
        )
    _check_training_kernel(encoder)


def _check_training_kernel(encoder: vit.Encoder) -> None:
    # jit partitions the train step over the devices (its InfoNCE needs the global batch), and
    # XLA cannot partition a Pallas custom call: it would gather the global batch onto every
    # device and run all of it there. The embedder runs the kernel per device (shard_map).
    tokens = encoder.train_tokens(encoder.n_mels // encoder.patch_size)
    if encoder.attention_kernel == "pallas" and tokens > encoder.blockwise_threshold:
        raise ConfigError(
            f"config.model.attention_kernel='pallas' would run the fused kernel on training"
            f" views of {tokens} tokens (> model.blockwise_threshold={encoder.blockwise_threshold})"
            ", and the jit-partitioned train step would run the whole global batch on every"
            " device: train with attention_kernel='xla' (the kernel is for embedding long tracks:"
            " embed/probe --attention-kernel pallas) or raise model.blockwise_threshold"
        )


def _check_evals(config: ml_collections.ConfigDict) -> None:
    from myna_rpe_jax.embed.embedder import MODES, WHOLE_TRACK_MODES
    from myna_rpe_jax.probe.evaluate import PROBE_DATASETS

    every = config.get("eval_every", 0)
    if not isinstance(every, int) or every < 0:
        raise ConfigError(f"config.eval_every={every!r} must be a whole number >= 0 (0: never)")
    evals = config.get("evals")
    if evals is None:
        return
    unknown = [name for name in evals.datasets if name not in PROBE_DATASETS]
    if unknown:
        raise ConfigError(
            f"config.evals.datasets: {unknown} cannot be probed; choose from"
            f" {', '.join(PROBE_DATASETS)}"
        )
    modes = tuple(evals.modes)
    if not modes or any(mode not in MODES for mode in modes):
        raise ConfigError(f"config.evals.modes={modes!r}: list some of {', '.join(MODES)}")
    whole = [mode for mode in modes if mode in WHOLE_TRACK_MODES]
    if whole and every and evals.datasets and not positional.extrapolates(config.model.posemb):
        raise ConfigError(
            f"config.evals.modes {whole}: posemb {tuple(config.model.posemb)} cannot embed whole"
            " tracks (a learned absolute table); use --config.evals.modes='(\"chunks\",)'"
        )


def checked_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks every field a run uses before any data work; returns a copy with the derived
    `model.max_time_patches`. Raises ConfigError naming the field and what it expects."""
    try:
        _, patch_size = vit.parse_variant(config.model.variant)
    except ValueError as err:
        raise ConfigError(f"config.model.variant: {err}") from err
    chunk_frames = _check_chunk_frames(config.data, patch_size)
    derived = max_time_patches(chunk_frames, patch_size)
    given = config.model.get("max_time_patches")
    if given is not None and given != derived:
        raise ConfigError(
            f"config.model.max_time_patches={given} disagrees with config.data.chunk_frames"
            f" {chunk_frames}: it is derived from them (max(chunk_frames) // {patch_size} ="
            f" {derived}); drop the field from the config"
        )
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.data.chunk_frames = chunk_frames
        config.model.max_time_patches = derived
    _check_data(config.data)
    _check_model(config.model)
    _check_batch(config)
    _check_seeds(config)
    _check_optim(config.optim)
    _check_evals(config)
    try:
        Objective.from_config(config.loss, config.batch_size)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config.loss: {err}") from err
    return config


# Each host may read its own copy of the data; every other field must agree.
_HOST_FIELDS = ("data.data_dir",)


def _flat_fields(config: ml_collections.ConfigDict) -> dict[str, str]:
    """Every leaf field of `config` as dotted name -> its JSON, _HOST_FIELDS left out."""
    from myna_rpe_jax.run.checkpoints import flat_fields  # orbax: multi-host runs only

    fields = flat_fields(json.loads(config.to_json_best_effort()))
    return {
        name: json.dumps(value, sort_keys=True)
        for name, value in sorted(fields.items())
        if name not in _HOST_FIELDS
    }


def _digest(text: str) -> np.ndarray:
    return np.frombuffer(hashlib.blake2b(text.encode(), digest_size=8).digest(), np.uint8)


def config_mismatch(names: list[str], rows: np.ndarray) -> str:
    """'' when every process's field digests (rows [processes, fields, 8] uint8) equal process
    0's, else which processes differ, in which of the fields `names`."""
    return "; ".join(
        f"process {i} differs from process 0 in "
        + ", ".join(
            name for name, a, b in zip(names, rows[i], rows[0], strict=True) if (a != b).any()
        )
        for i in range(1, len(rows))
        if (rows[i] != rows[0]).any()
    )


def check_same_everywhere(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError on every process unless all run the same config, data_dir aside.
    A host started with another config.seed, say, would draw other batches and initialise
    other parameters, silently (a collective: every process calls it, after checked_config)."""
    if jax.process_count() == 1:
        return
    fields = _flat_fields(config)
    gather = lambda row: np.asarray(multihost_utils.process_allgather(row))
    # The field names first: rows of unequal length could not be gathered.
    if len({bytes(row) for row in gather(_digest("\n".join(fields)))}) > 1:
        problem = "the processes' configs have different fields (another version of the code?)"
    else:
        rows = gather(np.stack([_digest(value) for value in fields.values()]))
        problem = config_mismatch(list(fields), rows)
    if problem:
        raise failures.raised_everywhere(
            ConfigError(
                f"the processes run different configs ({problem}): start every process with"
                " the same --config and overrides (only config.data.data_dir may differ)"
            )
        )

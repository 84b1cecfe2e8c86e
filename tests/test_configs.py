"""Every shipped config builds its model and runs on its default data as it stands."""

import collections
import dataclasses
import importlib
import math
import pkgutil

import pytest
import scipy.stats
from absl import flags
from ml_collections import config_flags

import configs
from myna_rpe_jax.data.demo import music
from myna_rpe_jax.errors import ConfigError
from myna_rpe_jax.model import vit
from myna_rpe_jax.train import config_check

CONFIGS = sorted(name for _, name, _ in pkgutil.iter_modules(configs.__path__) if name != "common")


def test_every_config_is_found():
    assert {"alibi2d", "tiny", "myna", "rope"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_its_encoder_and_fits_its_batch_in_the_demo_train_split(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    vit.encoder_from_config(config.model)  # validates every model field
    assert config.data.dataset == "demo"
    data = config.data
    splits = collections.Counter(
        music.track_spec(i, data.demo_seed).split for i in range(data.demo_tracks)
    )
    # A batch never holds a track twice, so the train split must hold a whole batch.
    assert splits["train"] >= config.batch_size, (name, dict(splits), config.batch_size)


# ml_collections loads a config file with importlib's deprecated load_module().
@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
def test_every_model_setting_is_a_field_of_the_config_and_overridable_from_the_command_line():
    """configs/common.py lists every encoder setting (an override of a field it lacks is an
    error: `--config.model.alibi_tile_skip=True` was one), each takes a command-line value,
    and the encoder receives it."""
    from configs import common

    derived = {"parent", "name", "max_time_patches", "patch_size", *vit.VARIANTS["S"]}
    settings = {f.name for f in dataclasses.fields(vit.Encoder)} - derived
    assert settings <= set(common.get_config().model), settings - set(common.get_config().model)
    overrides = ["--config.model.alibi_tile_skip=True", "--config.model.length_scaling=True"]
    argv = ["train", f"--config={configs.__path__[0]}/tiny.py", *overrides]
    flag_values = flags.FlagValues()  # config_flags finds the overrides in argv, as absl's app
    config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    encoder = vit.encoder_from_config(flag_values.config.model)
    assert encoder.alibi_tile_skip is True and encoder.length_scaling is True
    default = vit.encoder_from_config(common.get_config().model)
    assert default.alibi_tile_skip is None and default.length_scaling is False


def test_the_default_demo_has_enough_test_tracks_to_read_key_and_genre_accuracy():
    """bash launch.sh probes configs/tiny.py's demo set: >= 8 test tracks of every key, and a
    95% interval on key or genre accuracy narrower than +-10 points even at 50%."""
    from configs import tiny

    data = tiny.get_config().data
    specs = [music.track_spec(i, data.demo_seed) for i in range(data.demo_tracks)]
    test = [spec for spec in specs if spec.split == "test"]
    per_key = collections.Counter(spec.key for spec in test)
    assert min(per_key[k] for k in range(24)) >= 8, per_key
    per_genre = collections.Counter(spec.genre for spec in test)
    assert set(per_genre) == set(music.DEMO_GENRES) and min(per_genre.values()) >= 8
    for split in ("train", "valid"):  # the key probe is fit on train, tuned on valid
        assert {spec.key for spec in specs if spec.split == split} == set(range(24)), split
    n = len(test)  # key and genre are both scored on every test track
    normal_half_width = 1.96 * math.sqrt(0.5 * 0.5 / n)
    wilson = scipy.stats.binomtest(n // 2, n).proportion_ci(0.95, method="wilson")
    exact = scipy.stats.binomtest(n // 2, n).proportion_ci(0.95, method="exact")
    assert normal_half_width < 0.10, n
    assert (wilson.high - wilson.low) / 2 < 0.10 and (exact.high - exact.low) / 2 < 0.10, n


@pytest.mark.parametrize("name", CONFIGS)
def test_config_passes_the_training_check_and_derives_the_table_length(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    checked = config_check.checked_config(config)  # 4 fake devices (conftest)
    assert checked.model.max_time_patches == max(config.data.chunk_frames) // 16
    assert "max_time_patches" not in config.model  # derived, not a field of the file


def test_myna_config_with_shorter_chunks_has_a_shorter_table():
    from configs import myna

    config = myna.get_config()
    config.data.chunk_frames = (96,)
    assert config_check.checked_config(config).model.max_time_patches == 6


def _tiny(**changes):
    from configs import tiny

    config = tiny.get_config()
    for dotted, value in changes.items():
        *parents, field = dotted.split("__")
        holder = config
        for parent in parents:
            holder = holder[parent]
        holder[field] = value
    return config


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(model__posemb=("alibi3d",)), r"config.model: unknown positional scheme"),
        (dict(model__posemb=("alibi1d", "alibi2d")), r"'alibi1d' and 'alibi2d' contradict"),
        (dict(model__variant="M/16"), r"config.model.variant: unknown model variant 'M/16'"),
        (dict(model__dtype="float16"), r"model.dtype must be one of"),
        (dict(data__chunk_frames=(100,)), r"chunk_frames=\(100,\): .* multiple of the patch"),
        (dict(data__chunk_frames=(0,)), r"chunk_frames=\(0,\)"),
        (dict(data__chunk_frames=()), r"chunk_frames=\(\)"),
        (dict(data__split="train+tset"), r"config.data.split='train\+tset'"),
        (dict(data__split="train+train"), r"config.data.split='train\+train'"),
        (dict(data__dataset="gtzam"), r"config.data.dataset='gtzam' is not a dataset"),
        (dict(data__demo_tracks=0), r"config.data.demo_tracks=0 must be positive"),
        (dict(data__prefetch=0), r"config.data.prefetch=0 must be a whole number >= 1"),
        (dict(data__read_threads=0), r"config.data.read_threads=0 must be a whole number >= 1"),
        (dict(batch_size=6), r"batch_size=6 is not divisible by the 4 devices"),
        (dict(batch_size=0), r"batch_size=0 must be a positive"),
        (dict(loss__name="simclr"), r"config.loss: "),
        (dict(log_every=0), r"config.log_every=0 must be positive"),
        (dict(total_steps=-5), r"config.total_steps=-5 must be a whole number >= 0 \(0: train"),
        (dict(epochs=-1), r"config.epochs=-1 must be a whole number >= 0"),
        (dict(keep_checkpoints=0), r"config.keep_checkpoints=0 must be a whole number >= 1"),
        (dict(optim__learning_rate=-1.0), r"config.optim.learning_rate=-1.0 must be > 0"),
        (dict(optim__learning_rate=0.0), r"config.optim.learning_rate=0.0 must be > 0"),
        (dict(optim__learning_rate=float("nan")), r"config.optim.learning_rate=nan must be > 0"),
        (dict(optim__b1=float("inf")), r"config.optim.b1=inf must be in \[0, 1\)"),
        (dict(seed=-1), r"config.seed=-1 must be a whole number >= 0"),
        (dict(data__demo_seed=-3), r"config.data.demo_seed=-3 must be a whole number >= 0"),
        (dict(optim__weight_decay=-1e-4), r"config.optim.weight_decay=-0.0001 must be >= 0"),
        (dict(optim__warmup_fraction=1.0), r"config.optim.warmup_fraction=1.0 must be in \[0, 1\)"),
        (dict(optim__b2=1.5), r"config.optim.b2=1.5 must be in \[0, 1\)"),
        (dict(optim__grad_clip_norm=0.0), r"config.optim.grad_clip_norm=0.0 must be > 0"),
        (dict(model__patchout_keep=0.0), r"config.model.patchout_keep=0.0 must be in \(0, 1\]"),
        (dict(model__patchout_keep=1.5), r"config.model.patchout_keep=1.5 must be in \(0, 1\]"),
        (
            dict(model__attention_kernel="pallas", model__blockwise_threshold=4),
            r"attention_kernel='pallas' would run the fused kernel on training views of \d+"
            r" tokens \(> model.blockwise_threshold=4\)",
        ),
        (
            dict(data__chunk_frames=(100000,)),
            r"chunk_frames=\(100000,\): the demo tracks \(config.data.demo_seconds=6.0\) have 601"
            r" frames each, .* shorter than 601 frames or --config.data.demo_seconds > 1000",
        ),
    ],
)
def test_training_check_names_the_wrong_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        config_check.checked_config(_tiny(**changes))


def test_an_explicit_table_length_that_disagrees_with_the_chunks_is_refused():
    config = _tiny()
    config.data.chunk_frames = (256,)
    config.model.max_time_patches = 16  # chunks of 256 frames = 16 patches: agrees
    assert config_check.checked_config(config).model.max_time_patches == 16
    config.data.chunk_frames = (96,)
    with pytest.raises(ConfigError, match=r"max_time_patches=16 disagrees .* = 6"):
        config_check.checked_config(config)


def test_rope_needs_a_head_size_divisible_by_four():
    config = _tiny(model__posemb=("rope",))
    config.model.width, config.model.num_heads = 24, 4  # head size 6
    with pytest.raises(ConfigError, match=r"head size .* = 6\) must be a multiple of 4"):
        config_check.checked_config(config)


def test_the_valid_edges_of_the_checked_ranges_pass(tmp_path):
    """total_steps 0 trains for config.epochs; None keeps every checkpoint; a chunk shorter
    than a demo track is allowed, one as long is not; on other data the track length is not
    known."""
    config_check.checked_config(_tiny(total_steps=0, epochs=2, keep_checkpoints=None))
    edges = dict(optim__warmup_fraction=0.0, optim__weight_decay=0.0, optim__b1=0.0)
    config_check.checked_config(_tiny(model__patchout_keep=1.0, **edges))
    config_check.checked_config(_tiny(model__attention_kernel="pallas"))  # views: dense
    assert config_check.demo_track_frames(6.0) == 601 and config_check.demo_track_frames(4.0) == 401
    config_check.checked_config(_tiny(data__chunk_frames=(96, 592)))  # < 601 frames
    with pytest.raises(ConfigError, match=r"chunk_frames=\(96, 608\)"):
        config_check.checked_config(_tiny(data__chunk_frames=(96, 608)))
    assert config_check.demo_track_frames(5.91) == 592  # a track exactly one chunk long
    with pytest.raises(ConfigError, match=r"have 592 frames each, .* shorter than 592 frames"):
        config_check.checked_config(_tiny(data__demo_seconds=5.91, data__chunk_frames=(592,)))
    other = _tiny(data__dataset="folder", data__data_dir=str(tmp_path), data__chunk_frames=(4096,))
    assert config_check.checked_config(other).model.max_time_patches == 256


def test_a_bad_patchout_fraction_is_a_config_error_before_any_data_work(tiny_config, tmp_path):
    """Exit 2 with one line, and no workdir: the check runs before the data and the run."""
    from tests.train.test_loop import overrides, run_train

    workdir = tmp_path / "run"
    proc = run_train(
        [f"--workdir={workdir}", "--config.model.patchout_keep=0", *overrides(tiny_config)]
    )
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, out
    assert "error: config.model.patchout_keep=0.0 must be in (0, 1]" in out
    assert not workdir.exists()


def test_resuming_with_another_model_says_so_in_a_short_message(tiny_config, tmp_path):
    """orbax's tree-mismatch error dumps both train states (~80 KB for ViT-S): the message
    keeps its first line and the first differing path, and what to do."""
    from myna_rpe_jax.train import loop

    loop.train(tiny_config, str(tmp_path), stop_after=1)
    tiny_config.model.depth = 3  # configs/tiny.py's encoder has 2 blocks
    with pytest.raises(ValueError) as raised:
        loop.train(tiny_config, str(tmp_path))
    message = str(raised.value)
    assert len(message) < 1000, len(message)
    assert "ShapeDtypeStruct" not in message
    assert message.startswith(f"the checkpoint at step 1 in {tmp_path}/checkpoints does not fit")
    assert "tree structures do not match: " in message and "block_2" in message
    assert "Resume with the config the run started with" in message
    assert "or train in a fresh --workdir" in message

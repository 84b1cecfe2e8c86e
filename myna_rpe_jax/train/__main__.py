"""Contrastive pretraining of the Myna-RPE encoder: the command line.

python -m myna_rpe_jax.train --config=configs/alibi2d.py --workdir=runs/alibi2d \
    [--config.total_steps=1000 --config.batch_size=256 ...]

See `loop.train` for what a run does and writes. A mistake in the config, its file or the
data prints one `error:` line and exits non-zero (2: the config, 1: the data or the run);
MYNA_RPE_DEBUG=1 shows the traceback (docs/troubleshooting.md).
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import re
import sys
import traceback
from pathlib import Path

# TensorFlow only reads the tfds files here: its C++ start-up notices are noise, and since TF
# 2.21 its oneDNN one is silenced only by turning oneDNN off (launch.sh does the same). Set
# before anything imports TensorFlow; a value the user set wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax  # noqa: E402
import ml_collections  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from myna_rpe_jax import distributed, errors, failures, files  # noqa: E402
from myna_rpe_jax.data.lock import build_lock  # noqa: E402
from myna_rpe_jax.errors import ConfigError  # noqa: E402
from myna_rpe_jax.train import config_check  # noqa: E402

# INFO records of these libraries say nothing a user acts on: orbax logs every save step by
# step, JAX that it found no TPU (on every machine without one), tfds each time it opens a
# dataset's info. Their warnings and errors stay.
_QUIET_AT_INFO = ("/orbax/", "/jax/_src/xla_bridge.py", "/tensorflow_datasets/")


def _worth_showing(record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or not any(
        part in record.pathname for part in _QUIET_AT_INFO
    )


# On absl's logger (orbax logs through it, from threads too) and on its handler (JAX logs
# through its own logger), at import: JAX looks for a TPU while the config file loads.
logging.get_absl_logger().addFilter(_worth_showing)
logging.get_absl_handler().addFilter(_worth_showing)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    try:
        config.get("seed")  # a config file that failed to load raises on first access
    except OSError as err:
        raise _config_file_error(err, sys.argv) from err
    except AttributeError:  # get_config() returned no dict at all: said just below
        pass
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"--config={_config_path(sys.argv)}: get_config() returned a"
            f" value of type {type(config).__name__}, not an ml_collections.ConfigDict: return"
            " configs.common.get_config(...) with your changes, as configs/alibi2d.py does"
        )
    if not _WORKDIR.value.strip():  # "--workdir=" would train into the current folder
        raise ConfigError("--workdir is empty: name the run's folder, e.g. --workdir=runs/alibi2d")
    distributed.maybe_initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    with failures.stop_together():  # one process failing stops all, with its message
        with failures.all_or_none("checking the config"):  # in seconds, before heavy imports
            config = config_check.checked_config(config)
            if problem := files.output_problem(_WORKDIR.value, "folder"):
                raise ConfigError(f"--workdir={_WORKDIR.value}: {problem}")
        config_check.check_same_everywhere(config)  # hosts: one config, data_dir aside
        from myna_rpe_jax.train import loop  # TensorFlow (clu, tfds) and the data machinery

        with _one_trainer(_WORKDIR.value):
            history = loop.train(config, _WORKDIR.value)
    if history and jax.process_index() == 0:
        logging.info("done: step %d, loss %.4f", history[-1]["step"], history[-1]["loss"])


def _one_trainer(workdir: str) -> contextlib.AbstractContextManager:
    """One training process per workdir: a second one started on it (say `bash launch.sh`
    twice) waits for the first, then resumes from its last checkpoint (nothing left to do
    when the first finished). A multi-host run's processes share the workdir by design."""
    if jax.process_count() > 1:
        return contextlib.nullcontext()
    return build_lock(Path(workdir).absolute() / "checkpoints", doing="being trained into")


_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/alibi2d.py; override fields with --config.x=y."
)


_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and summaries.")


_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "Multi-host: host:port of process 0 (not needed under SLURM)."
)


_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Multi-host: number of processes.")


_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "Multi-host: this process's index.")


def _flag_values(argv: list[str], prefix: str) -> list[str]:
    """The `--<prefix>...` arguments of argv, e.g. prefix "config." -> ["--config.x=1"]."""
    return [arg for arg in argv if arg.lstrip("-").startswith(prefix)]


def _config_path(argv: list[str]) -> str:
    """The config file the user gave, as absl reads it (the last of `--config=PATH` and
    `--config PATH`), or "?"."""
    given = "?"
    for arg, following in zip(argv, [*argv[1:], None], strict=True):
        name, has_value, value = arg.lstrip("-").partition("=")
        if arg.startswith("-") and name == "config":
            given = value if has_value else following or "?"
    return given


def _config_code_error(err: Exception, argv: list[str]) -> ConfigError | None:
    """A config file that Python cannot compile, or one without get_config(), as a
    ConfigError; None for other errors."""
    path = _config_path(argv)
    if isinstance(err, SyntaxError):
        where = f"line {err.lineno}: " if err.lineno else ""
        return ConfigError(f"--config={path}: {where}{err.msg}: the file is not valid Python")
    if isinstance(err, AttributeError) and "has no attribute 'get_config'" in str(err):
        return ConfigError(
            f"--config={path} has no get_config() function: a config file defines"
            " get_config() returning an ml_collections.ConfigDict (see configs/alibi2d.py)"
        )
    return None


def _config_file_error(err: OSError, argv: list[str]) -> ConfigError:
    """ml_collections' "failed loading config file" (first access or an override), reworded."""
    while err.__cause__ is not None:  # the innermost reason: "[Errno 2] No such file ..."
        err = err.__cause__
    reason = str(err).strip().splitlines()[-1].strip()
    # The file that failed, as the reason names it: with --config given twice, absl loads
    # each one as it parses, so the first can fail while the last is fine.
    named = re.search(r"No such file or directory: '(.+)'$", reason)
    path = named.group(1) if named else _config_path(argv)
    return ConfigError(
        f"--config={path}: cannot load the config file ({reason}). Expected a Python file"
        " with get_config(), relative to the current folder, e.g. --config=configs/alibi2d.py"
    )


def _unknown_field_error(err: Exception, argv: list[str]) -> ConfigError:
    """ml_collections' AttributeError/KeyError for an override of a field that does not exist."""
    text = str(err).replace("\\n", "\n").replace("\\'", "'")
    names = re.findall(r"'(\w+)'", text)
    hint = re.search(r"Did you mean \"(\w+)\"", text)
    name = names[0] if names else "?"
    overrides = [arg.split("=", 1)[0] for arg in _flag_values(argv, "config.")]
    flag = next((o for o in overrides if name in o.split(".")), f"--config...{name}")
    suggestion = f' Did you mean "{hint.group(1)}"?' if hint else ""
    return ConfigError(
        f"{flag}: {_config_path(argv)} has no field {name!r}.{suggestion} Fields are"
        " named as in the config file (configs/common.py lists them all)."
    )


def run(argv: list[str]) -> int:
    """`app.run(main)` with the user's mistakes as one line on stderr; the exit status. A
    process of a multi-process run that failed exits here at once (`failures`)."""
    flags.mark_flags_as_required(["config", "workdir"])
    try:
        code = _run(argv)
    except Exception:  # a bug: its traceback, as Python would print it, and exit 1
        traceback.print_exc()
        code = 1
    return failures.exit_if_failed(code)


def _run(argv: list[str]) -> int:
    try:
        app.run(main, argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 0 if done.code is None else 1
    except (AttributeError, KeyError, SyntaxError) as err:
        if flags.FLAGS.is_parsed():  # raised by the run, not by an override: a bug
            raise
        return errors.report(_config_code_error(err, argv) or _unknown_field_error(err, argv))
    except OSError as err:  # a missing config file; in the run: data or workdir not found
        return errors.report(err if flags.FLAGS.is_parsed() else _config_file_error(err, argv))
    except (errors.UserError, ValueError) as err:  # config, data, checkpoint, NaN stop
        return errors.report(err)
    except KeyboardInterrupt:  # Ctrl-C: the last checkpoint saved is intact
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv))

"""Errors a user can fix, and how every command line reports them: one line, no traceback.

A command's `main` runs under `run_cli` (argparse commands) or `report` (the absl train
command): an expected error prints `error: <message>` to stderr and exits non-zero (Ctrl-C:
`error: interrupted`, 130); the traceback is shown only with MYNA_RPE_DEBUG=1
(docs/troubleshooting.md). An unexpected exception (a bug) keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

DEBUG_ENV = "MYNA_RPE_DEBUG"


class UserError(Exception):
    """A mistake the user can fix; the message says which file or field, what was expected
    and what to do. `exit_code` is the command's exit status (2: a wrong config or flag)."""

    exit_code = 1


class ConfigError(UserError, ValueError):
    """A config field (or the config file) is wrong: found before any data work."""

    exit_code = 2


def debug() -> bool:
    """Whether MYNA_RPE_DEBUG asks for tracebacks (any value but "", "0", "false")."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def report(error: BaseException) -> int:
    """Prints `error: <message>` (and the debug hint for non-UserErrors) to stderr; returns
    the exit status. Re-raises `error` when debugging."""
    if debug():
        raise error
    message = str(error).strip() or type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    if not isinstance(error, UserError):
        print(f"(set {DEBUG_ENV}=1 to see where it was raised)", file=sys.stderr)
    return getattr(error, "exit_code", 1)


def run_cli(
    main: Callable[[], int | None],
    expected: tuple[type[BaseException], ...] = (),
    interrupted: str = "",
) -> int:
    """Runs a command's `main()`; a UserError or an `expected` exception becomes one line on
    stderr and a non-zero status instead of a traceback. Ctrl-C is `error: interrupted`
    (then `interrupted`, what was kept and how to go on), status 130 as a shell gives.
    Returns the exit status."""
    try:
        return main() or 0
    except (UserError, *expected) as error:
        return report(error)
    except KeyboardInterrupt:
        if debug():
            raise
        print(f"error: interrupted{'; ' if interrupted else ''}{interrupted}", file=sys.stderr)
        return 130

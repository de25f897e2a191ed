"""What every `crisis` command shares: the bounds on its Prefect API calls, a quiet console while a flow runs, and
one line (with its exit code) for a failed run. Imported by cli.py and the *_cli.py modules, never the reverse."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import TypedDict

from rich.console import Console

from prefect_crisis.core.errors import CrisisError, ExitCode

console = Console(highlight=False)


class CallBounds(TypedDict):
    """`use_stack`'s bounds on each Prefect API call: seconds per request, retries after the first try."""

    request_timeout: float
    max_retries: int


# Bounds on every Prefect API call a command makes, for this CLI's process only (Prefect's
# defaults, 60 s and 5 retries with back-off, make a frozen server look like minutes of silence).
LONG_COMMAND: CallBounds = {
    "request_timeout": 20.0,
    "max_retries": 3,
}  # demo, train, validate: flows with many calls; a busy SQLite server answers 503 for seconds
SHORT_COMMAND: CallBounds = {"request_timeout": 5.0, "max_retries": 0}  # stop, resume: one or two calls, never a hang


@contextmanager
def quiet_console(level: int = logging.WARNING):
    """Keep Prefect's INFO run logs off the terminal (they still go to the runs); print the story instead."""
    from prefect_crisis.core.prefect_compat import prefect_console_handlers

    handlers = prefect_console_handlers()
    previous = [handler.level for handler in handlers]
    for handler in handlers:
        handler.setLevel(level)
    try:
        yield
    finally:
        for handler, old in zip(handlers, previous, strict=True):
            handler.setLevel(old)


def failure(state) -> BaseException | None:
    """The exception a Failed flow-run state holds, if any."""
    error = state.result(raise_on_failure=False)
    return error if isinstance(error, BaseException) else None


def exit_for_failure(state) -> None:
    """One line for a failed run and the exit code of its kind of error."""
    error = failure(state)
    if isinstance(error, CrisisError):
        raise error  # main() prints it as one line with its exit code
    console.print(f"[red]error:[/red] {state.name}: {state.message}", soft_wrap=True)
    sys.exit(ExitCode.FAILURE)

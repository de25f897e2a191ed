"""Run logs that show an expected error as one line.

Prefect logs every exception that leaves a task or a flow with its traceback.
For a `CrisisError` (bad input, a missing block, a rejected contract) the
traceback says nothing the one-line message does not, and it buries it; for a
bug it is what a developer needs. `quiet_expected_errors` installs a logging
filter on Prefect's flow- and task-run loggers that drops the traceback of
records whose exception is a `CrisisError`, keeping the line itself (so the
run's logs in the UI still say what went wrong). `CRISIS_DEBUG=1` keeps every
traceback.
"""

from __future__ import annotations

import logging
import os

from prefect_crisis.core.errors import CrisisError

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def debug_enabled() -> bool:
    """True when `CRISIS_DEBUG` asks for the tracebacks of expected errors too."""
    return os.environ.get("CRISIS_DEBUG", "").lower() in {"1", "true", "yes"}


class ExpectedErrorFilter(logging.Filter):
    """Drop the traceback of a log record whose exception is a `CrisisError`."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, CrisisError) and not debug_enabled():
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_expected_errors() -> None:
    """Install the filter on Prefect's run loggers, once per process."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, ExpectedErrorFilter) for existing in logger.filters):
            logger.addFilter(ExpectedErrorFilter())

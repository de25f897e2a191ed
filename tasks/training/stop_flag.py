"""The stop flag of a model: a Prefect Variable that running training polls.

Raising it halts training of that model at its next mini-batch; the emergency
response raises it, `crisis stop` and `crisis resume` raise and lower it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import cast

from prefect.variables import Variable


def stop_flag_name(model: str) -> str:
    """Name of the model's stop-flag Variable."""
    return "crisis-stop-" + re.sub(r"[^a-z0-9_-]+", "-", model.lower()).strip("-")


def set_stop_flag(model: str, reason: str, by: str = "crisis stop") -> None:
    """Raise the stop flag: running training of `model` halts at its next mini-batch."""
    value = {"reason": reason, "by": by, "at": datetime.now(UTC).isoformat()}
    Variable.set(stop_flag_name(model), value, overwrite=True)


def clear_stop_flag(model: str) -> bool:
    """Lower the stop flag; True if it was raised."""
    return cast(bool, Variable.unset(stop_flag_name(model)))  # sync code: Prefect's sync-compatible unset returns the bool


def read_stop_flag(model: str) -> str | None:
    """The flag's reason, or None when training may run."""
    value = Variable.get(stop_flag_name(model), default=None)
    if value is None:
        return None
    return value.get("reason", "stop flag set") if isinstance(value, dict) else str(value)

"""What a caller who is not an administrator may ask of a submit: its priority, and how
far ahead its ``run_at`` may be.

A priority puts a task ahead of every other user's waiting tasks, so by default only
administrators set one; ``allowed_priorities`` and ``max_client_priority`` open it to
everyone within bounds. ``run_at`` is bounded by ``max_run_at_delay`` (default 30 days)
so that no one parks work in the queue for years. Refusals are 422s naming the field.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..errors import ConfigurationError

DEFAULT_MAX_RUN_AT_DELAY = timedelta(days=30)


@dataclass(frozen=True)
class ClientLimits:
    allowed_priorities: frozenset[int] | None = None
    max_client_priority: int | None = None
    #: Seconds ``run_at`` may be ahead of now (None: no limit).
    max_run_at_delay: float | None = DEFAULT_MAX_RUN_AT_DELAY.total_seconds()

    @classmethod
    def of(
        cls,
        allowed_priorities: Collection[int] | None,
        max_client_priority: int | None,
        max_run_at_delay: timedelta | float | None,
    ) -> ClientLimits:
        """The limits from ``task_api``'s options, checked."""
        allowed = None
        if allowed_priorities is not None:
            allowed = frozenset(allowed_priorities)
            if any(isinstance(p, bool) or not isinstance(p, int) for p in allowed):
                raise ConfigurationError("allowed_priorities must be integers")
        if max_client_priority is not None and (
            isinstance(max_client_priority, bool) or not isinstance(max_client_priority, int)
        ):
            raise ConfigurationError("max_client_priority must be an integer or None")
        delay = None
        if max_run_at_delay is not None:
            delay = (
                max_run_at_delay.total_seconds()
                if isinstance(max_run_at_delay, timedelta)
                else float(max_run_at_delay)
            )
            if delay < 0:
                raise ConfigurationError("max_run_at_delay must not be negative")
        return cls(allowed, max_client_priority, delay)

    def refusals(
        self, priority: int | None, run_at: datetime | None, now: float
    ) -> list[dict[str, Any]]:
        """Why a submit with this ``priority`` and ``run_at`` is refused (none: it is
        not), as problem details' errors."""
        errors: list[dict[str, Any]] = []
        if priority is not None:
            allowed, top = self.allowed_priorities, self.max_client_priority
            if allowed is None and top is None:
                errors.append({"loc": ["priority"], "msg": "only administrators set a priority"})
            elif allowed is not None and priority not in allowed:
                listed = ", ".join(str(p) for p in sorted(allowed))
                errors.append({"loc": ["priority"], "msg": f"must be one of {listed}"})
            elif top is not None and priority > top:
                errors.append({"loc": ["priority"], "msg": f"must be at most {top}"})
        delay = self.max_run_at_delay
        if run_at is not None and delay is not None and run_at.timestamp() - now > delay:
            errors.append({"loc": ["run_at"], "msg": f"must be at most {_span(delay)} from now"})
        return errors


def _span(seconds: float) -> str:
    """``seconds`` for people: whole days when it is some, else seconds."""
    if seconds >= 86400 and seconds % 86400 == 0:
        days = int(seconds // 86400)
        return f"{days} day{'s' if days != 1 else ''}"
    return f"{seconds:.0f} seconds"

"""The errands exception hierarchy.

Every exception the library raises on purpose derives from :class:`ErrandsError`.
Each subclass's docstring is its default message, and every message is safe to show
to an end user: no SQL, no paths, no tracebacks.
"""

from __future__ import annotations

from typing import Any


class ErrandsError(Exception):
    """An errands operation failed."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (type(self).__doc__ or "").strip()
        super().__init__(self.message)


class ConfigurationError(ErrandsError):
    """errands is not configured correctly."""


class UnknownTask(ErrandsError, LookupError):
    """No task is registered under this name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no task is registered under the name {name!r}")


class InvalidPayload(ErrandsError, ValueError):
    """The payload does not match the task's schema."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        #: pydantic-style error entries: ``{"loc": [...], "msg": ..., "type": ...}``.
        self.errors = errors or []
        super().__init__(message)


class PayloadTooLarge(InvalidPayload):
    """The payload is larger than the configured limit."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"the payload is {size} bytes; the limit is {limit} bytes")


class TaskNotFound(ErrandsError, LookupError):
    """Task not found."""

    # The message never names the id or the owner: a task that belongs to someone else
    # must look exactly like one that does not exist.


class ScheduleNotFound(ErrandsError, LookupError):
    """Schedule not found."""

    # As for tasks: someone else's schedule looks exactly like a missing one.


class InvalidSchedule(ErrandsError, ValueError):
    """The schedule is not valid."""

    def __init__(self, field: str, message: str) -> None:
        #: The argument (or JSON field) at fault: "cron", "every", "timezone", "name",
        #: "payload", "owner" or "schedules" (the owner's limit).
        self.field = field
        super().__init__(f"{field}: {message}")


class IdempotencyConflict(ErrandsError):
    """This idempotency key was used before for a different request (another task
    name or payload)."""


class InvalidTransition(ErrandsError):
    """The task is not in a state that allows this change."""


class WaitTimeout(ErrandsError, TimeoutError):
    """The task did not finish in time."""

    def __init__(self, record: Any = None) -> None:
        #: The last record seen before the wait gave up.
        self.record = record
        super().__init__()


class DatabaseUnavailable(ErrandsError):
    """The database cannot be reached or is not answering; try again shortly."""

    # Connection refused or lost, the server shutting down or starting up, SQLite's
    # write lock still held after the wait. The driver's error is the ``__cause__``.


class StorageFull(ErrandsError):
    """The database has no space left."""

    # SQLite's "database or disk is full", PostgreSQL's disk_full (SQLSTATE 53100).
    # Nothing was written; the same call succeeds once space is freed. The driver's
    # error is the ``__cause__``.


class TaskTimeout(ErrandsError, TimeoutError):
    """The task ran longer than its timeout."""


class TaskCancelled(ErrandsError):
    """The task was cancelled."""


class Retry(ErrandsError):
    """Raised by a task function to ask for another attempt.

    ``delay`` (seconds) overrides the task's backoff for this retry. The retry counts as
    an attempt: when the attempts are spent the task ends ``failed``.
    """

    def __init__(self, delay: float | None = None, message: str | None = None) -> None:
        if delay is not None and delay < 0:
            raise ValueError("Retry delay must not be negative")
        self.delay = delay
        super().__init__(message or "the task asked to be retried")


class TaskFailed(ErrandsError):
    """The task failed.

    Raise it from a task function with a message meant for the task's owner: it ends the
    attempt like any exception, and its message is what the user sees. Other exceptions
    are shown by type only (their text may hold internal details); their tracebacks go
    to ``error_detail`` for administrators.

    ``retry=False`` says another attempt cannot help (bad input, say): the task ends
    ``failed`` at once, whatever attempts remain.
    """

    def __init__(self, message: str | None = None, *, retry: bool = True) -> None:
        #: False: fail the task now instead of retrying it.
        self.retry = retry
        super().__init__(message)

"""What callers get back: the task record and its parts.

A :class:`TaskRecord` is an immutable snapshot of one row of ``errands_task``. Every
change to the row bumps ``version``, so two snapshots with the same id and version are
the same state.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic_core import to_jsonable_python


class Status(enum.StrEnum):
    """The states of a task record. See the status machine in docs/design.md."""

    #: Waiting for a worker (first run, or a retry waiting for its backoff).
    QUEUED = "queued"
    #: A worker holds the task's lease and runs it.
    RUNNING = "running"
    #: Finished; ``result`` holds the return value.
    SUCCEEDED = "succeeded"
    #: Finished with an error (attempts spent, timeout, worker lost); see ``error``.
    FAILED = "failed"
    #: Cancelled before or while running.
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})


def storable_json(value: Any) -> Any:
    """``value`` as the JSON a record stores (payloads, results, outputs): converted like
    pydantic converts (dataclasses, datetimes, …), and checked to be strict JSON —
    NaN and infinities are refused (``ValueError``), as PostgreSQL refuses them."""
    converted = to_jsonable_python(value)
    _check_finite(converted)
    return converted


def _check_finite(value: Any) -> None:
    """Raise ``ValueError`` for a NaN or an infinity anywhere in a JSON-ready value."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("NaN and infinity are not JSON")
    elif isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            _check_finite(item)


def storable_text(text: str) -> str:
    """Text as a record's text columns keep it on every database: PostgreSQL refuses
    NUL characters in text, so they become U+FFFD (the replacement character)."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A value kept in the blob store, as the store reads it from its row (see
    ``errands.blobs``; the app's reads replace it with the value)."""

    key: str


@dataclass(frozen=True, slots=True)
class Progress:
    current: float | None = None
    total: float | None = None
    message: str | None = None

    @property
    def percent(self) -> float | None:
        """0–100 when both current and total are known, else None."""
        if self.current is None or not self.total:
            return None
        return max(0.0, min(100.0, 100.0 * self.current / self.total))


@dataclass(frozen=True, slots=True)
class TaskError:
    """A user-safe description of why a task failed (never a traceback)."""

    type: str
    message: str


#: The error a cancelled task's record carries.
CANCELLED_ERROR = TaskError("TaskCancelled", "The task was cancelled.")


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: str
    owner: str
    name: str
    payload: Any
    status: Status
    progress: Progress
    result: Any
    error: TaskError | None
    attempts: int
    max_attempts: int
    priority: int
    run_at: datetime
    cancel_requested: bool
    version: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    #: The traceback of the last failure: for administrators only, never shown to users.
    error_detail: str | None = field(default=None, repr=False)
    #: The task's output is its current attempt's items, whose sequence numbers are
    #: above this (0 until a task runs a second time; see "Attempts" in the README).
    output_floor: int = 0
    #: A task a schedule created: the schedule's id and the tick it was created for.
    schedule_id: str | None = None
    scheduled_for: datetime | None = None
    #: A part of a group: the group's id and the part's place (0-based; the group's
    #: ``then`` task comes after the last part).
    parent_id: str | None = None
    group_index: int | None = None
    #: A group's own record: its number of parts (None for any other task).
    group_size: int | None = None

    @property
    def is_group(self) -> bool:
        return self.group_size is not None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def eta_seconds(self, now: datetime) -> float | None:
        """Seconds until a running task finishes, from its average rate since it
        started; None when that cannot be told (no progress, no total, not running)."""
        p = self.progress
        if self.status is not Status.RUNNING or self.started_at is None:
            return None
        if not p.current or not p.total or p.current <= 0 or p.current > p.total:
            return None
        elapsed = (now - self.started_at).total_seconds()
        if elapsed <= 0:
            return None
        return round(elapsed * (p.total - p.current) / p.current, 1)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule: a task of ``name`` with ``payload`` created for ``owner`` on every
    tick of ``cron`` (in ``timezone``) or every ``every``. Schedules declared in code
    (``app.schedule``) have a ``code_key``; users' schedules have none."""

    id: str
    owner: str
    name: str
    payload: Any
    cron: str | None
    every: timedelta | None
    timezone: str
    paused: bool
    #: The next tick (None while paused).
    next_run_at: datetime | None
    #: The task the last tick created, and that tick.
    last_task_id: str | None
    last_run_at: datetime | None
    created_at: datetime
    updated_at: datetime
    code_key: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """A record that changed: enough to tell subscribers which version to read."""

    task_id: str
    owner: str
    version: int
    status: Status

    @classmethod
    def of(cls, record: TaskRecord) -> Change:
        return cls(record.id, record.owner, record.version, record.status)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing, newest first. Pass ``next_cursor`` to get the next page."""

    items: list[TaskRecord]
    next_cursor: str | None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class OutputPage:
    """Items of a task's current attempt, with the attempt's output floor: its items
    are numbered above ``floor``. A reader that holds items at or below it (read during
    an earlier attempt) drops them: the task's output is its current attempt's."""

    floor: int
    items: list[tuple[int, Any]]


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """A lifecycle event seen in this process (see ``Errands.observers``)."""

    #: "submitted", "started" or "finished" (an attempt ended; ``status`` says how:
    #: ``queued`` means it will be retried).
    kind: str
    task_id: str
    name: str
    status: Status
    #: Seconds the attempt ran (for "finished").
    seconds: float | None = None

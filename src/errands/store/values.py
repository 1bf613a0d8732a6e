"""The typed values the store's drivers take and return (see ``store/driver.py``).

Times are Unix seconds (floats) unless a field says otherwise; JSON values are what
``json.dumps`` accepts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..records import Progress, Status, TaskRecord
from .codec import utc

#: (current, total, message) of a task's progress.
ProgressValue = tuple[float | None, float | None, str | None]


@dataclass(frozen=True, slots=True)
class NewTask:
    """A record to insert, with the job that queues its work."""

    id: str
    owner: str
    name: str
    payload: Any
    #: The payload as compact JSON text (encoded once, when it was checked).
    payload_json: str
    max_attempts: int
    priority: int
    #: When it may start, and when it was submitted.
    run_at: float
    created_at: float
    #: Idempotent submit: the caller's key and a hash of (name, payload).
    idempotency_key: str | None = None
    request_hash: str | None = None
    #: Unique tasks: a hash of (name, payload).
    unique_key: str | None = None
    #: A schedule's tick: the schedule and the tick's time (one task per tick).
    schedule_id: str | None = None
    scheduled_for: float | None = None

    @property
    def keyed(self) -> bool:
        """Does it carry a key a unique index holds (idempotency, unique, tick)?"""
        return (
            self.idempotency_key is not None
            or self.unique_key is not None
            or self.schedule_id is not None
        )


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job handed to a worker, with what it needs to run it."""

    task_id: str
    name: str
    owner: str
    payload: Any
    attempt: int
    max_attempts: int
    version: int
    cancel_requested: bool
    #: The attempt's output floor: its items are numbered from ``output_floor + 1``, and
    #: its writes are fenced by it (see ``store/driver.py``).
    output_floor: int = 0
    #: A part of a group: the group's id (its end, progress and items reach the group).
    parent_id: str | None = None


@dataclass(frozen=True, slots=True)
class OutputItem:
    """One item a running attempt emitted; ``ref`` names it in the blob store when it
    is too large for the row (``data`` is then None)."""

    task_id: str
    seq: int
    data: Any
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """What a running attempt reports between outcomes: its newest progress, or None
    when it only emitted items (its record then just gets a new version, so live views
    learn of the items)."""

    task_id: str
    #: The attempt's output floor (its fencing token).
    floor: int
    progress: ProgressValue | None = None


@dataclass(slots=True)
class Outcome:
    """How one attempt ended, as the worker reports it.

    ``status`` is terminal, or ``queued`` for a retry at ``retry_at`` (Unix seconds).
    ``progress`` is the final (current, total, message), or None to leave it as it is.
    """

    task_id: str
    status: Status
    result: Any = None
    error_type: str | None = None
    error_message: str | None = None
    error_detail: str | None = None
    progress: ProgressValue | None = None
    expires_at: datetime | None = None
    retry_at: float | None = None
    #: The key of a result kept in the blob store (``result`` is then None), and its
    #: bytes until they are stored there.
    result_ref: str | None = None
    blob: bytes | None = None
    #: The attempt's output floor (its fencing token; 0 for a task's first run).
    floor: int = 0


@dataclass(frozen=True, slots=True)
class Carrier:
    """Notifications a write sends from inside its own statement, where the database can
    (PostgreSQL's ``pg_notify``): they leave when the transaction commits — never
    without it, and without a round trip or a thread of their own. A notifier that can
    be carried makes one (``Notifier.carrier``); a driver that cannot carry leaves it.

    ``messages`` are sent as they are, (channel, payload) each. With ``changes`` =
    (channel, prefix), the records the statement writes are sent too: on that channel,
    ``prefix`` followed by a JSON array of ``[id, owner, version, status]`` rows, at
    most ``chunk`` rows per notification."""

    messages: tuple[tuple[str, str], ...] = ()
    changes: tuple[str, str] | None = None
    chunk: int = 60


# The tasks of one submit share their times: each is converted once.
_stamp = functools.lru_cache(maxsize=64)(utc)


def record_of(task: NewTask) -> TaskRecord:
    """The record a new task reads as once inserted."""
    stamp = _stamp(task.created_at)
    return TaskRecord(
        id=task.id,
        owner=task.owner,
        name=task.name,
        payload=task.payload,
        status=Status.QUEUED,
        progress=Progress(),
        result=None,
        error=None,
        attempts=0,
        max_attempts=task.max_attempts,
        priority=task.priority,
        run_at=_stamp(task.run_at),
        cancel_requested=False,
        version=1,
        created_at=stamp,
        updated_at=stamp,
        started_at=None,
        finished_at=None,
        expires_at=None,
        schedule_id=task.schedule_id,
        scheduled_for=None if task.scheduled_for is None else _stamp(task.scheduled_for),
    )

"""The errands tables.

``errands_task`` keeps every record and grows; ``errands_job`` holds only work that
still has to run or is running, so claims scan a table that stays small however much
history accumulates; ``errands_output`` keeps the items a task emits while it runs;
``errands_worker`` lists the workers that are alive (each updates its row every
heartbeat interval).

Times in ``errands_task`` are timezone-aware UTC datetimes (host applications query and
join this table). Times in the internal ``errands_job`` table are Unix seconds (float):
claims compare them on every poll, and a number is the cheapest thing to compare.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime stored as UTC and always returned timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("errands stores timezone-aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        parse = super().result_processor(dialect, coltype)
        if parse is None or dialect.name != "sqlite":
            return parse

        def process(value: Any) -> Any:
            # A connection that parses declared types (Django's, borrowed for a
            # submit in its transaction) gives datetimes, not the text SQLite holds.
            if isinstance(value, datetime):
                return self.process_result_value(value, dialect)
            return parse(value)

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


metadata = MetaData()

ID = String(36)
_ACTIVE_UNIQUE = "unique_key IS NOT NULL AND status IN ('queued', 'running')"
_WAITING = "lease_owner IS NULL"


def _partial_index(name: str, *columns: Any, where: str, unique: bool = False) -> Index:
    """An index of the rows for which ``where`` holds, on SQLite and PostgreSQL alike."""
    return Index(
        name, *columns, unique=unique, sqlite_where=text(where), postgresql_where=text(where)
    )


task_table = Table(
    "errands_task",
    metadata,
    Column("id", ID, primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("progress_current", Float),
    Column("progress_total", Float),
    Column("progress_message", Text),
    Column("result", JSON),
    Column("error_type", String(255)),
    Column("error_message", Text),
    Column("error_detail", Text),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("run_at", UTCDateTime, nullable=False),
    Column("cancel_requested", Boolean, nullable=False, server_default=text("false")),
    Column("version", Integer, nullable=False, server_default=text("1")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("expires_at", UTCDateTime),
    # Idempotent submit: the caller's key, and a hash of (name, payload) to tell a
    # replay from a different request under the same key. Unique tasks: a hash of
    # (name, payload), set for tasks declared unique=True.
    Column("idempotency_key", String(255)),
    Column("request_hash", String(64)),
    Column("unique_key", String(64)),
    # A result too large for the row: its key in the blob store (``result`` is NULL).
    Column("result_ref", String(255)),
    # The task's output is its current attempt's: items with ``seq`` above this floor.
    # Each claim of a task that ran before raises it past every item stored so far, so
    # it also identifies the attempt that holds the lease (its writes are fenced by it).
    Column("output_floor", Integer, nullable=False, server_default=text("0")),
    # A task a schedule created: the schedule and the tick it was created for. The
    # unique index makes one task per tick, whatever the number of workers firing it.
    Column("schedule_id", ID),
    Column("scheduled_for", UTCDateTime),
    # Groups (``app.submit_group``): a part's group and its place in it (the group's
    # ``then`` task is placed after the last part); on the group's own record, its
    # number of parts, how many have succeeded, and the ``then`` task's name.
    Column("parent_id", ID),
    Column("group_index", Integer),
    Column("group_size", Integer),
    Column("group_done", Integer),
    Column("group_then", String(255)),
    # Ids are time-ordered, so (owner, id) serves "my tasks, newest first".
    Index("ix_errands_task_owner_id", "owner", "id"),
    Index("ix_errands_task_status_id", "status", "id"),
    # Live views poll "what changed since t" (one query for all of a process's watchers).
    Index("ix_errands_task_updated_at", "updated_at"),
    # One record per owner and idempotency key, for as long as the record exists.
    _partial_index(
        "ux_errands_task_idempotency",
        "owner",
        "idempotency_key",
        unique=True,
        where="idempotency_key IS NOT NULL",
    ),
    # One queued or running task per owner and unique key: a finished one leaves it.
    _partial_index(
        "ux_errands_task_unique", "owner", "unique_key", unique=True, where=_ACTIVE_UNIQUE
    ),
    _partial_index("ix_errands_task_expires_at", "expires_at", where="expires_at IS NOT NULL"),
    # A group's parts in order (its children listing, its results), and its running
    # parts (its progress: never a scan of every part).
    _partial_index(
        "ix_errands_task_parent", "parent_id", "group_index", where="parent_id IS NOT NULL"
    ),
    _partial_index(
        "ix_errands_task_parent_running",
        "parent_id",
        where="parent_id IS NOT NULL AND status = 'running'",
    ),
    _partial_index(
        "ux_errands_task_tick",
        "schedule_id",
        "scheduled_for",
        unique=True,
        where="schedule_id IS NOT NULL",
    ),
)

job_table = Table(
    "errands_job",
    metadata,
    Column("task_id", ID, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("owner", String(255), nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("run_at", Float, nullable=False),
    Column("attempt", Integer, nullable=False, server_default=text("0")),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", Float),
    # The job's place in the rotation between owners (see docs/design.md, "Fair claims").
    Column("turn", BigInteger, nullable=False, server_default=text("0")),
    # Engines that hand jobs to a broker (Celery): when the job was last published
    # (a job waiting with no publication since its run_at is published again).
    Column("sent_at", Float),
    # Available jobs in claim order; leased jobs by expiry (for the reaper).
    _partial_index(
        "ix_errands_job_available", text("priority DESC"), "turn", "run_at", where=_WAITING
    ),
    # What a new job's turn is computed from: the owner's last waiting turn for the
    # task name, and the name's frontier (its lowest waiting turn).
    _partial_index("ix_errands_job_owner_turn", "owner", "name", "turn", where=_WAITING),
    _partial_index("ix_errands_job_waiting_turn", "name", "turn", where=_WAITING),
    _partial_index("ix_errands_job_lease", "lease_expires_at", where="lease_owner IS NOT NULL"),
    # Small rows keyed by task id: one B-tree instead of a table plus a key index.
    sqlite_with_rowid=False,
)

# Schedules: a task created on every tick of a cron expression or an interval. A user's
# schedules are theirs (``owner``, as for tasks); schedules declared in code
# (``app.schedule``) carry their ``code_key`` and are reconciled by workers at start-up.
schedule_table = Table(
    "errands_schedule",
    metadata,
    Column("id", ID, primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("cron", String(255)),
    Column("every_seconds", Float),
    Column("timezone", String(64), nullable=False),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    # The next tick (Unix seconds): a worker that finds it due creates that tick's task
    # and moves it to the first tick after the present (missed ticks: one catch-up).
    Column("next_run_at", Float),
    Column("last_task_id", ID),
    Column("last_run_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Declared in code (``app.schedule``): its key, and a hash of its definition (see
    # ``errands.schedules.ticker``: workers reconcile the rows with their code).
    Column("code_key", String(255)),
    Column("definition", String(64)),
    Index("ix_errands_schedule_owner_id", "owner", "id"),
    _partial_index("ix_errands_schedule_due", "next_run_at", where="NOT paused"),
    _partial_index(
        "ux_errands_schedule_code", "code_key", unique=True, where="code_key IS NOT NULL"
    ),
)

output_table = Table(
    "errands_output",
    metadata,
    Column("task_id", ID, primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("data", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # An item too large for the row: its key in the blob store (``data`` is JSON null).
    Column("ref", String(255)),
)

worker_table = Table(
    "errands_worker",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("names", JSON, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("seen_at", UTCDateTime, nullable=False),
    # Which process this is, beyond its pid (see ``errands.liveness``): a worker on the
    # same host tells from it whether this one is still alive.
    Column("process_key", String(160)),
    # The schedules its code declares: key → hash of the definition.
    Column("schedules", JSON),
)

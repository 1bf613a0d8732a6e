"""Task-record operations.

Every function that an end user's request can reach takes ``owner`` and puts it in the
WHERE clause: someone else's task is never read, changed or even counted, and it answers
exactly like a task that does not exist. ``owner=None`` means "any owner" and is passed
only by administrative entry points (the CLI, the admin pages).

Status changes are guarded updates (``WHERE id = :id AND status = :expected``), so no
race can resurrect a finished task or finish it twice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..records import CANCELLED_ERROR, BlobRef, Progress, Status, TaskError, TaskRecord
from . import postgres_fast, sqlite_fast
from .queue import Change
from .schema import job_table, output_table, task_table

T = task_table.c
OUT = output_table.c


def to_record(row: Row[Any] | Any) -> TaskRecord:
    return _record(row._mapping)


def _record(m: Any) -> TaskRecord:
    error = None
    if m["error_type"] is not None or m["error_message"] is not None:
        error = TaskError(type=m["error_type"] or "Error", message=m["error_message"] or "")
    return TaskRecord(
        id=m["id"],
        owner=m["owner"],
        name=m["name"],
        payload=m["payload"],
        status=Status(m["status"]),
        progress=Progress(m["progress_current"], m["progress_total"], m["progress_message"]),
        result=BlobRef(m["result_ref"]) if m["result_ref"] else m["result"],
        error=error,
        attempts=m["attempts"],
        max_attempts=m["max_attempts"],
        priority=m["priority"],
        run_at=m["run_at"],
        cancel_requested=bool(m["cancel_requested"]),
        version=m["version"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        expires_at=m["expires_at"],
        error_detail=m["error_detail"],
        output_floor=m["output_floor"],
    )


def _owned(task_id: str, owner: str | None) -> Any:
    cond = T.id == task_id
    return cond if owner is None else and_(cond, T.owner == owner)


_INSERT_TASK = insert(task_table)


def insert_tasks(
    conn: Connection,
    rows: Sequence[dict[str, Any]],
    queued: tuple[Table, Sequence[dict[str, Any]]],
) -> None:
    """Insert new records and the rows that queue their work (the engine's
    ``queue_rows``, one per record). On PostgreSQL they are one statement (``WITH …
    INSERT``): one round trip, atomic even without a transaction. For the built-in
    queue that statement takes one array per column (``postgres_fast``); for another
    engine's table, each record and its row are one statement, pipelined."""
    table, extra = queued
    if conn.dialect.name == "sqlite":
        sqlite_fast.insert_tasks(conn, rows)
        _insert_queued(conn, queued)
        return
    if not rows:
        return
    if extra and len(extra) != len(rows):
        raise ValueError("an engine's queue_rows gives one row per record, or none")
    if not extra:
        conn.execute(_INSERT_TASK, list(rows))
        return
    if table is job_table:
        postgres_fast.insert_tasks_and_jobs(conn, rows, extra)
        return
    statement = _insert_with(table, tuple(rows[0]), tuple(extra[0]))
    params = [
        {f"r_{k}": v for k, v in row.items()} | {f"q_{k}": v for k, v in more.items()}
        for row, more in zip(rows, extra, strict=True)
    ]
    conn.execute(statement, params[0] if len(params) == 1 else params)


def _insert_queued(conn: Connection, queued: tuple[Table, Sequence[dict[str, Any]]]) -> None:
    """An engine's queue rows for records already inserted; jobs get their turns."""
    table, extra = queued
    if not extra:
        return
    if table is not job_table:
        conn.execute(insert(table), list(extra))
    elif conn.dialect.name == "sqlite":
        sqlite_fast.insert_jobs(conn, extra)
    else:
        postgres_fast.insert_jobs(conn, extra)


def insert_keyed(
    conn: Connection,
    row: dict[str, Any],
    queued: tuple[Table, Sequence[dict[str, Any]]],
) -> tuple[TaskRecord, str | None] | None:
    """Insert a record that carries an idempotency key or a unique key, with its queue
    rows — unless the owner already has a record under that key (an active one, for a
    unique key). Then nothing is inserted and that record is returned, with its
    ``request_hash``. None: inserted. The database's unique indexes decide, so
    concurrent submits of one key create one record."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    for _ in range(3):  # the holder may finish (unique key) between our two statements
        inserted = conn.execute(
            dialect_insert(task_table).values(row).on_conflict_do_nothing().returning(T.id)
        ).first()
        if inserted is not None:
            _insert_queued(conn, queued)
            return None
        holder = None
        if row.get("idempotency_key") is not None:
            holder = conn.execute(
                select(task_table).where(
                    T.owner == row["owner"], T.idempotency_key == row["idempotency_key"]
                )
            ).first()
        if holder is None and row.get("unique_key") is not None:
            holder = conn.execute(
                select(task_table).where(
                    T.owner == row["owner"],
                    T.unique_key == row["unique_key"],
                    T.status.in_([Status.QUEUED.value, Status.RUNNING.value]),
                )
            ).first()
        if holder is not None:
            return to_record(holder), holder.request_hash
    raise RuntimeError("a keyed record kept conflicting without a holder")


@functools.lru_cache(maxsize=16)
def _insert_with(table: Table, columns: tuple[str, ...], queue_columns: tuple[str, ...]) -> Any:
    """``WITH new_records AS (INSERT INTO errands_task …) INSERT INTO <table> …`` with
    named parameters, built (and compiled by SQLAlchemy) once."""
    records = (
        insert(task_table)
        .values({c: bindparam(f"r_{c}", type_=task_table.c[c].type) for c in columns})
        .cte("new_records")
    )
    return (
        insert(table)
        .values({c: bindparam(f"q_{c}", type_=table.c[c].type) for c in queue_columns})
        .add_cte(records)
    )


_GET_OWNED = select(task_table).where(T.id == bindparam("_id"), T.owner == bindparam("_owner"))
_GET_ANY = select(task_table).where(T.id == bindparam("_id"))


def get(conn: Connection, task_id: str, owner: str | None) -> TaskRecord | None:
    if conn.dialect.name == "sqlite":
        values = sqlite_fast.get_task(conn, task_id, owner)
        return None if values is None else _record(values)
    if owner is None:
        row = conn.execute(_GET_ANY, {"_id": task_id}).first()
    else:
        row = conn.execute(_GET_OWNED, {"_id": task_id, "_owner": owner}).first()
    return None if row is None else to_record(row)


_VERSION_OWNED = select(T.version).where(T.id == bindparam("_id"), T.owner == bindparam("_owner"))
_VERSION_ANY = select(T.version).where(T.id == bindparam("_id"))


def version_of(conn: Connection, task_id: str, owner: str | None) -> int | None:
    """The record's version alone (for conditional reads); None when no such task."""
    if conn.dialect.name == "sqlite":
        return sqlite_fast.version_of(conn, task_id, owner)
    if owner is None:
        return conn.execute(_VERSION_ANY, {"_id": task_id}).scalar()
    return conn.execute(_VERSION_OWNED, {"_id": task_id, "_owner": owner}).scalar()


def get_many(conn: Connection, task_ids: list[str], owner: str | None) -> list[TaskRecord]:
    """The records among ``task_ids`` that exist (and belong to ``owner``)."""
    if not task_ids:
        return []
    q = select(task_table).where(T.id.in_(task_ids))
    if owner is not None:
        q = q.where(T.owner == owner)
    return [to_record(r) for r in conn.execute(q)]


def changes_since(
    conn: Connection, since: datetime, task_ids: list[str], owners: list[str]
) -> list[Change]:
    """Records among ``task_ids`` or of ``owners`` changed at or after ``since``: one
    indexed query (``updated_at``), whatever the number of watchers."""
    if not task_ids and not owners:
        return []
    rows = conn.execute(
        select(T.id, T.owner, T.version, T.status).where(
            T.updated_at >= since, or_(T.id.in_(task_ids), T.owner.in_(owners))
        )
    )
    return [Change(r.id, r.owner, r.version, Status(r.status)) for r in rows]


def last_seq(conn: Connection, task_id: str) -> int:
    """The sequence number a reader of the task's current output is at once it has read
    everything: its newest item's, or the attempt's floor when it has none yet."""
    floor = select(T.output_floor).where(T.id == task_id).scalar_subquery()
    top = select(func.max(OUT.seq)).where(OUT.task_id == task_id).scalar_subquery()
    newest, floor_now = conn.execute(select(func.coalesce(top, 0), func.coalesce(floor, 0))).one()
    return max(int(newest), int(floor_now))


def snapshot(
    conn: Connection, wants: dict[str, int], limit: int = 1000
) -> dict[str, tuple[TaskRecord, list[tuple[int, Any]]]]:
    """For each task id, its record and up to ``limit`` items of its current attempt
    after the given sequence number, read in that order (so a finished record comes
    with all its outputs). Items are read only while the attempt is still the record's
    (a new attempt that began between the two reads gives no items: a reader learns of
    it with the next change). Tasks that no longer exist are left out. Internal: no
    owner check."""
    records = {r.id: r for r in get_many(conn, list(wants), None)}
    return {
        task_id: (record, attempt_items(conn, task_id, wants[task_id], limit, record.output_floor))
        for task_id, record in records.items()
    }


def list_page(
    conn: Connection,
    *,
    owner: str | None,
    status: Status | None = None,
    name: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[TaskRecord], str | None]:
    """One page, newest first. The cursor is the last id of the previous page."""
    q = select(task_table)
    if owner is not None:
        q = q.where(T.owner == owner)
    if status is not None:
        q = q.where(T.status == status.value)
    if name is not None:
        q = q.where(T.name == name)
    if cursor is not None:
        q = q.where(T.id < cursor)
    rows = conn.execute(q.order_by(T.id.desc()).limit(limit + 1)).all()
    records = [to_record(r) for r in rows[:limit]]
    next_cursor = records[-1].id if len(rows) > limit and records else None
    return records, next_cursor


def cancel(
    conn: Connection,
    task_id: str,
    owner: str | None,
    now: datetime,
    expiry_for: Callable[[str], datetime | None],
) -> tuple[TaskRecord | None, bool, bool]:
    """Cancel a queued task at once, or ask a running one to stop.

    Returns the record after the change (None when there is no such task for this
    owner), whether a running task was asked to stop (the worker must be told), and
    whether a queued task ended now.
    A finished task is left as it is. ``expiry_for(name)`` gives the purge time of a
    record that ends now.
    """
    current = conn.execute(
        select(T.status, T.cancel_requested, T.name).where(_owned(task_id, owner)).with_for_update()
    ).first()
    if current is None:
        return None, False, False
    status, requested = Status(current.status), bool(current.cancel_requested)
    ask_worker = ended = False
    if status is Status.QUEUED:
        gone = conn.execute(
            delete(job_table).where(
                job_table.c.task_id == task_id, job_table.c.lease_owner.is_(None)
            )
        ).rowcount
        if gone:
            conn.execute(
                update(task_table)
                .where(T.id == task_id, T.status == Status.QUEUED.value)
                .values(
                    status=Status.CANCELLED.value,
                    cancel_requested=True,
                    error_type=CANCELLED_ERROR.type,
                    error_message=CANCELLED_ERROR.message,
                    finished_at=now,
                    expires_at=expiry_for(current.name),
                    updated_at=now,
                    version=T.version + 1,
                )
            )
            ended = True
        else:  # claimed between our read and the delete: treat it as running
            status = Status.RUNNING
    if status is Status.RUNNING and not requested:
        conn.execute(
            update(task_table)
            .where(T.id == task_id, T.status == Status.RUNNING.value)
            .values(cancel_requested=True, updated_at=now, version=T.version + 1)
        )
        ask_worker = True
    return get(conn, task_id, owner), ask_worker, ended


def delete_finished(conn: Connection, task_id: str, owner: str | None) -> bool:
    """Delete a finished task and its outputs. Active tasks are not deleted."""
    terminal = [Status.SUCCEEDED.value, Status.FAILED.value, Status.CANCELLED.value]
    deleted = conn.execute(
        delete(task_table).where(_owned(task_id, owner), T.status.in_(terminal))
    ).rowcount
    if deleted:
        conn.execute(delete(output_table).where(output_table.c.task_id == task_id))
    return bool(deleted)


def outputs(
    conn: Connection, task_id: str, owner: str | None, *, after: int = 0, limit: int = 1000
) -> tuple[int, list[tuple[int, Any]]] | None:
    """The task's output floor and the items of its current attempt with sequence >
    ``after``; None when no such task."""
    floor = conn.execute(select(T.output_floor).where(_owned(task_id, owner))).scalar()
    if floor is None:
        return None
    return floor, attempt_items(conn, task_id, after, limit, floor)


def attempt_items(
    conn: Connection, task_id: str, after: int, limit: int, floor: int
) -> list[tuple[int, Any]]:
    """Items after ``after`` of the attempt whose floor is ``floor`` — none if another
    attempt has begun since that floor was read (checked in the same statement)."""
    rows = conn.execute(
        select(OUT.seq, OUT.data, OUT.ref)
        .join(task_table, T.id == OUT.task_id)
        .where(
            OUT.task_id == task_id,
            OUT.seq > max(after, floor),
            T.id == task_id,
            T.output_floor == floor,
        )
        .order_by(OUT.seq)
        .limit(limit)
    )
    return [_item(r) for r in rows]


def _item(row: Row[Any, Any, Any]) -> tuple[int, Any]:
    """An output item as (seq, data); data in the blob store as its ``BlobRef``."""
    return row.seq, (BlobRef(row.ref) if row.ref else row.data)


def purge_expired(conn: Connection, now: datetime, batch: int) -> tuple[int, list[str]]:
    """Delete up to ``batch`` expired finished records and their outputs. Returns how
    many, and the ids of those with values in the blob store (to delete after commit)."""
    rows = conn.execute(
        select(T.id, T.result_ref).where(T.expires_at.is_not(None), T.expires_at < now).limit(batch)
    ).all()
    if not rows:
        return 0, []
    ids = [r.id for r in rows]
    with_blobs = {r.id for r in rows if r.result_ref}
    with_blobs.update(
        conn.execute(
            select(OUT.task_id).where(OUT.task_id.in_(ids), OUT.ref.is_not(None)).distinct()
        ).scalars()
    )
    conn.execute(delete(output_table).where(output_table.c.task_id.in_(ids)))
    conn.execute(delete(task_table).where(T.id.in_(ids)))
    return len(ids), sorted(with_blobs)

"""The store driver: every statement errands runs, as noun-first operations.

One driver per database (``SQLiteDriver`` in ``store/sqlite.py``, ``PostgresDriver`` in
``store/postgres.py``) implements the operations below. Each operation is a method that
takes a SQLAlchemy ``Connection`` already inside a transaction (``Database.read`` and
``Database.write`` open it) and typed values (``store/values.py``). What both databases
do the same way is written once here, with SQLAlchemy Core; the hot paths and whatever
differs are the drivers' own (the methods left abstract). A third database is one new
driver: ``tests/test_store.py``, the conformance suite, runs on every driver and says
when it is done.

**Ownership.** Every operation an end user's request can reach takes ``owner`` and puts
it in the WHERE clause: someone else's task is never read, changed or even counted, and
answers exactly like one that does not exist. ``owner=None`` means "any owner"; only
administrative entry points (the CLI, the admin views) pass it.

**Guarded transitions.** Status changes are guarded updates (``WHERE id = :id AND status =
:expected``): no race resurrects a finished task or finishes it twice.

**Jobs.** A job row exists exactly while its task is ``queued`` (``lease_owner IS NULL``) or
``running`` (``lease_owner`` = the worker holding it, until ``lease_expires_at``). Claims,
completions and retries change the job and the record in one transaction.

**Claim order (fair claims).** Each job has a *turn*, given when it is queued: one after
the owner's last waiting job of the same task name, and no earlier than that name's
frontier, its lowest waiting turn (0 when none waits). Claims take due jobs by priority
(highest first), then turn, then due time. So owners with waiting work of a name take
turns: an owner who queues 500 jobs holds turns far ahead, and another owner's next job
gets a turn at the frontier, next in line. A retried job keeps its turn. With ``caps``
(``max_running_per_owner``) a claim also passes over an owner's jobs of a name while that
many of them run.

**Attempts and fencing.** A claim starts an attempt. When the task ran before (a retry,
an expired lease, a hand-back), the claim raises the record's ``output_floor`` past
every item stored so far and clears its progress: the task's output is the current
attempt's items (``seq > output_floor``); earlier attempts' items stay in
``errands_output``, hidden, until the record is deleted. The floor is also the attempt's
fencing token: every write of an attempt — progress, items, outcome, hand-back — names
the task, the worker and the floor it was claimed with, and is applied only while the
record is ``running`` with that floor and the worker still holds the job. A refused
write changes nothing and fails nothing: it is left out, and the writer learns which
were refused. The attempt's items are inserted only after its record's guarded write in
the same transaction (on PostgreSQL that row lock keeps a reaper, and so a new claim,
from slipping in between). Statements that touch both tables lock the job row first, as
claims and the reaper do.

Times given as floats are Unix seconds; times written to the record are datetimes.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)

from ..records import CANCELLED_ERROR, BlobRef, Change, Schedule, Status, TaskError, TaskRecord
from . import codec
from .codec import utc
from .schema import (
    UTCDateTime,
    job_table,
    output_table,
    schedule_table,
    task_table,
    worker_table,
)
from .values import Carrier, Claimed, NewTask, Outcome, OutputItem, Report

T = task_table.c
J = job_table.c
OUT = output_table.c
W = worker_table.c
S = schedule_table.c

#: The largest output sequence number (``errands_output.seq`` is a 32-bit integer).
MAX_SEQ = 2**31 - 1
#: Claims take due jobs in this order (see "Claim order" above).
CLAIM_ORDER = (J.priority.desc(), J.turn, J.run_at)
#: The error of a task whose worker stopped answering and whose attempts are spent.
WORKER_LOST = TaskError("WorkerLost", "the worker running this task stopped responding")
_PROGRESS = ("progress_current", "progress_total", "progress_message")
_CANDIDATES = 4  # jobs read per job wanted, when caps may skip some


def _ids(name: str) -> Any:
    return bindparam(name, expanding=True)


def _cursor(conn: Connection) -> Any:
    """The DB-API cursor the drivers' raw hot-path statements run on."""
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


def _of(owner: str | None) -> tuple[Any, ...]:
    """The WHERE terms that keep a query to ``owner``'s records (none for any owner)."""
    return () if owner is None else (T.owner == owner,)


def _wanted(status: Status | None, name: str | None, is_group: bool | None) -> tuple[Any, ...]:
    """The WHERE terms of a task list's filters (none for those left out): ``is_group``
    True keeps groups' own records, False every other (their parts included)."""
    wanted = ((T.status, None if status is None else status.value), (T.name, name))
    terms = tuple(c == v for c, v in wanted if v is not None)
    if is_group is None:
        return terms
    return (*terms, T.group_size.is_not(None) if is_group else T.group_size.is_(None))


def _owned(task_id: str, owner: str | None) -> Any:
    return and_(T.id == task_id, *_of(owner))


def _scheduled_by(owner: str | None) -> tuple[Any, ...]:
    """The WHERE terms that keep a schedule query to ``owner``'s (none for any owner)."""
    return () if owner is None else (S.owner == owner,)


def _change(row: Any) -> Change:
    return Change(row[0], row[1], row[2], Status(row[3]))


def _item(row: Any) -> tuple[int, Any]:
    """An output item as (seq, data); data in the blob store as its ``BlobRef``."""
    return row.seq, (BlobRef(row.ref) if row.ref else row.data)


def task_row(task: NewTask) -> dict[str, Any]:
    """The ``errands_task`` columns of a new record (as the SQLAlchemy types take them)."""
    stamp = utc(task.created_at)
    row: dict[str, Any] = {
        "id": task.id,
        "owner": task.owner,
        "name": task.name,
        "payload": task.payload,
        "status": Status.QUEUED.value,
        "attempts": 0,
        "max_attempts": task.max_attempts,
        "priority": task.priority,
        "run_at": utc(task.run_at),
        "cancel_requested": False,
        "version": 1,
        "created_at": stamp,
        "updated_at": stamp,
    }
    for key in ("idempotency_key", "request_hash", "unique_key", "schedule_id"):
        value = getattr(task, key)
        if value is not None:
            row[key] = value
    if task.scheduled_for is not None:
        row["scheduled_for"] = utc(task.scheduled_for)
    return row


# Statements built once; executing them costs no construction.
_CHANGES = select(T.id, T.owner, T.version, T.status).where(T.id.in_(_ids("_ids")))
_GET_OWNED = select(task_table).where(T.id == bindparam("_id"), T.owner == bindparam("_owner"))
_GET_ANY = select(task_table).where(T.id == bindparam("_id"))
_RENEW = (
    update(job_table)
    .where(J.lease_owner == bindparam("_worker"), J.task_id.in_(_ids("_ids")))
    .values(lease_expires_at=bindparam("_until"))
    .returning(J.task_id)
)


def _group_progress_statement() -> Any:
    """A running group's progress brought up to date (see ``Driver._group_progress``)."""
    c = task_table.alias("c")
    share = case(
        (c.c.progress_current >= c.c.progress_total, 1.0),
        (c.c.progress_current <= 0, 0.0),
        else_=c.c.progress_current / c.c.progress_total,
    )
    running = (
        select(func.coalesce(func.sum(share), 0.0))
        .where(
            c.c.parent_id == T.id,
            # Written out, so that SQLite sees it is its partial index's condition.
            c.c.status == literal_column("'running'"),
            c.c.progress_total > 0,
            c.c.progress_current.is_not(None),
        )
        .scalar_subquery()
    )
    now_done = T.group_done + running
    return (
        update(task_table)
        .where(
            T.id.in_(_ids("_ids")),
            T.status == Status.RUNNING.value,
            T.progress_current < now_done,
        )
        .values(progress_current=now_done, updated_at=bindparam("_at"), version=T.version + 1)
    )


_GROUP_PROGRESS = _group_progress_statement()


def _part_lost(index: int, status: str, message: str | None) -> str:
    """The message of a group failed by its part ``index`` (in words for the group's
    watchers: the part's error type is on the part's own record)."""
    if status == Status.CANCELLED.value:
        return f"part {index} was cancelled"
    return f"part {index} failed: {message}" if message else f"part {index} failed"


class Cancelled(NamedTuple):
    """What ``Driver.task_cancel`` did."""

    #: The record after the change; None when there is no such task for this owner.
    record: TaskRecord | None
    #: Running tasks asked to stop (their workers must be told).
    asked: list[str]
    #: Whether the task ended now (it was queued, or a group): no worker reports it.
    ended: bool
    #: The other records it changed (a part's group, a group's parts).
    changes: list[Change]


_PARTS_OF = (
    select(T.id, T.parent_id, T.group_index, T.status, T.error_type, T.error_message)
    .where(T.id.in_(_ids("_ids")), T.parent_id.is_not(None))
    .order_by(T.parent_id, T.group_index)
)
_GROUP_ROW = select(T.status, T.group_size, T.group_done, T.group_then).where(
    T.id == bindparam("_id")
)
# (The version and time change with the progress, in the statement that follows.)
_GROUP_DONE = (
    update(task_table).where(T.id == bindparam("_id")).values(group_done=bindparam("_done"))
)
# A fired schedule moved to its next tick (guarded by the tick), noting the tick's task
# when one was created.
_SCHEDULE_MOVE = (
    update(schedule_table)
    .where(
        S.id == bindparam("_id"),
        S.next_run_at == bindparam("_tick"),
        S.paused.is_(False),
    )
    .values(
        next_run_at=bindparam("_next"),
        updated_at=bindparam("_now"),
        last_task_id=func.coalesce(bindparam("_task"), S.last_task_id),
        last_run_at=func.coalesce(bindparam("_at", type_=UTCDateTime), S.last_run_at),
    )
)
_LINK_PART = update(task_table).where(T.id == bindparam("_id")).values(group_index=bindparam("_i"))
_GROUP = task_table.alias("grp")
#: Among running attempts, those to stop: cancel asked, or their group has ended.
_CANCEL_ASKED = select(T.id).where(
    T.id.in_(_ids("_ids")),
    T.cancel_requested.is_(True)
    | exists().where(
        _GROUP.c.id == T.parent_id,
        _GROUP.c.status.in_([Status.CANCELLED.value, Status.FAILED.value]),
    ),
)
_UNSENT = (
    select(J.task_id, J.run_at)
    .where(
        J.lease_owner.is_(None),
        J.run_at <= bindparam("_before"),
        (J.sent_at.is_(None)) | (J.sent_at < J.run_at),
    )
    .order_by(J.run_at)
    .limit(bindparam("_limit"))
)
_MARK_SENT = (
    update(job_table)
    .where(J.task_id == bindparam("_id"), J.lease_owner.is_(None))
    .values(sent_at=bindparam("_at"))
)


class Driver(abc.ABC):
    """The store operations on one database; see the module docstring."""

    #: The SQLAlchemy dialect name this driver serves.
    dialect: str
    #: The dialect's ``insert`` (it has ``on_conflict_do_nothing``).
    dialect_insert: Callable[..., Any]

    # == task records ====================================================================
    def task_create(
        self, conn: Connection, tasks: Sequence[NewTask], carrier: Carrier | None = None
    ) -> list[tuple[TaskRecord, str | None] | None]:
        """Insert new records and their jobs. Per task: None if it was inserted, or the
        record that already holds its idempotency or unique key, with that record's
        ``request_hash`` (see ``task_insert_keyed``). A ``carrier`` (tasks without keys
        only: they are all inserted) is sent with the insert."""
        if not any(t.keyed for t in tasks):
            self.task_insert(conn, tasks, carrier)
            return [None] * len(tasks)
        if carrier is not None:
            raise ValueError("a carrier goes only with tasks that carry no key")
        found: list[tuple[TaskRecord, str | None] | None] = []
        for task in tasks:
            if task.keyed:
                found.append(self.task_insert_keyed(conn, task))
            else:
                self.task_insert(conn, [task])
                found.append(None)
        return found

    #: Can this database send a ``Carrier``'s notifications from a statement?
    carries = False

    @abc.abstractmethod
    def task_insert(
        self, conn: Connection, tasks: Sequence[NewTask], carrier: Carrier | None = None
    ) -> None:
        """Insert new records (without keys) and their jobs (each job gets its turn),
        sending the ``carrier``'s messages if the driver ``carries``."""

    def task_insert_keyed(
        self, conn: Connection, task: NewTask
    ) -> tuple[TaskRecord, str | None] | None:
        """Insert a record that carries an idempotency key or a unique key, with its job
        — unless the owner already has a record under that key (an active one, for a
        unique key). Then nothing is inserted and that record is returned, with its
        ``request_hash``. None: inserted. The database's unique indexes decide, so
        concurrent submits of one key create one record."""
        row = task_row(task)
        for _ in range(3):  # the holder may finish (unique key) between our two statements
            inserted = conn.execute(
                self.dialect_insert(task_table).values(row).on_conflict_do_nothing().returning(T.id)
            ).first()
            if inserted is not None:
                self._jobs_insert(conn, [task])
                return None
            holder = None
            if task.idempotency_key is not None:
                holder = conn.execute(
                    select(task_table).where(
                        T.owner == task.owner, T.idempotency_key == task.idempotency_key
                    )
                ).first()
            if holder is None and task.schedule_id is not None:
                assert task.scheduled_for is not None
                holder = conn.execute(
                    select(task_table).where(
                        T.schedule_id == task.schedule_id,
                        T.scheduled_for == utc(task.scheduled_for),
                    )
                ).first()
            if holder is None and task.unique_key is not None:
                holder = conn.execute(
                    select(task_table).where(
                        T.owner == task.owner,
                        T.unique_key == task.unique_key,
                        T.status.in_([Status.QUEUED.value, Status.RUNNING.value]),
                    )
                ).first()
            if holder is not None:
                return codec.record(holder._mapping), holder.request_hash
        raise RuntimeError("a keyed record kept conflicting without a holder")

    @abc.abstractmethod
    def _jobs_insert(self, conn: Connection, tasks: Sequence[NewTask]) -> None:
        """The jobs of records inserted separately, with their turns."""

    def task_get(self, conn: Connection, task_id: str, owner: str | None) -> TaskRecord | None:
        if owner is None:
            row = conn.execute(_GET_ANY, {"_id": task_id}).first()
        else:
            row = conn.execute(_GET_OWNED, {"_id": task_id, "_owner": owner}).first()
        return None if row is None else codec.record(row._mapping)

    def task_version(self, conn: Connection, task_id: str, owner: str | None) -> int | None:
        """The record's version alone (for conditional reads); None when no such task."""
        query = select(T.version).where(_owned(task_id, owner))
        return conn.execute(query).scalar()

    def task_get_many(
        self, conn: Connection, task_ids: Sequence[str], owner: str | None
    ) -> list[TaskRecord]:
        """The records among ``task_ids`` that exist (and belong to ``owner``)."""
        if not task_ids:
            return []
        q = select(task_table).where(T.id.in_(list(task_ids)), *_of(owner))
        return [codec.record(r._mapping) for r in conn.execute(q)]

    def task_list(
        self,
        conn: Connection,
        *,
        owner: str | None,
        status: Status | None = None,
        name: str | None = None,
        is_group: bool | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[TaskRecord], str | None]:
        """One page, newest first. The cursor is the last id of the previous page."""
        q = select(task_table).where(*_of(owner), *_wanted(status, name, is_group))
        if cursor is not None:
            q = q.where(T.id < cursor)
        rows = conn.execute(q.order_by(T.id.desc()).limit(limit + 1)).all()
        records = [codec.record(r._mapping) for r in rows[:limit]]
        next_cursor = records[-1].id if len(rows) > limit and records else None
        return records, next_cursor

    def task_count(
        self,
        conn: Connection,
        *,
        owner: str | None,
        status: Status | None = None,
        name: str | None = None,
        is_group: bool | None = None,
    ) -> int:
        """How many records ``task_list`` would page through with these filters."""
        wanted = _wanted(status, name, is_group)
        q = select(func.count()).select_from(task_table).where(*_of(owner), *wanted)
        return int(conn.execute(q).scalar_one())

    def task_changes(self, conn: Connection, task_ids: Iterable[str]) -> list[Change]:
        """(id, owner, version, status) of these records."""
        ids = list(task_ids)
        if not ids:
            return []
        return [_change(r) for r in conn.execute(_CHANGES, {"_ids": ids})]

    def task_changes_since(
        self, conn: Connection, since: datetime, task_ids: list[str], owners: list[str]
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
        return [_change(r) for r in rows]

    def task_cancel(
        self,
        conn: Connection,
        task_id: str,
        owner: str | None,
        now: datetime,
        expiry_for: Callable[[str], datetime | None],
    ) -> Cancelled:
        """Cancel a queued task at once, or ask a running one to stop; a group with its
        parts, and a part's group with the part. A finished task is left as it is.
        ``expiry_for(name)`` gives the purge time of a record that ends now.
        """
        current = conn.execute(
            select(T.status, T.cancel_requested, T.name, T.parent_id, T.group_size)
            .where(_owned(task_id, owner))
            .with_for_update()
        ).first()
        if current is None:
            return Cancelled(None, [], False, [])
        status, requested = Status(current.status), bool(current.cancel_requested)
        if current.group_size is not None:  # a group: it ends now, with its parts
            return self._cancel_group(conn, task_id, owner, status, now, expiry_for)
        asked: list[str] = []
        changes: list[Change] = []
        ended = False
        if status is Status.QUEUED:
            gone = conn.execute(
                delete(job_table).where(J.task_id == task_id, J.lease_owner.is_(None))
            ).rowcount
            # A group's ``then`` task waits with no job until its parts have succeeded.
            dormant = (
                not gone and not conn.execute(select(J.task_id).where(J.task_id == task_id)).first()
            )
            if gone or dormant:
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
                if current.parent_id is not None:
                    expiry = {task_id: expiry_for(current.name)}
                    changes = self._parts_ended(conn, [task_id], now.timestamp(), expiry)
                    # the group failed: its running parts were asked to stop
                    asked += [c.task_id for c in changes if c.status is Status.RUNNING]
            else:  # claimed between our read and the delete: treat it as running
                status = Status.RUNNING
        if status is Status.RUNNING and not requested:
            conn.execute(
                update(task_table)
                .where(T.id == task_id, T.status == Status.RUNNING.value)
                .values(cancel_requested=True, updated_at=now, version=T.version + 1)
            )
            asked.append(task_id)
        return Cancelled(self.task_get(conn, task_id, owner), asked, ended, changes)

    def _cancel_group(
        self,
        conn: Connection,
        group_id: str,
        owner: str | None,
        status: Status,
        now: datetime,
        expiry_for: Callable[[str], datetime | None],
    ) -> Cancelled:
        """Cancel a running group and its parts (see ``task_cancel``)."""
        if status is not Status.RUNNING:
            return Cancelled(self.task_get(conn, group_id, owner), [], False, [])
        name = conn.execute(select(T.name).where(T.id == group_id)).scalar_one()
        keep = expiry_for(name)
        at = now.timestamp()
        self._group_end(conn, group_id, Status.CANCELLED, at, keep, error=CANCELLED_ERROR)
        conn.execute(update(task_table).where(T.id == group_id).values(cancel_requested=True))
        ended, asked = self._cancel_parts(conn, group_id, at, keep)
        changes = self.task_changes(conn, ended + asked)
        return Cancelled(self.task_get(conn, group_id, owner), asked, True, changes)

    def task_delete_finished(self, conn: Connection, task_id: str, owner: str | None) -> bool:
        """Delete a finished task and its outputs. Active tasks are not deleted."""
        terminal = [Status.SUCCEEDED.value, Status.FAILED.value, Status.CANCELLED.value]
        deleted = conn.execute(
            delete(task_table).where(_owned(task_id, owner), T.status.in_(terminal))
        ).rowcount
        if deleted:
            conn.execute(delete(output_table).where(OUT.task_id == task_id))
        return bool(deleted)

    def task_purge_expired(
        self, conn: Connection, now: datetime, batch: int
    ) -> tuple[int, list[str]]:
        """Delete up to ``batch`` expired finished records and their outputs. Returns how
        many, and the ids of those with values in the blob store (to delete after
        commit)."""
        rows = conn.execute(
            select(T.id, T.result_ref)
            .where(T.expires_at.is_not(None), T.expires_at < now)
            .limit(batch)
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
        conn.execute(delete(output_table).where(OUT.task_id.in_(ids)))
        conn.execute(delete(task_table).where(T.id.in_(ids)))
        return len(ids), sorted(with_blobs)

    # == outputs =========================================================================
    def output_page(
        self, conn: Connection, task_id: str, owner: str | None, *, after: int, limit: int
    ) -> tuple[int, list[tuple[int, Any]]] | None:
        """The task's output floor and the items of its current attempt with sequence >
        ``after``; None when no such task."""
        floor = conn.execute(select(T.output_floor).where(_owned(task_id, owner))).scalar()
        if floor is None:
            return None
        return floor, self.output_items(conn, task_id, after, limit, floor)

    def output_items(
        self, conn: Connection, task_id: str, after: int, limit: int, floor: int
    ) -> list[tuple[int, Any]]:
        """Items after ``after`` of the attempt whose floor is ``floor`` — none if another
        attempt has begun since that floor was read (checked in the same statement)."""
        if after >= MAX_SEQ:  # past any sequence number the column holds
            return []
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

    def output_top(self, conn: Connection, task_id: str) -> int:
        """The sequence number a reader of the task's current output is at once it has
        read everything: its newest item's, or the attempt's floor when it has none."""
        floor = select(T.output_floor).where(T.id == task_id).scalar_subquery()
        top = select(func.max(OUT.seq)).where(OUT.task_id == task_id).scalar_subquery()
        newest, floor_now = conn.execute(
            select(func.coalesce(top, 0), func.coalesce(floor, 0))
        ).one()
        return max(int(newest), int(floor_now))

    def task_snapshot(
        self, conn: Connection, wants: Mapping[str, int], limit: int = 1000
    ) -> dict[str, tuple[TaskRecord, list[tuple[int, Any]]]]:
        """For each task id, its record and up to ``limit`` items of its current attempt
        after the given sequence number, read in that order (so a finished record comes
        with all its outputs). Items are read only while the attempt is still the
        record's (a new attempt that began between the two reads gives no items: a
        reader learns of it with the next change). Tasks that no longer exist are left
        out. Internal: no owner check."""
        records = {r.id: r for r in self.task_get_many(conn, list(wants), None)}
        return {
            task_id: (
                record,
                self.output_items(conn, task_id, wants[task_id], limit, record.output_floor),
            )
            for task_id, record in records.items()
        }

    @abc.abstractmethod
    def output_insert(self, conn: Connection, items: Sequence[OutputItem], now: float) -> None:
        """Insert items of attempts whose guarded record write in this transaction
        succeeded (it holds their rows until commit)."""

    # == claiming ========================================================================
    def job_claim(
        self,
        conn: Connection,
        worker_id: str,
        *,
        names: Sequence[str],
        limit: int,
        now: float,
        lease_seconds: float,
        caps: Mapping[str, int] | None = None,
    ) -> tuple[list[Claimed], float | None]:
        """A worker's claim: up to ``limit`` jobs in claim order within ``caps`` (task
        name → how many of one owner's tasks of that name may run), and — when fewer
        were available — when the earliest job left waiting becomes due (None: none is
        waiting). With ``caps`` for some of ``names`` the claim must run in a
        transaction (see ``_serialize_capped_claims``)."""
        if limit <= 0 or not names:
            return [], None
        capped = {n: c for n, c in (caps or {}).items() if n in names}
        chosen: list[str] | None = None
        more = False
        if capped:
            chosen, more = self._within_caps(conn, names, capped, limit, now)
            if not chosen:
                return [], (now if more else self.job_next_due(conn, names))
        claimed, due = self._lease(conn, worker_id, names, limit, now, lease_seconds, chosen)
        if len(claimed) >= limit:
            return claimed, None
        return claimed, (now if more else due)

    def job_claim_ids(
        self,
        conn: Connection,
        worker_id: str,
        task_ids: Sequence[str],
        *,
        names: Sequence[str],
        now: float,
        lease_seconds: float,
    ) -> list[Claimed]:
        """Lease these jobs, those still waiting (an engine whose broker says which job
        to run: a job already leased, finished or cancelled is not taken, so a message
        delivered twice runs the job once)."""
        if not task_ids or not names:
            return []
        ids = list(task_ids)
        return self._lease(conn, worker_id, names, len(ids), now, lease_seconds, ids)[0]

    @abc.abstractmethod
    def _lease(
        self,
        conn: Connection,
        worker_id: str,
        names: Sequence[str],
        limit: int,
        now: float,
        lease_seconds: float,
        chosen: Sequence[str] | None,
    ) -> tuple[list[Claimed], float | None]:
        """Lease up to ``limit`` due jobs in claim order (or the ``chosen`` ones, if still
        waiting), start their records — a new attempt: progress cleared, and for a task
        that ran before the output floor raised past every stored item — and drop jobs
        whose record is no longer queued. The jobs, and when the next waiting job is due
        if fewer than ``limit`` were leased."""

    def _serialize_capped_claims(self, conn: Connection) -> None:
        """Make claims under caps take turns until this transaction ends (so two workers
        cannot both start an owner's last allowed task). SQLite's writers take turns
        already."""
        return None

    def _within_caps(
        self,
        conn: Connection,
        names: Sequence[str],
        caps: Mapping[str, int],
        limit: int,
        now: float,
    ) -> tuple[list[str], bool]:
        """The jobs a capped claim takes, in claim order, and whether jobs were passed
        over that a claim right after this one could take (the claim came up short for
        caps alone)."""
        self._serialize_capped_claims(conn)
        running: dict[tuple[str, str], int] = {
            (owner, name): n
            for owner, name, n in conn.execute(
                select(J.owner, J.name, func.count())
                .where(J.lease_owner.is_not(None), J.name.in_(list(caps)))
                .group_by(J.owner, J.name)
            )
        }
        full = [pair for pair, n in running.items() if n >= caps[pair[1]]]
        wanted = limit * _CANDIDATES
        query = (
            select(J.task_id, J.owner, J.name)
            .where(J.lease_owner.is_(None), J.run_at <= now, J.name.in_(list(names)))
            .order_by(*CLAIM_ORDER)
            .limit(wanted)
        )
        if full:
            query = query.where(tuple_(J.owner, J.name).not_in(full))
        rows = conn.execute(query).all()
        chosen: list[str] = []
        skipped = False
        for task_id, owner, name in rows:
            cap = caps.get(name)
            if cap is not None:
                if running.get((owner, name), 0) >= cap:
                    skipped = True
                    continue
                running[(owner, name)] = running.get((owner, name), 0) + 1
            chosen.append(task_id)
            if len(chosen) == limit:
                break
        return chosen, skipped and len(chosen) < limit and len(rows) == wanted

    def job_next_due(self, conn: Connection, names: Sequence[str]) -> float | None:
        """When the earliest waiting job becomes due (None: no job is waiting)."""
        return conn.execute(
            select(func.min(J.run_at)).where(J.lease_owner.is_(None), J.name.in_(list(names)))
        ).scalar()

    # == engines that hand jobs to a broker =================================================
    def job_unsent(
        self, conn: Connection, *, before: float, limit: int = 500
    ) -> list[tuple[str, float]]:
        """(task id, run_at) of waiting jobs due before ``before`` that were not published
        since they became due: their hand-off to the broker may have been lost."""
        rows = conn.execute(_UNSENT, {"_before": before, "_limit": limit})
        return [(r.task_id, r.run_at) for r in rows]

    def job_mark_sent(self, conn: Connection, sent: Sequence[tuple[str, float]]) -> None:
        """Record that messages for these waiting jobs went to the broker: (task id, the
        time from which the message stands for the job — when it was sent, or the job's
        later due time)."""
        if sent:
            conn.execute(_MARK_SENT, [{"_id": t, "_at": at} for t, at in sent])

    def job_unmark_sent(self, conn: Connection, task_ids: Sequence[str]) -> None:
        """Forget the publication of these jobs if they still wait: a message for them was
        consumed without running them, so the relay publishes them again."""
        if task_ids:
            conn.execute(
                update(job_table)
                .where(J.task_id.in_(list(task_ids)), J.lease_owner.is_(None))
                .values(sent_at=None)
            )

    # == while running ===================================================================
    def job_heartbeat(
        self, conn: Connection, worker_id: str, task_ids: Sequence[str], *, lease_until: float
    ) -> tuple[set[str], set[str]]:
        """Extend the leases this worker still holds.

        Returns the ids still leased (a missing id was reaped: its result will be
        refused) and, among them, those whose owner asked to cancel.
        """
        if not task_ids:
            return set(), set()
        renew = {"_worker": worker_id, "_ids": list(task_ids), "_until": lease_until}
        held = set(conn.execute(_RENEW, renew).scalars())
        if not held:
            return held, set()
        cancel = set(conn.execute(_CANCEL_ASKED, {"_ids": list(held)}).scalars())
        return held, cancel

    def attempt_report(
        self,
        conn: Connection,
        worker_id: str,
        reports: Sequence[Report],
        outputs: Sequence[OutputItem],
        *,
        now: float,
        parents: Mapping[str, str] | None = None,
    ) -> list[Change]:
        """Write running attempts' progress and emitted items.

        Every reported record gets a new version; a task with items must be reported.
        Only attempts that still hold their lease are written: the changes returned name
        them, and a reported task missing from them lost its lease. ``parents``: the
        group of each reported task that is a group's part (its progress and items
        reach the group, whose change is returned too).
        """
        if not reports:
            return []
        changed = self._report(conn, worker_id, reports, now)
        self._insert_accepted(conn, outputs, changed, now, parents)
        if parents:
            written = {c.task_id for c in changed}
            groups = {parents[r.task_id] for r in reports if r.task_id in parents}
            groups &= {parents[t] for t in written if t in parents}
            if groups:
                self._group_progress(conn, sorted(groups), now)
                changed += self.task_changes(conn, sorted(groups))
        return changed

    @abc.abstractmethod
    def _report(
        self, conn: Connection, worker_id: str, reports: Sequence[Report], now: float
    ) -> list[Change]:
        """The fenced record writes of ``attempt_report``: the records changed."""

    def _insert_accepted(
        self,
        conn: Connection,
        outputs: Sequence[OutputItem],
        changed: Sequence[Change],
        now: float,
        parents: Mapping[str, str] | None = None,
    ) -> None:
        accepted = {c.task_id for c in changed}
        items = [o for o in outputs if o.task_id in accepted]
        if not items:
            return
        self.output_insert(conn, items, now)
        if parents:
            self._group_items(conn, [o for o in items if o.task_id in parents], parents, now)

    def _group_items(
        self, conn: Connection, items: list[OutputItem], parents: Mapping[str, str], now: float
    ) -> None:
        """Parts' items, also in their groups' output: ``{"part": place, "task_id",
        "item"}``, numbered after the group's newest item (under the group's row lock)."""
        by_group: dict[str, list[OutputItem]] = {}
        for item in items:
            by_group.setdefault(parents[item.task_id], []).append(item)
        for group_id, group_items in sorted(by_group.items()):
            conn.execute(self._locking(select(T.id).where(T.id == group_id))).first()
            places = dict(
                conn.execute(
                    select(T.id, T.group_index).where(T.id.in_({i.task_id for i in group_items}))
                ).all()
            )
            top = self.output_top(conn, group_id)
            copies = [
                OutputItem(
                    group_id,
                    top + k,
                    None
                    if item.ref
                    else {"part": places[item.task_id], "task_id": item.task_id, "item": item.data},
                    item.ref,
                )
                for k, item in enumerate(group_items, start=1)
            ]
            self.output_insert(conn, copies, now)

    # == ending an attempt ===============================================================
    def attempt_finish(
        self,
        conn: Connection,
        worker_id: str,
        outcomes: Sequence[Outcome],
        *,
        now: float,
        outputs: Sequence[OutputItem] = (),
        carrier: Carrier | None = None,
        parents: Mapping[str, str] | None = None,
    ) -> list[Change]:
        """Record how attempts ended, for the attempts that still hold their lease, with
        the items they emitted last (``parents``: the group of each task that is a
        group's part; what its end does to the group is written in this transaction).

        Terminal outcomes delete the job; retries hand it back for ``retry_at``. An
        outcome of an attempt that lost its lease is left out, and so are its items.
        Returns the records changed. If the driver ``carries``, the ``carrier``'s
        changes of the terminal outcomes (those whose status is done) are sent with
        them.
        """
        terminal = [o for o in outcomes if o.status is not Status.QUEUED]
        changed = self._finish_terminal(conn, worker_id, terminal, now, carrier) if terminal else []
        for o in outcomes:
            if o.status is Status.QUEUED:
                change = self._retry(conn, worker_id, o, now)
                if change is not None:
                    changed.append(change)
        self._insert_accepted(conn, outputs, changed, now, parents)
        if parents:
            ended = [c.task_id for c in changed if c.status.done and c.task_id in parents]
            expiry = {o.task_id: o.expires_at for o in terminal}
            changed += self._parts_ended(conn, ended, now, expiry)
        return changed

    @abc.abstractmethod
    def _finish_terminal(
        self,
        conn: Connection,
        worker_id: str,
        outcomes: Sequence[Outcome],
        now: float,
        carrier: Carrier | None,
    ) -> list[Change]:
        """Terminal outcomes of attempts that still hold their lease: the records
        written, their jobs deleted."""

    def _fenced(self, worker_id: str, floor: Any) -> Any:
        """The guard of an attempt's record writes: still running, with the attempt's
        floor, and the worker still holds the job."""
        return (
            (T.status == Status.RUNNING.value)
            & (T.output_floor == floor)
            & exists().where(J.task_id == T.id, J.lease_owner == worker_id)
        )

    def _lock_held(self, conn: Connection, worker_id: str, task_ids: Sequence[str]) -> list[str]:
        """Lock the jobs among ``task_ids`` this worker holds (the job row first, as
        claims and the reaper lock); their ids."""
        query = select(J.task_id).where(J.task_id.in_(list(task_ids)), J.lease_owner == worker_id)
        return list(conn.execute(self._locking(query)).scalars())

    def _locking(self, query: Any) -> Any:
        """``query`` taking row locks, where the database has them."""
        return query

    def _retry(self, conn: Connection, worker_id: str, o: Outcome, now: float) -> Change | None:
        """A failed attempt that will be retried: the record back to ``queued`` for
        ``retry_at``, the job waiting again (with its turn)."""
        retry_at = o.retry_at if o.retry_at is not None else now
        if not self._lock_held(conn, worker_id, [o.task_id]):
            return None
        values: dict[str, Any] = {
            "error_type": o.error_type,
            "error_message": o.error_message,
            "error_detail": o.error_detail,
            "run_at": utc(retry_at),
        }
        if o.progress is not None:
            values.update(zip(_PROGRESS, o.progress, strict=True))
        return self._requeue(conn, worker_id, (o.task_id, o.floor), now, values, run_at=retry_at)

    def _requeue(
        self,
        conn: Connection,
        worker_id: str,
        task: tuple[str, int],
        now: float,
        values: Mapping[str, Any],
        **job: Any,
    ) -> Change | None:
        """The record of an attempt — ``task``: (task id, floor) — back to ``queued``
        (fenced, with ``values``) and its job waiting again (with ``job``'s values); None
        when the attempt lost its lease."""
        task_id, floor = task
        row = conn.execute(
            update(task_table)
            .where(T.id == task_id, self._fenced(worker_id, floor))
            .values(values)
            .values(status=Status.QUEUED.value, updated_at=utc(now), version=T.version + 1)
            .returning(T.id, T.owner, T.version, T.status)
        ).first()
        if row is None:
            return None
        conn.execute(
            update(job_table)
            .where(J.task_id == task_id)
            .values(lease_owner=None, lease_expires_at=None, **job)
        )
        return _change(row)

    def attempt_release(
        self, conn: Connection, worker_id: str, attempts: Sequence[tuple[str, int]], *, now: float
    ) -> list[Change]:
        """Hand back attempts a stopping worker did not finish — (task id, floor) —
        without spending an attempt: their tasks are queued again, to run as if from the
        start."""
        held = set(self._lock_held(conn, worker_id, [task_id for task_id, _ in attempts]))
        spared = {"attempts": T.attempts - 1}
        changes = [
            self._requeue(conn, worker_id, a, now, spared, run_at=now, attempt=J.attempt - 1)
            for a in attempts
            if a[0] in held
        ]
        return [c for c in changes if c is not None]

    # == the reaper ======================================================================
    def job_expire_leases(self, conn: Connection, worker_ids: Sequence[str]) -> int:
        """End the leases of these workers now (they are known to be dead): the reaper
        takes their jobs at its next pass. How many leases ended."""
        if not worker_ids:
            return 0
        expire = update(job_table).where(J.lease_owner.in_(list(worker_ids)))
        return conn.execute(expire.values(lease_expires_at=0.0)).rowcount or 0

    def job_reap(
        self,
        conn: Connection,
        *,
        now: float,
        expiry_for: Callable[[str], datetime | None],
        limit: int = 100,
    ) -> list[Change]:
        """Recover jobs whose lease expired (their worker died or hung).

        A task whose owner asked to cancel ends ``cancelled``; one with attempts left
        goes back to ``queued`` at once; one whose attempts are spent ends ``failed``.
        """
        query = (
            select(
                J.task_id,
                J.name,
                J.lease_owner,
                J.attempt,
                T.max_attempts,
                T.cancel_requested,
                T.parent_id,
            )
            .join(task_table, T.id == J.task_id)
            .where(J.lease_owner.is_not(None), J.lease_expires_at < now)
            .limit(limit)
        )
        expired = conn.execute(self._locking_skip(query)).all()
        stamp = utc(now)
        touched: list[str] = []
        parts_ended: dict[str, datetime | None] = {}
        for row in expired:
            still_expired = (
                (J.task_id == row.task_id)
                & (J.lease_owner == row.lease_owner)
                & (J.lease_expires_at < now)
            )
            if row.cancel_requested or row.attempt >= row.max_attempts:
                if not conn.execute(delete(job_table).where(still_expired)).rowcount:
                    continue
                status, error = (
                    (Status.CANCELLED, CANCELLED_ERROR)
                    if row.cancel_requested
                    else (Status.FAILED, WORKER_LOST)
                )
                values: dict[str, Any] = {
                    "status": status.value,
                    "error_type": error.type,
                    "error_message": error.message,
                    "finished_at": stamp,
                    "expires_at": expiry_for(row.name),
                }
                if row.parent_id is not None:
                    parts_ended[row.task_id] = values["expires_at"]
            else:
                if not conn.execute(
                    update(job_table)
                    .where(still_expired)
                    .values(lease_owner=None, lease_expires_at=None, run_at=now)
                ).rowcount:
                    continue
                values = {"status": Status.QUEUED.value, "run_at": stamp}
            conn.execute(
                update(task_table)
                .where(T.id == row.task_id, T.status == Status.RUNNING.value)
                .values(values | {"updated_at": stamp, "version": T.version + 1})
            )
            touched.append(row.task_id)
        groups = self._parts_ended(conn, parts_ended, now, parts_ended)
        return self.task_changes(conn, touched) + groups

    def _locking_skip(self, query: Any, of: Any = job_table) -> Any:
        """``query`` locking the rows of ``of`` it reads, passing over rows others hold."""
        return query

    # == groups ==============================================================================
    # A group is a record of its own (running from its creation, with no job: no worker
    # runs it) and its parts, ordinary tasks linked to it (``parent_id``, ``group_index``).
    # Whatever ends a part — an outcome, the reaper, a cancel — calls ``_parts_ended`` in
    # the same transaction, so the group hears of every end exactly once: it counts the
    # succeeded parts, fails on the first part that does not succeed (cancelling the
    # others), and when every part has succeeded queues its ``then`` task (created with
    # the group, waiting without a job) or succeeds itself. Locks: a part's rows first,
    # then its group's row; a group's cascade over its parts passes over rows others
    # hold (they are ending: their own group update follows).
    def group_create(
        self,
        conn: Connection,
        group: NewTask,
        parts: Sequence[NewTask],
        then: NewTask | None,
        now: float,
    ) -> None:
        """Insert a group's record (running, with no job), its parts (queued) and its
        ``then`` task (queued, with no job until every part has succeeded)."""
        stamp = utc(now)
        row = task_row(group) | {
            "status": Status.RUNNING.value,
            "started_at": stamp,
            "progress_current": 0.0,
            "progress_total": float(len(parts)),
            "group_size": len(parts),
            "group_done": 0,
            "group_then": None if then is None else then.name,
        }
        conn.execute(insert(task_table).values(row))
        self.task_insert(conn, parts)
        ids = [p.id for p in parts]
        if then is not None:
            conn.execute(insert(task_table).values(task_row(then)))
            ids.append(then.id)
        self._link_parts(conn, group.id, ids)

    def _link_parts(self, conn: Connection, group_id: str, ids: Sequence[str]) -> None:
        """Make the tasks ``ids`` the group's parts, in this order."""
        links = [{"_id": task_id, "_i": i} for i, task_id in enumerate(ids)]
        conn.execute(_LINK_PART.values(parent_id=group_id), links)

    def group_parts(
        self, conn: Connection, group_id: str, owner: str | None, after: int, limit: int
    ) -> list[TaskRecord] | None:
        """The group's parts (and its ``then`` task, last) after place ``after``, in
        order; None when there is no such group for this owner."""
        found = conn.execute(
            select(T.group_size).where(_owned(group_id, owner), T.group_size.is_not(None))
        ).first()
        if found is None:
            return None
        rows = conn.execute(
            select(task_table)
            .where(T.parent_id == group_id, T.group_index > after)
            .order_by(T.group_index)
            .limit(limit)
        )
        return [codec.record(r._mapping) for r in rows]

    def _parts_ended(
        self,
        conn: Connection,
        task_ids: Iterable[str],
        now: float,
        expiry: Mapping[str, datetime | None],
    ) -> list[Change]:
        """What the end of these tasks does to their groups (the tasks that are parts;
        ``expiry``: when each ended task may be purged, which its group follows). The
        groups' changes."""
        ids = list(task_ids)
        if not ids:
            return []
        parts = conn.execute(_PARTS_OF, {"_ids": ids}).all()
        touched: list[str] = []
        for group_id, ended in itertools.groupby(parts, key=lambda p: p.parent_id):
            touched += self._group_after(conn, group_id, list(ended), now, expiry)
        return self.task_changes(conn, touched)

    def _group_after(
        self,
        conn: Connection,
        group_id: str,
        ended: list[Any],
        now: float,
        expiry: Mapping[str, datetime | None],
    ) -> list[str]:
        """The records changed: the group's, and its ``then`` task's when it is queued."""
        group = conn.execute(self._locking(_GROUP_ROW), {"_id": group_id}).first()
        if group is None or group.status != Status.RUNNING.value:
            return []  # ended already (a part ending after its group failed or was cancelled)
        size = group.group_size
        keep = expiry.get(ended[-1].id)
        then = [p for p in ended if p.group_index == size]
        if then:
            t = then[0]
            if t.status == Status.SUCCEEDED.value:
                result = conn.execute(select(T.result, T.result_ref).where(T.id == t.id)).one()
                self._group_end(conn, group_id, Status.SUCCEEDED, now, keep, result=result)
            else:
                error = TaskError(t.error_type or "Error", t.error_message or "")
                self._group_end(conn, group_id, Status.FAILED, now, keep, error=error)
            return [group_id]
        lost = [p for p in ended if p.status != Status.SUCCEEDED.value]
        if lost:
            p = lost[0]
            error = TaskError("PartFailed", _part_lost(p.group_index, p.status, p.error_message))
            self._group_end(conn, group_id, Status.FAILED, now, keep, error=error)
            ended_now, asked = self._cancel_parts(conn, group_id, now, keep)
            return [group_id, *ended_now, *asked]
        done = group.group_done + len(ended)
        conn.execute(_GROUP_DONE, {"_id": group_id, "_done": done})
        self._group_progress(conn, [group_id], now)
        if done < size:
            return [group_id]
        results = [
            None if r.result_ref else r.result
            for r in conn.execute(
                select(T.result, T.result_ref)
                .where(T.parent_id == group_id, T.group_index < size)
                .order_by(T.group_index)
            )
        ]
        if group.group_then is None:
            self._group_end(conn, group_id, Status.SUCCEEDED, now, keep, result=(results, None))
            return [group_id]
        then_row = conn.execute(
            select(T.id, T.name, T.owner, T.priority).where(
                T.parent_id == group_id, T.group_index == size, T.status == Status.QUEUED.value
            )
        ).one()
        conn.execute(
            update(task_table)
            .where(T.id == then_row.id)
            .values(payload={"results": results}, run_at=utc(now), updated_at=utc(now))
        )
        job = NewTask(
            id=then_row.id,
            owner=then_row.owner,
            name=then_row.name,
            payload=None,
            payload_json="null",
            max_attempts=1,
            priority=then_row.priority,
            run_at=now,
            created_at=now,
        )
        self._jobs_insert(conn, [job])
        return [group_id, then_row.id]

    def _group_end(
        self,
        conn: Connection,
        group_id: str,
        status: Status,
        now: float,
        expires_at: datetime | None,
        *,
        result: Any = None,
        error: TaskError | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "status": status.value,
            "finished_at": utc(now),
            "updated_at": utc(now),
            "expires_at": expires_at,
            "version": T.version + 1,
        }
        if result is not None:
            values |= {"result": result[0], "result_ref": result[1]}
        if status is Status.SUCCEEDED:
            values["progress_current"] = T.progress_total
        if error is not None:
            values |= {"error_type": error.type, "error_message": error.message}
        conn.execute(
            update(task_table)
            .where(T.id == group_id, T.status == Status.RUNNING.value)
            .values(values)
        )

    def _cancel_parts(
        self, conn: Connection, group_id: str, now: float, expires_at: datetime | None
    ) -> tuple[list[str], list[str]]:
        """Cancel a group's parts that have not ended: queued ones at once, running ones
        asked to stop (rows another transaction holds are passed over: they are ending).
        The ids of the parts cancelled and of the running parts asked to stop."""
        stamp = utc(now)
        queued = select(T.id).where(T.parent_id == group_id, T.status == Status.QUEUED.value)
        ids = list(conn.execute(self._locking_skip(queued, of=task_table)).scalars())
        if ids:
            conn.execute(delete(job_table).where(J.task_id.in_(ids), J.lease_owner.is_(None)))
            conn.execute(
                update(task_table)
                .where(T.id.in_(ids), T.status == Status.QUEUED.value)
                .where(~exists().where(J.task_id == T.id))
                .values(
                    status=Status.CANCELLED.value,
                    cancel_requested=True,
                    error_type=CANCELLED_ERROR.type,
                    error_message=CANCELLED_ERROR.message,
                    finished_at=stamp,
                    expires_at=expires_at,
                    updated_at=stamp,
                    version=T.version + 1,
                )
            )
        running = select(T.id).where(
            T.parent_id == group_id,
            T.status == Status.RUNNING.value,
            T.cancel_requested.is_(False),
        )
        asked = list(conn.execute(running).scalars())
        # The flag on the rows no other transaction holds (a part reporting progress
        # holds its row, then waits for the group's, which this one holds). The others
        # hear of it all the same: a heartbeat stops a part whose group has ended.
        flagged = list(conn.execute(self._locking_skip(running, of=task_table)).scalars())
        if flagged:
            conn.execute(
                update(task_table)
                .where(T.id.in_(flagged))
                .values(cancel_requested=True, updated_at=stamp, version=T.version + 1)
            )
        return ids, asked

    def _group_progress(self, conn: Connection, group_ids: list[str], now: float) -> None:
        """Bring running groups' progress up to date: their succeeded parts plus each
        running part's share done (never lower than it was)."""
        if group_ids:
            conn.execute(_GROUP_PROGRESS, {"_ids": group_ids, "_at": utc(now)})

    # == schedules ===========================================================================
    # Owner-scoped like the task records: ``owner`` None means any owner (admin code).
    def schedule_insert(self, conn: Connection, row: Mapping[str, Any], limit: int | None) -> bool:
        """Insert a schedule, unless its owner already has ``limit`` schedules (then
        nothing is written: False). Creates of one owner take turns until commit, so
        concurrent ones cannot pass the limit together."""
        if limit is not None:
            self._serialize_owner(conn, row["owner"])
            held = conn.execute(
                select(func.count())
                .select_from(schedule_table)
                .where(S.owner == row["owner"], S.code_key.is_(None))
            ).scalar_one()
            if held >= limit:
                return False
        conn.execute(insert(schedule_table).values(dict(row)))
        return True

    def _serialize_owner(self, conn: Connection, owner: str) -> None:
        """Make this owner's schedule creates take turns until this transaction ends.
        SQLite's writers take turns already."""
        return None

    def schedule_get(
        self, conn: Connection, schedule_id: str, owner: str | None
    ) -> Schedule | None:
        query = select(schedule_table).where(S.id == schedule_id, *_scheduled_by(owner))
        row = conn.execute(query).first()
        return None if row is None else codec.schedule(row._mapping)

    def schedule_list(
        self, conn: Connection, owner: str | None, limit: int, after: str | None
    ) -> list[Schedule]:
        """The owner's schedules (every owner's, for None) in id order (oldest first),
        ``limit`` of them after the id ``after``."""
        query = select(schedule_table).where(*_scheduled_by(owner))
        if after is not None:
            query = query.where(S.id > after)
        rows = conn.execute(query.order_by(S.id).limit(limit))
        return [codec.schedule(r._mapping) for r in rows]

    def schedule_set_paused(
        self,
        conn: Connection,
        schedule_id: str,
        owner: str | None,
        paused: bool,
        next_run_at: Callable[[Schedule], float | None],
        now: datetime,
    ) -> Schedule | None:
        """Pause or resume a schedule (a change only if it is not so already): paused,
        it has no next tick; resumed, its next tick is ``next_run_at(schedule)``. The
        schedule after the change; None when there is no such schedule (for this
        owner)."""
        found = self.schedule_get(conn, schedule_id, owner)
        if found is None or found.paused == paused:
            return found
        conn.execute(
            update(schedule_table)
            .where(S.id == schedule_id)
            .values(
                paused=paused,
                next_run_at=None if paused else next_run_at(found),
                updated_at=now,
            )
        )
        return self.schedule_get(conn, schedule_id, owner)

    def schedule_delete(self, conn: Connection, schedule_id: str, owner: str | None) -> bool:
        """Delete a schedule (the tasks it created stay). False: no such schedule."""
        query = delete(schedule_table).where(S.id == schedule_id, *_scheduled_by(owner))
        return bool(conn.execute(query).rowcount)

    def schedule_next_due(self, conn: Connection, names: Sequence[str]) -> float | None:
        """The earliest next tick among running schedules of ``names``."""
        query = select(func.min(S.next_run_at)).where(S.paused.is_(False), S.name.in_(list(names)))
        return conn.execute(query).scalar()

    def schedule_due(
        self, conn: Connection, names: Sequence[str], now: float, limit: int
    ) -> list[tuple[Schedule, float]]:
        """Up to ``limit`` running schedules of ``names`` whose next tick is due, each
        with that tick as stored (the guard of ``schedule_fired``), locked until commit
        (PostgreSQL passes over schedules another worker is firing)."""
        query = (
            select(schedule_table)
            .where(S.paused.is_(False), S.next_run_at <= now, S.name.in_(list(names)))
            .order_by(S.next_run_at)
            .limit(limit)
        )
        rows = conn.execute(self._locking_skip(query, of=schedule_table))
        return [(codec.schedule(r._mapping), r.next_run_at) for r in rows]

    def schedule_fire(
        self,
        conn: Connection,
        ticks: Sequence[tuple[NewTask, float, float]],
        now: datetime,
    ) -> list[NewTask]:
        """Create the tasks of due ticks and move their schedules on: per tick, (its
        task, the tick, the schedule's next tick). The schedules are those
        ``schedule_due`` locked in this transaction, so no other worker fires them
        meanwhile; tasks that carry no other key are inserted together (the tick's
        unique index still refuses a second task of a tick: the transaction fails), a
        unique task's one by one (an equal active task makes none). The tasks created."""
        created: list[NewTask] = []
        plain = [task for task, _, _ in ticks if task.unique_key is None]
        if plain:
            conn.execute(insert(task_table), [task_row(t) for t in plain])
            self._jobs_insert(conn, plain)
            created += plain
        for task, _, _ in ticks:
            if task.unique_key is not None and self.task_insert_keyed(conn, task) is None:
                created.append(task)
        made = {t.id for t in created}
        moves = [
            {
                "_id": task.schedule_id,
                "_tick": tick,
                "_next": following,
                "_now": now,
                "_task": task.id if task.id in made else None,
                "_at": utc(tick) if task.id in made else None,
            }
            for task, tick, following in ticks
        ]
        conn.execute(_SCHEDULE_MOVE, moves)
        return created

    def schedule_declared(self, conn: Connection) -> dict[str, tuple[Schedule, str | None]]:
        """The schedules declared in code: key → (schedule, hash of its definition)."""
        rows = conn.execute(select(schedule_table).where(S.code_key.is_not(None)))
        return {r.code_key: (codec.schedule(r._mapping), r.definition) for r in rows}

    def schedule_declare(
        self, conn: Connection, row: Mapping[str, Any], replaces: str | None
    ) -> None:
        """Write a schedule declared in code: a new row, or (``replaces``: its id) a new
        definition of the row under its key (its state — paused, last run — stays)."""
        if replaces is None:
            conn.execute(insert(schedule_table).values(dict(row)))
            return
        keep = ("id", "created_at", "paused", "last_task_id", "last_run_at")
        values = {k: v for k, v in row.items() if k not in keep}
        conn.execute(update(schedule_table).where(S.id == replaces).values(values))

    def schedule_undeclare(self, conn: Connection, keys: Sequence[str]) -> int:
        """Delete the schedules declared in code under ``keys``; how many went."""
        if not keys:
            return 0
        query = delete(schedule_table).where(S.code_key.in_(list(keys)))
        return conn.execute(query).rowcount or 0

    def worker_declarations(self, conn: Connection, since: datetime) -> list[dict[str, str]]:
        """What the code of each worker seen since ``since`` declares: key → hash."""
        rows = conn.execute(select(W.schedules).where(W.seen_at >= since))
        return [r.schedules or {} for r in rows]

    # == the worker registry and the admin figures =========================================
    def worker_register(self, conn: Connection, row: Mapping[str, Any]) -> None:
        conn.execute(delete(worker_table).where(W.id == row["id"]))
        conn.execute(insert(worker_table).values(dict(row)))

    def worker_beat(self, conn: Connection, worker_id: str, now: datetime) -> None:
        conn.execute(update(worker_table).where(W.id == worker_id).values(seen_at=now))

    def worker_unregister(self, conn: Connection, worker_id: str) -> None:
        conn.execute(delete(worker_table).where(W.id == worker_id))

    def worker_on_host(
        self, conn: Connection, hostname: str, exclude: str
    ) -> list[tuple[str, int, str | None]]:
        """(id, pid, process_key) of the other workers registered under ``hostname``."""
        rows = conn.execute(
            select(W.id, W.pid, W.process_key).where(W.hostname == hostname, W.id != exclude)
        )
        return [(r.id, r.pid, r.process_key) for r in rows]

    def worker_forget(self, conn: Connection, worker_ids: Sequence[str]) -> None:
        """Delete these workers' rows (workers known to be dead)."""
        if worker_ids:
            conn.execute(delete(worker_table).where(W.id.in_(list(worker_ids))))

    def worker_forget_silent(self, conn: Connection, before: datetime) -> int:
        """Delete the rows of workers not seen since ``before``."""
        return conn.execute(delete(worker_table).where(W.seen_at < before)).rowcount or 0

    def worker_peers(self, conn: Connection, since: datetime) -> list[tuple[str, list[str]]]:
        """(id, task names) of the workers seen since ``since``."""
        rows = conn.execute(select(W.id, W.names).where(W.seen_at >= since))
        return [(r.id, list(r.names or ())) for r in rows]

    def worker_alive(self, conn: Connection, since: datetime) -> list[dict[str, Any]]:
        """Workers seen since ``since``, each with the tasks it holds leases on."""
        # process_key is internal to liveness, schedules to the schedules' reconciling.
        shown = [c for c in worker_table.c if c.name not in ("process_key", "schedules")]
        workers = [
            dict(r._mapping, running=[])
            for r in conn.execute(select(*shown).where(W.seen_at >= since).order_by(W.id))
        ]
        if not workers:
            return []
        running: dict[str, list[dict[str, Any]]] = {w["id"]: w["running"] for w in workers}
        rows = conn.execute(
            select(J.lease_owner, J.task_id, J.name, J.owner).where(
                J.lease_owner.in_(list(running))
            )
        )
        for r in rows:
            running[r.lease_owner].append({"task_id": r.task_id, "name": r.name, "owner": r.owner})
        return workers

    def stats_status_counts(self, conn: Connection) -> dict[str, int]:
        """Records by status (every owner)."""
        rows = conn.execute(select(T.status, func.count()).group_by(T.status))
        return {s.value: 0 for s in Status} | {status: n for status, n in rows}

    def stats_name_status_counts(self, conn: Connection) -> list[tuple[str, str, int, int]]:
        """(name, status, records, records that started) for every name and status."""
        rows = conn.execute(
            select(T.name, T.status, func.count(), func.count(T.started_at)).group_by(
                T.name, T.status
            )
        )
        return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    def stats_finished_since(
        self, conn: Connection, since: datetime, limit: int = 200_000
    ) -> list[tuple[str, str, datetime, datetime | None, datetime]]:
        """(name, status, created_at, started_at, finished_at) of records finished since
        ``since`` (found through the ``updated_at`` index: a finished record's last
        change is its finish)."""
        rows = conn.execute(
            select(T.name, T.status, T.created_at, T.started_at, T.finished_at)
            .where(T.updated_at >= since, T.finished_at >= since)
            .limit(limit)
        )
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def stats_queue_state(self, conn: Connection, now: float) -> tuple[int, int, float | None]:
        """(jobs waiting, of them due now, run_at of the oldest due one)."""
        waiting = conn.execute(
            select(func.count()).select_from(job_table).where(J.lease_owner.is_(None))
        ).scalar_one()
        due, oldest = conn.execute(
            select(func.count(), func.min(J.run_at)).where(J.lease_owner.is_(None), J.run_at <= now)
        ).one()
        return int(waiting), int(due), oldest

"""The PostgreSQL driver: set-based statements, one round trip each.

Round trips are the cost here (each is 0.1–0.3 ms, more than most statements), so the
hot paths send arrays, one per column, and work on them with ``unnest``: a submit
inserts the records and their jobs in one statement, a claim picks, leases and starts
in one (``FOR UPDATE SKIP LOCKED``: workers never wait for each other's rows nor get the
same job), a report or a batch of outcomes is one statement whatever its size. Values
are converted as the SQLAlchemy types convert them (``JSON`` as ``json.dumps`` text,
``UTCDateTime`` as an aware UTC datetime). Writes that touch both tables lock the job
row first, as claims and the reaper do, so none can deadlock with another.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    case,
    delete,
    func,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from ..records import Change, Status
from .codec import utc
from .driver import CLAIM_ORDER, OUT, Driver, J, T, _cursor, _ids, task_row
from .schema import job_table, task_table
from .values import Claimed, NewTask, Outcome, OutputItem, Report

_TASK_COLUMNS = (
    ("id", "varchar"),
    ("owner", "varchar"),
    ("name", "varchar"),
    ("payload", "json"),
    ("status", "varchar"),
    ("attempts", "int"),
    ("max_attempts", "int"),
    ("priority", "int"),
    ("run_at", "timestamptz"),
    ("cancel_requested", "bool"),
    ("version", "int"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)
_JOB_COLUMNS = (
    ("task_id", "varchar"),
    ("name", "varchar"),
    ("owner", "varchar"),
    ("priority", "int"),
    ("run_at", "float8"),
)


def _unnest(columns: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"%s::{kind}[]" for _, kind in columns)


# An owner's last waiting turn of a task name, and the name's frontier (its lowest waiting
# turn), each one step down an index ("ORDER BY … LIMIT 1", which only the index that
# holds the order can serve: with min()/max(), and the stale statistics of a table that
# was never analyzed, PostgreSQL was seen to walk every waiting job of the name).
_LAST_TURN = (
    "(SELECT j.turn FROM errands_job j WHERE j.lease_owner IS NULL AND j.owner = {owner} "
    "AND j.name = {name} ORDER BY j.turn DESC LIMIT 1)"
)
_FRONTIER = (
    "(SELECT j.turn FROM errands_job j WHERE j.lease_owner IS NULL AND j.name = {name} "
    "ORDER BY j.turn LIMIT 1)"
)


# Jobs get their turns (see ``store/driver.py``): each (owner, name) group of the batch
# continues after the owner's last waiting turn of that name, no earlier than the
# name's frontier (its lowest waiting turn), one turn per job.
_JOB_NAMES = ", ".join(c for c, _ in _JOB_COLUMNS)
_JOBS_WITH_TURNS = (
    f"x AS (SELECT * FROM unnest({_unnest(_JOB_COLUMNS)}) WITH ORDINALITY "
    f"AS x ({_JOB_NAMES}, ord)), "
    # MATERIALIZED: the bases are computed once per group, before any row is inserted
    # (inlined, PostgreSQL evaluates them per row, and each probe then walks past the
    # rows this statement already inserted).
    "b AS MATERIALIZED (SELECT g.owner, g.name, greatest("
    f"{_LAST_TURN.format(owner='g.owner', name='g.name')} + 1, "
    f"{_FRONTIER.format(name='g.name')}, "
    "0) AS base FROM (SELECT DISTINCT owner, name FROM x) g) "
    f"INSERT INTO errands_job ({_JOB_NAMES}, turn) "
    f"SELECT {', '.join('x.' + c for c, _ in _JOB_COLUMNS)}, "
    "b.base + row_number() OVER (PARTITION BY x.owner, x.name ORDER BY x.ord) - 1 "
    "FROM x JOIN b ON b.owner = x.owner AND b.name = x.name"
)
# The common case, every job of one owner and task name (a submit, most batches): the
# same turns, with a statement PostgreSQL plans in a fraction of the time.
_ONE_GROUP_WITH_TURNS = (
    f"x AS (SELECT * FROM unnest({_unnest(_JOB_COLUMNS)}) WITH ORDINALITY "
    f"AS x ({_JOB_NAMES}, ord)) "
    f"INSERT INTO errands_job ({_JOB_NAMES}, turn) "
    f"SELECT {', '.join('x.' + c for c, _ in _JOB_COLUMNS)}, "
    f"greatest({_LAST_TURN.format(owner='%s', name='%s')} + 1, "
    f"{_FRONTIER.format(name='%s')}, "
    "0) + x.ord - 1 FROM x"
)
_NEW_RECORDS = (
    "WITH new_records AS ("
    f"INSERT INTO errands_task ({', '.join(c for c, _ in _TASK_COLUMNS)}) "
    f"SELECT * FROM unnest({_unnest(_TASK_COLUMNS)})), "
)
_INSERT = _NEW_RECORDS + _JOBS_WITH_TURNS
_INSERT_ONE_GROUP = _NEW_RECORDS + _ONE_GROUP_WITH_TURNS
_INSERT_JOBS = "WITH " + _JOBS_WITH_TURNS
_INSERT_JOBS_ONE_GROUP = "WITH " + _ONE_GROUP_WITH_TURNS


# -- claims ------------------------------------------------------------------------------
# A new attempt's floor, over the record being started: for a task that ran before, past
# every item stored so far (and past the last floor, so each attempt's floor is its
# own); the first run keeps 0.
_NEXT_FLOOR = case(
    (T.started_at.is_(None), T.output_floor),
    else_=func.greatest(
        T.output_floor,
        func.coalesce(select(func.max(OUT.seq)).where(OUT.task_id == T.id).scalar_subquery(), 0),
    )
    + 1,
)
# What a claim reads back from a started record (the fields of ``Claimed``).
_STARTED = (
    T.id,
    T.name,
    T.owner,
    T.payload,
    T.attempts,
    T.max_attempts,
    T.version,
    T.cancel_requested,
    T.output_floor,
)


def _claim_statement(chosen: bool = False) -> Any:
    """The whole claim as one statement (one round trip, and in autocommit no
    BEGIN/COMMIT): pick due jobs (SKIP LOCKED) — or, with ``chosen``, the jobs
    ``_chosen`` if still waiting — lease them, start their records, and say when the
    next job not taken becomes due. One row per leased job — ``id`` is NULL for a job
    whose record is no longer queued — or one row of NULLs and ``next_due``."""
    if chosen:
        picked = (
            select(J.task_id)
            .where(
                J.lease_owner.is_(None), J.task_id.in_(_ids("_chosen")), J.name.in_(_ids("_names"))
            )
            # Wait for a row another transaction holds (it may be marking the job sent)
            # and look again: skipped, a job named by its message would not run.
            .with_for_update()
            .cte("picked")
        )
    else:
        picked = (
            select(J.task_id)
            .where(
                J.lease_owner.is_(None), J.run_at <= bindparam("_now"), J.name.in_(_ids("_names"))
            )
            .order_by(*CLAIM_ORDER)
            .limit(bindparam("_limit"))
            .with_for_update(skip_locked=True)
            .cte("picked")
        )
    leased = (
        update(job_table)
        .where(J.task_id == picked.c.task_id)
        .values(
            lease_owner=bindparam("_worker"),
            lease_expires_at=bindparam("_until"),
            attempt=J.attempt + 1,
        )
        .returning(J.task_id)
        .cte("leased")
    )
    started = (
        update(task_table)
        .where(T.id == leased.c.task_id, T.status == Status.QUEUED.value)
        .values(
            status=Status.RUNNING.value,
            attempts=T.attempts + 1,
            started_at=bindparam("_stamp", type_=task_table.c.started_at.type),
            updated_at=bindparam("_stamp", type_=task_table.c.updated_at.type),
            version=T.version + 1,
            progress_current=None,
            progress_total=None,
            progress_message=None,
            output_floor=_NEXT_FLOOR,
        )
        .returning(*_STARTED)
        .cte("started")
    )
    # Only asked when fewer jobs than the limit were due (PostgreSQL runs a subquery in
    # an untaken CASE branch not at all): then every job due now was leased (or is
    # locked by another worker's claim), so the next one is the earliest in the future.
    earliest = (
        select(func.min(J.run_at))
        .where(J.lease_owner.is_(None), J.name.in_(_ids("_names")), J.run_at > bindparam("_now"))
        .scalar_subquery()
    )
    fewer = select(func.count()).select_from(leased).scalar_subquery() < bindparam("_limit")
    next_due = select(case((fewer, earliest), else_=None).label("next_due")).subquery("due")
    return select(leased.c.task_id.label("leased_id"), *started.c, next_due.c.next_due).select_from(
        next_due.outerjoin(leased, true()).outerjoin(started, started.c.id == leased.c.task_id)
    )


_CLAIM = _claim_statement()
_CLAIM_CHOSEN = _claim_statement(chosen=True)
_DROP_JOBS = delete(job_table).where(J.task_id.in_(_ids("_ids")))
# Claims under caps take turns (the key is errands' own constant).
_CAPS_LOCK = text("SELECT pg_advisory_xact_lock(7245106329)")


# -- an attempt's writes, fenced (see ``store/driver.py``) --------------------------------
# Guarded by the attempt's floor and the worker's lease; "IS TRUE" keeps the planner on
# the primary key (with statistics from a queue full of queued tasks it would otherwise
# walk the status index, "running" looking rare).
_FENCE = (
    "t.id = u.id AND (t.status = 'running') IS TRUE AND t.output_floor = u.floor AND EXISTS "
    "(SELECT 1 FROM errands_job j WHERE j.task_id = t.id AND j.lease_owner = %(_worker)s)"
)
_REPORT = (
    "UPDATE errands_task t SET "
    + ", ".join(
        f"{c} = CASE WHEN u.has_progress THEN u.{c} ELSE t.{c} END"
        for c in ("progress_current", "progress_total", "progress_message")
    )
    + ", updated_at = %(_stamp)s, version = t.version + 1 FROM unnest(%(id)s::varchar[], "
    "%(floor)s::int[], %(has_progress)s::bool[], %(progress_current)s::float8[], "
    "%(progress_total)s::float8[], %(progress_message)s::text[]) AS u (id, floor, "
    "has_progress, progress_current, progress_total, progress_message) WHERE "
    + _FENCE
    + " RETURNING t.id, t.owner, t.version, t.status"
)


_INSERT_OUTPUTS = (
    "INSERT INTO errands_output (task_id, seq, data, ref, created_at) "
    "SELECT i.task_id, i.seq, i.data, i.ref, %s FROM unnest(%s::varchar[], %s::int[], "
    "%s::json[], %s::varchar[]) AS i (task_id, seq, data, ref)"
)


_OUTCOME_COLUMNS = (
    ("id", "varchar"),
    ("floor", "int"),
    ("status", "varchar"),
    ("result", "json"),
    ("result_ref", "varchar"),
    ("error_type", "varchar"),
    ("error_message", "text"),
    ("error_detail", "text"),
    ("expires_at", "timestamptz"),
    ("has_progress", "bool"),
    ("progress_current", "float8"),
    ("progress_total", "float8"),
    ("progress_message", "text"),
)
_KEEP_UNLESS_REPORTED = ("progress_current", "progress_total", "progress_message")
# Deleting the job locks it first (claims and the reaper lock the job, then the record);
# it goes only when its attempt still holds the lease: this worker holds the job and the
# record is running with the attempt's floor. (The record's status and floor change only
# under the job's lock, so reading them beside the job's delete is enough.) Then exactly
# those records get their outcomes.
_FINISH = (
    f"WITH u ({', '.join(c for c, _ in _OUTCOME_COLUMNS)}) AS (SELECT * FROM unnest("
    + ", ".join(f"%({c})s::{kind}[]" for c, kind in _OUTCOME_COLUMNS)
    + ")), held AS (DELETE FROM errands_job j USING u, errands_task t "
    "WHERE j.task_id = u.id AND j.lease_owner = %(_worker)s AND t.id = u.id "
    "AND (t.status = 'running') IS TRUE AND t.output_floor = u.floor RETURNING j.task_id) "
    "UPDATE errands_task t SET status = u.status, result = u.result, "
    "result_ref = u.result_ref, error_type = u.error_type, error_message = u.error_message, "
    "error_detail = u.error_detail, finished_at = %(_stamp)s, expires_at = u.expires_at, "
    + ", ".join(
        f"{c} = CASE WHEN u.has_progress THEN u.{c} ELSE t.{c} END" for c in _KEEP_UNLESS_REPORTED
    )
    + ", updated_at = %(_stamp)s, version = t.version + 1 "
    "FROM u JOIN held ON held.task_id = u.id "
    "WHERE t.id = u.id AND (t.status = 'running') IS TRUE "
    "RETURNING t.id, t.owner, t.version, t.status"
)


class PostgresDriver(Driver):
    dialect = "postgresql"
    dialect_insert = staticmethod(pg_insert)

    # -- records ------------------------------------------------------------------------
    def task_insert(self, conn: Connection, tasks: Sequence[NewTask]) -> None:
        """New records and their jobs, in one statement."""
        if not tasks:
            return
        rows = [task_row(t) for t in tasks]  # as SQLAlchemy's types take them; JSON as text
        params = [
            [json.dumps(r[c]) if c == "payload" else r[c] for r in rows] for c, _ in _TASK_COLUMNS
        ]
        group = _one_group(tasks)
        if group is None:
            _cursor(conn).execute(_INSERT, params + _job_arrays(tasks))
        else:
            _cursor(conn).execute(
                _INSERT_ONE_GROUP, [*params, *_job_arrays(tasks), *group, group[1]]
            )

    def _jobs_insert(self, conn: Connection, tasks: Sequence[NewTask]) -> None:
        group = _one_group(tasks)
        if group is None:
            _cursor(conn).execute(_INSERT_JOBS, _job_arrays(tasks))
        else:
            _cursor(conn).execute(_INSERT_JOBS_ONE_GROUP, [*_job_arrays(tasks), *group, group[1]])

    # -- claims -------------------------------------------------------------------------
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
        params = {
            "_now": now,
            "_names": list(names),
            "_limit": limit,
            "_worker": worker_id,
            "_until": now + lease_seconds,
            "_stamp": utc(now),
        }
        if chosen is None:
            rows = conn.execute(_CLAIM, params).all()
        else:
            rows = conn.execute(_CLAIM_CHOSEN, params | {"_chosen": list(chosen)}).all()
        due = rows[0].next_due if rows else None
        started = [r for r in rows if r.id is not None]
        orphans = [r.leased_id for r in rows if r.leased_id is not None and r.id is None]
        if orphans:  # a job whose record is no longer queued: drop it
            conn.execute(_DROP_JOBS, {"_ids": orphans})
        # Each row: leased_id, then _STARTED's columns (Claimed's fields, in order).
        return [Claimed(*r[1:10]) for r in started], due

    def _serialize_capped_claims(self, conn: Connection) -> None:
        conn.execute(_CAPS_LOCK)

    def _locking(self, query: Any) -> Any:
        return query.with_for_update()

    def _locking_skip(self, query: Any) -> Any:
        return query.with_for_update(of=job_table, skip_locked=True)

    # -- an attempt's writes ----------------------------------------------------------------
    def _report(
        self, conn: Connection, worker_id: str, reports: Sequence[Report], now: float
    ) -> list[Change]:
        """Progress (or a new version) of running attempts, in one statement (rows in
        id order, as every statement that writes several rows locks them: no deadlock)."""
        reports = sorted(reports, key=lambda r: r.task_id)
        params: dict[str, Any] = {
            "id": [r.task_id for r in reports],
            "floor": [r.floor for r in reports],
            "has_progress": [r.progress is not None for r in reports],
            "_worker": worker_id,
            "_stamp": utc(now),
        }
        for i, column in enumerate(("progress_current", "progress_total", "progress_message")):
            params[column] = [None if r.progress is None else r.progress[i] for r in reports]
        rows = _cursor(conn).execute(_REPORT, params).fetchall()
        return [Change(r[0], r[1], r[2], Status(r[3])) for r in rows]

    def output_insert(self, conn: Connection, items: Sequence[OutputItem], now: float) -> None:
        """Emitted items, in one statement whatever their number."""
        _cursor(conn).execute(
            _INSERT_OUTPUTS,
            (
                utc(now),
                [o.task_id for o in items],
                [o.seq for o in items],
                [json.dumps(o.data) for o in items],
                [o.ref for o in items],
            ),
        )

    def _finish_terminal(
        self, conn: Connection, worker_id: str, outcomes: Sequence[Outcome], now: float
    ) -> list[Change]:
        """Terminal outcomes in one statement (see ``_FINISH``), in id order (as the
        heartbeat's index scan locks the jobs: no deadlock between the two)."""
        params: dict[str, Any] = {c: [] for c, _ in _OUTCOME_COLUMNS}
        for o in sorted(outcomes, key=lambda o: o.task_id):
            current, total, message = o.progress if o.progress is not None else (None,) * 3
            for column, value in (
                ("id", o.task_id),
                ("floor", o.floor),
                ("status", o.status.value),
                ("result", json.dumps(o.result)),
                ("result_ref", o.result_ref),
                ("error_type", o.error_type),
                ("error_message", o.error_message),
                ("error_detail", o.error_detail),
                ("expires_at", o.expires_at),
                ("has_progress", o.progress is not None),
                ("progress_current", current),
                ("progress_total", total),
                ("progress_message", message),
            ):
                params[column].append(value)
        params["_worker"], params["_stamp"] = worker_id, utc(now)
        rows = _cursor(conn).execute(_FINISH, params).fetchall()
        return [Change(r[0], r[1], r[2], Status(r[3])) for r in rows]


def _one_group(tasks: Sequence[NewTask]) -> tuple[str, str] | None:
    """(owner, name) if every task has the same ones."""
    owner, name = tasks[0].owner, tasks[0].name
    if all(t.owner == owner and t.name == name for t in tasks):
        return owner, name
    return None


def _job_arrays(tasks: Sequence[NewTask]) -> list[list[Any]]:
    return [
        [t.id for t in tasks],
        [t.name for t in tasks],
        [t.owner for t in tasks],
        [t.priority for t in tasks],
        [t.run_at for t in tasks],
    ]


# -- LISTEN/NOTIFY (events/postgres.py), on its own autocommit psycopg connections ----
def notify(conn: Any, messages: Sequence[tuple[str, str]]) -> None:
    """Send (channel, payload) notifications in one statement."""
    if len(messages) == 1:
        conn.execute("SELECT pg_notify(%s, %s)", messages[0])
    else:
        conn.execute(
            "SELECT pg_notify(c, p) FROM unnest(%s::text[], %s::text[]) AS m(c, p)",
            ([c for c, _ in messages], [p for _, p in messages]),
        )


def listen(conn: Any, channel: str) -> None:
    """Subscribe the connection to ``channel`` (a fixed identifier of errands')."""
    conn.execute(f"LISTEN {channel}")

"""The PostgreSQL driver: set-based statements, one round trip each.

Round trips are the cost here (each is 0.1–0.3 ms, more than most statements), so the
hot paths send arrays, one per column, and work on them with ``unnest``: a submit
inserts the records and their jobs in one statement, a claim picks, leases and starts
in one (``FOR UPDATE SKIP LOCKED``: workers never wait for each other's rows nor get the
same job), a report or a batch of outcomes is one statement whatever its size. Values
are converted as the SQLAlchemy types convert them (``JSON`` as ``codec.json_text``,
``UTCDateTime`` as an aware UTC datetime). Writes that touch both tables lock the job
row first, as claims and the reaper do, so none can deadlock with another.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    Connection,
    String,
    any_,
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
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

from ..records import Change, Status
from .codec import json_text, utc
from .driver import CLAIM_ORDER, OUT, Driver, J, T, _cursor, _ids
from .schema import job_table, task_table
from .values import Carrier, Claimed, NewTask, Outcome, OutputItem, Report

# -- new records and their jobs ----------------------------------------------------------
# Several new tasks travel as one JSON parameter, an array of rows (``_rows``: PostgreSQL
# parses it in C, where psycopg would encode one array per column in Python); a single
# task as plain values.
_TASK_COLUMNS = (
    "id, owner, name, payload, status, attempts, max_attempts, priority, run_at, "
    "cancel_requested, version, created_at, updated_at"
)
_JOB_COLUMNS = "task_id, name, owner, priority, run_at"
_X = (
    "x AS (SELECT r.e->>0 AS task_id, r.e->>1 AS owner, r.e->>2 AS name, "
    "coalesce((r.e->>9)::json, r.e->3) AS payload, "
    "(r.e->>4)::int AS max_attempts, (r.e->>5)::int AS priority, "
    "(r.e->>6)::timestamptz AS run_stamp, (r.e->>7)::timestamptz AS created_at, "
    "(r.e->>8)::float8 AS run_at, r.ord FROM json_array_elements(%s::json) "
    "WITH ORDINALITY AS r (e, ord))"
)
_NEW_RECORDS = (
    f"new_records AS (INSERT INTO errands_task ({_TASK_COLUMNS}) SELECT task_id, owner, "
    "name, payload, 'queued', 0, max_attempts, priority, run_stamp, false, 1, created_at, "
    "created_at FROM x)"
)


_NUL = "\\u0000"


def _rows(tasks: Sequence[NewTask], *, payloads: bool = True) -> str:
    """The JSON parameter of ``_X`` (the payloads as they were encoded when checked;
    without ``payloads``, null: inserting jobs alone needs none, and a payload's text
    may hold what PostgreSQL cannot turn into text, such as an escaped NUL)."""
    # The tasks of one submit mostly share their owner, name and times: each distinct
    # value is encoded once.
    texts: dict[object, str] = {}

    def text(value: object) -> str:
        found = texts.get(value)
        if found is None:
            raw = utc(value).isoformat() if isinstance(value, float) else value
            found = texts[value] = json.dumps(raw)
        return found

    # A payload holding an escaped NUL travels as a JSON string (its 10th element):
    # PostgreSQL's JSON operators refuse to read "\u0000" anywhere in a row they read
    # from, while the json type stores it.
    def payload(t: NewTask) -> str:
        return t.payload_json if payloads and _NUL not in t.payload_json else "null"

    def unparsed(t: NewTask) -> str:
        return f",{json.dumps(t.payload_json)}" if payloads and _NUL in t.payload_json else ""

    return (
        "["
        + ",".join(
            f'["{t.id}",{text(t.owner)},{text(t.name)},{payload(t)},'
            f"{t.max_attempts},{t.priority},{text(t.run_at)},{text(t.created_at)},{t.run_at!r}"
            f"{unparsed(t)}]"
            for t in tasks
        )
        + "]"
    )


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
# name's frontier (its lowest waiting turn), one turn per job. Each statement is a list
# of common table expressions and a final INSERT of the jobs (see _statement).
_X_JOBS = ", ".join("x." + c.strip() for c in _JOB_COLUMNS.split(","))
_JOBS_WITH_TURNS = (
    [
        _X,
        # MATERIALIZED: the bases are computed once per group, before any row is
        # inserted (inlined, PostgreSQL evaluates them per row, and each probe then
        # walks past the rows this statement already inserted).
        "b AS MATERIALIZED (SELECT g.owner, g.name, greatest("
        f"{_LAST_TURN.format(owner='g.owner', name='g.name')} + 1, "
        f"{_FRONTIER.format(name='g.name')}, "
        "0) AS base FROM (SELECT DISTINCT owner, name FROM x) g)",
    ],
    f"INSERT INTO errands_job ({_JOB_COLUMNS}, turn) SELECT {_X_JOBS}, "
    "b.base + row_number() OVER (PARTITION BY x.owner, x.name ORDER BY x.ord) - 1 "
    "FROM x JOIN b ON b.owner = x.owner AND b.name = x.name",
)
# The common case, every job of one owner and task name (most batches): the same
# turns, with a statement PostgreSQL plans in a fraction of the time.
_ONE_GROUP_TURN = (
    f"greatest({_LAST_TURN.format(owner='%s', name='%s')} + 1, {_FRONTIER.format(name='%s')}, 0)"
)
_ONE_GROUP_WITH_TURNS = (
    [_X],
    f"INSERT INTO errands_job ({_JOB_COLUMNS}, turn) SELECT {_X_JOBS}, "
    f"{_ONE_GROUP_TURN} + x.ord - 1 FROM x",
)
# One task (a submit): a call of the function ``errands_submit_one`` (migration 0008),
# the same insert and turn rule as a statement PostgreSQL plans once per session, not
# on every submit (Django's connections, for one, never prepare statements).
_SUBMIT_ONE = "SELECT errands_submit_one(%s, %s, %s, %s::json, %s, %s, %s, %s, %s, %s::json)"


@functools.cache
def _statement(parts: str, *, carried: int = 0) -> str:
    """The insert statement ``parts`` names (its common table expressions and final
    INSERT, from ``_PARTS``), sending ``carried`` notifications: their channels and
    payloads are its last parameters, in pairs."""
    ctes, final = _PARTS[parts]
    if not carried:
        return f"WITH {', '.join(ctes)} {final}"
    notify = ", ".join(["pg_notify(%s, %s)"] * carried)
    return f"WITH {', '.join([*ctes, f'new_jobs AS ({final})'])} SELECT {notify}"


_PARTS = {
    "records": ([_X, _NEW_RECORDS, *_JOBS_WITH_TURNS[0][1:]], _JOBS_WITH_TURNS[1]),
    "records, one group": ([_X, _NEW_RECORDS], _ONE_GROUP_WITH_TURNS[1]),
    "jobs": _JOBS_WITH_TURNS,
    "jobs, one group": _ONE_GROUP_WITH_TURNS,
}


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
    T.parent_id,
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
                J.lease_owner.is_(None),
                J.task_id == any_(_array("_chosen")),
                J.name == any_(_array("_names")),
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
                J.lease_owner.is_(None),
                J.run_at <= bindparam("_now"),
                J.name == any_(_array("_names")),
            )
            .order_by(*CLAIM_ORDER)
            .limit(bindparam("_limit"))
            .with_for_update(skip_locked=True)
            .cte("picked")
        )
    # "= ANY(ARRAY(…))" (rather than a join with the CTE): a lookup by primary key per
    # row, whatever the planner's statistics say (a join was planned as a scan of the
    # whole table when they were stale), and a plan that stays good when prepared.
    leased = (
        update(job_table)
        .where(J.task_id == any_(func.array(select(picked.c.task_id).scalar_subquery())))
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
        .where(
            T.id == any_(func.array(select(leased.c.task_id).scalar_subquery())),
            T.status == Status.QUEUED.value,
        )
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
        .where(
            J.lease_owner.is_(None), J.name == any_(_array("_names")), J.run_at > bindparam("_now")
        )
        .scalar_subquery()
    )
    fewer = select(func.count()).select_from(leased).scalar_subquery() < bindparam("_limit")
    next_due = select(case((fewer, earliest), else_=None).label("next_due")).subquery("due")
    return select(leased.c.task_id.label("leased_id"), *started.c, next_due.c.next_due).select_from(
        next_due.outerjoin(leased, true()).outerjoin(started, started.c.id == leased.c.task_id)
    )


def _array(name: str) -> Any:
    """A parameter that is a list of strings (one text[] for any number of them)."""
    return bindparam(name, type_=ARRAY(String))


def _compiled(statement: Any) -> tuple[str, dict[str, Any]]:
    """A statement as psycopg runs it (SQL with pyformat parameters, and the values of
    its constants), compiled once: executing it costs none of SQLAlchemy's work."""
    compiled = statement.compile(dialect=psycopg_dialect())  # type: ignore[no-untyped-call]
    return compiled.string, dict(compiled.params)


_CLAIM = _compiled(_claim_statement())
_CLAIM_CHOSEN = _compiled(_claim_statement(chosen=True))
_DROP_JOBS = delete(job_table).where(J.task_id.in_(_ids("_ids")))
# Claims under caps take turns (the key is errands' own constant).
_CAPS_LOCK = text("SELECT pg_advisory_xact_lock(7245106329)")
# A group's parts, in order: one statement whatever their number.
_LINK_PARTS = (
    "UPDATE errands_task t SET parent_id = %s, group_index = u.i - 1 "
    "FROM unnest(%s::text[]) WITH ORDINALITY AS u (id, i) WHERE t.id = u.id"
)
# An owner's schedule creates take turns (the first key is errands' own constant).
_OWNER_LOCK = text("SELECT pg_advisory_xact_lock(724510633, hashtext(:owner))")


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


# An outcome's fields, in the order of the rows of the JSON parameter (see _X): its name,
# and how a JSON field becomes the column's value.
_OUTCOME_FIELDS = (
    ("id", "e->>{i}"),
    ("floor", "(e->>{i})::int"),
    ("status", "e->>{i}"),
    ("result", "e->{i}"),
    ("result_ref", "e->>{i}"),
    ("error_type", "e->>{i}"),
    ("error_message", "e->>{i}"),
    ("error_detail", "e->>{i}"),
    ("expires_at", "(e->>{i})::timestamptz"),
    ("has_progress", "(e->>{i})::bool"),
    # Numbers, or the strings "NaN", "Infinity", "-Infinity" (not JSON numbers).
    ("progress_current", "(e->>{i})::float8"),
    ("progress_total", "(e->>{i})::float8"),
    ("progress_message", "e->>{i}"),
)
_KEEP_UNLESS_REPORTED = ("progress_current", "progress_total", "progress_message")
# Deleting the job locks it first (claims and the reaper lock the job, then the record);
# it goes only when its attempt still holds the lease: this worker holds the job and the
# record is running with the attempt's floor. (The record's status and floor change only
# under the job's lock, so reading them beside the job's delete is enough.) Then exactly
# those records get their outcomes.
_FINISHED = (
    "WITH u AS (SELECT "
    + ", ".join(f"{how.format(i=i)} AS {c}" for i, (c, how) in enumerate(_OUTCOME_FIELDS))
    + " FROM json_array_elements(%(_rows)s::json) AS r (e)), "
    "held AS (DELETE FROM errands_job j USING u, errands_task t "
    "WHERE j.task_id = u.id AND j.lease_owner = %(_worker)s AND t.id = u.id "
    "AND (t.status = 'running') IS TRUE AND t.output_floor = u.floor RETURNING j.task_id), "
    "done AS (UPDATE errands_task t SET status = u.status, result = u.result, "
    "result_ref = u.result_ref, error_type = u.error_type, error_message = u.error_message, "
    "error_detail = u.error_detail, finished_at = %(_stamp)s, expires_at = u.expires_at, "
    + ", ".join(
        f"{c} = CASE WHEN u.has_progress THEN u.{c} ELSE t.{c} END" for c in _KEEP_UNLESS_REPORTED
    )
    + ", updated_at = %(_stamp)s, version = t.version + 1 "
    "FROM u JOIN held ON held.task_id = u.id "
    "WHERE t.id = u.id AND (t.status = 'running') IS TRUE "
    "RETURNING t.id, t.owner, t.version, t.status) "
)
_FINISH = _FINISHED + "SELECT id, owner, version, status FROM done"
# The same, sending the records written as a carrier's changes (see ``Carrier``): the
# scalar subquery runs once, and only when a record was written.
_FINISH_CARRIED = (
    _FINISHED[:-1]
    + ", sent AS (SELECT pg_notify(%(_channel)s, %(_prefix)s || json_agg(json_build_array("
    "id, owner, version, status))::text) FROM (SELECT d.*, (row_number() OVER () - 1) / "
    "%(_chunk)s AS k FROM done d) c GROUP BY k) "
    "SELECT id, owner, version, status, (SELECT count(*) FROM sent) FROM done"
)


class PostgresDriver(Driver):
    dialect = "postgresql"
    carries = True
    dialect_insert = staticmethod(pg_insert)

    # -- records ------------------------------------------------------------------------
    def task_insert(
        self, conn: Connection, tasks: Sequence[NewTask], carrier: Carrier | None = None
    ) -> None:
        """New records and their jobs, in one statement (with the carrier's messages)."""
        if not tasks:
            return
        messages = () if carrier is None else carrier.messages
        if len(tasks) == 1:
            t = tasks[0]
            stamp, run = utc(t.created_at), utc(t.run_at)
            params = [t.id, t.owner, t.name, t.payload_json, t.max_attempts, t.priority, run]
            _cursor(conn).execute(_SUBMIT_ONE, [*params, stamp, t.run_at, json.dumps(messages)])
            return
        notes = [v for m in messages for v in m]
        carried = len(notes) // 2
        group = _one_group(tasks)
        if group is None:
            sql = _statement("records", carried=carried)
            _cursor(conn).execute(sql, [_rows(tasks), *notes])
        else:
            sql = _statement("records, one group", carried=carried)
            _cursor(conn).execute(sql, [_rows(tasks), *group, group[1], *notes])

    def _jobs_insert(self, conn: Connection, tasks: Sequence[NewTask]) -> None:
        rows = _rows(tasks, payloads=False)
        group = _one_group(tasks)
        if group is None:
            _cursor(conn).execute(_statement("jobs"), [rows])
        else:
            _cursor(conn).execute(_statement("jobs, one group"), [rows, *group, group[1]])

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
            sql, constants = _CLAIM
        else:
            (sql, constants), params["_chosen"] = _CLAIM_CHOSEN, list(chosen)
        rows = _cursor(conn).execute(sql, constants | params).fetchall()
        # Each row: the leased id, _STARTED's columns (Claimed's fields, in order), and
        # the next due time.
        due = rows[0][-1] if rows else None
        orphans = [r[0] for r in rows if r[0] is not None and r[1] is None]
        if orphans:  # a job whose record is no longer queued: drop it
            conn.execute(_DROP_JOBS, {"_ids": orphans})
        return [Claimed(*r[1:11]) for r in rows if r[1] is not None], due

    def _serialize_capped_claims(self, conn: Connection) -> None:
        conn.execute(_CAPS_LOCK)

    def _locking(self, query: Any) -> Any:
        return query.with_for_update()

    def _locking_skip(self, query: Any, of: Any = job_table) -> Any:
        return query.with_for_update(of=of, skip_locked=True)

    def _link_parts(self, conn: Connection, group_id: str, ids: Sequence[str]) -> None:
        _cursor(conn).execute(_LINK_PARTS, (group_id, list(ids)))

    def _serialize_owner(self, conn: Connection, owner: str) -> None:
        conn.execute(_OWNER_LOCK, {"owner": owner})

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
                [json_text(o.data) for o in items],
                [o.ref for o in items],
            ),
        )

    def _finish_terminal(
        self,
        conn: Connection,
        worker_id: str,
        outcomes: Sequence[Outcome],
        now: float,
        carrier: Carrier | None,
    ) -> list[Change]:
        """Terminal outcomes in one statement (see ``_FINISH``), in id order (as the
        heartbeat's index scan locks the jobs: no deadlock between the two)."""
        rows = []
        for o in sorted(outcomes, key=lambda o: o.task_id):
            current, total, message = o.progress if o.progress is not None else (None,) * 3
            expires = o.expires_at.isoformat() if o.expires_at is not None else None
            rows.append(
                [
                    *(o.task_id, o.floor, o.status.value, o.result, o.result_ref),
                    *(o.error_type, o.error_message, o.error_detail, expires),
                    *(o.progress is not None, _number(current), _number(total), message),
                ]
            )
        params: dict[str, Any] = {"_rows": json_text(rows)}
        params["_worker"], params["_stamp"] = worker_id, utc(now)
        sql = _FINISH
        if carrier is not None and carrier.changes is not None:
            sql = _FINISH_CARRIED
            params["_channel"], params["_prefix"] = carrier.changes
            params["_chunk"] = carrier.chunk
        written = _cursor(conn).execute(sql, params).fetchall()
        return [Change(r[0], r[1], r[2], Status(r[3])) for r in written]


def _number(value: float | None) -> float | str | None:
    """A float as a JSON row carries it to a float8 column (see _OUTCOME_FIELDS)."""
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _one_group(tasks: Sequence[NewTask]) -> tuple[str, str] | None:
    """(owner, name) if every task has the same ones."""
    owner, name = tasks[0].owner, tasks[0].name
    if all(t.owner == owner and t.name == name for t in tasks):
        return owner, name
    return None


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

"""PostgreSQL statements of the hot path, run straight on the psycopg cursor.

Submitting is the one statement where SQLAlchemy's per-row work (building and type-
processing a parameter dict for every row) costs more than the database's: a batch of
5,000 records spent most of its time there. Here new records and their jobs are sent as
one array per column and inserted with ``unnest``: one statement, one round trip,
whatever the number of rows. Values are converted exactly as the SQLAlchemy types
convert them (``JSON`` as ``json.dumps`` text, ``UTCDateTime`` as an aware UTC
datetime); ``tests/test_store.py`` reads them back through those types.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

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


def _cursor(conn: Connection) -> Any:
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


def _unnest(columns: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"%s::{kind}[]" for _, kind in columns)


# Jobs get their turns (see ``queue.py``): each (owner, name) group of the batch
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
    "(SELECT max(j.turn) + 1 FROM errands_job j "
    "WHERE j.lease_owner IS NULL AND j.owner = g.owner AND j.name = g.name), "
    "(SELECT min(j.turn) FROM errands_job j WHERE j.lease_owner IS NULL AND j.name = g.name), "
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
    "greatest((SELECT max(j.turn) + 1 FROM errands_job j "
    "WHERE j.lease_owner IS NULL AND j.owner = %s AND j.name = %s), "
    "(SELECT min(j.turn) FROM errands_job j WHERE j.lease_owner IS NULL AND j.name = %s), "
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


def _one_group(jobs: Sequence[dict[str, Any]]) -> tuple[str, str] | None:
    """(owner, name) if every job has the same ones."""
    owner, name = jobs[0]["owner"], jobs[0]["name"]
    if all(j["owner"] == owner and j["name"] == name for j in jobs):
        return owner, name
    return None


def insert_tasks_and_jobs(
    conn: Connection, rows: Sequence[dict[str, Any]], jobs: Sequence[dict[str, Any]]
) -> None:
    """New records and their jobs, in one statement."""
    params: list[list[Any]] = []
    for column, _ in _TASK_COLUMNS:
        if column == "payload":
            params.append([json.dumps(r[column]) for r in rows])
        elif column in ("run_at", "created_at", "updated_at"):
            params.append([r[column].astimezone(UTC) for r in rows])
        else:
            params.append([r[column] for r in rows])
    cursor = _cursor(conn)
    group = _one_group(jobs)
    if group is None:
        cursor.execute(_INSERT, params + _job_arrays(jobs))
    else:
        cursor.execute(_INSERT_ONE_GROUP, [*params, *_job_arrays(jobs), *group, group[1]])


def _job_arrays(jobs: Sequence[dict[str, Any]]) -> list[list[Any]]:
    return [[j[column] for j in jobs] for column, _ in _JOB_COLUMNS]


def insert_jobs(conn: Connection, jobs: Sequence[dict[str, Any]]) -> None:
    """Jobs (of records inserted separately), with their turns."""
    cursor = _cursor(conn)
    group = _one_group(jobs)
    if group is None:
        cursor.execute(_INSERT_JOBS, _job_arrays(jobs))
    else:
        cursor.execute(_INSERT_JOBS_ONE_GROUP, [*_job_arrays(jobs), *group, group[1]])


# -- an attempt's writes, fenced (see ``queue.py``) -----------------------------------
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


def report(
    conn: Connection, worker_id: str, reports: Sequence[Any], stamp: datetime
) -> list[tuple[str, str, int, str]]:
    """Progress (or a new version) of running attempts, in one statement; (id, owner,
    version, status) of the records written — those whose attempt holds the lease."""
    params: dict[str, Any] = {
        "id": [r.task_id for r in reports],
        "floor": [r.floor for r in reports],
        "has_progress": [r.progress is not None for r in reports],
        "_worker": worker_id,
        "_stamp": stamp,
    }
    for i, column in enumerate(("progress_current", "progress_total", "progress_message")):
        params[column] = [None if r.progress is None else r.progress[i] for r in reports]
    return [(r[0], r[1], r[2], r[3]) for r in _cursor(conn).execute(_REPORT, params).fetchall()]


_INSERT_OUTPUTS = (
    "INSERT INTO errands_output (task_id, seq, data, ref, created_at) "
    "SELECT i.task_id, i.seq, i.data, i.ref, %s FROM unnest(%s::varchar[], %s::int[], "
    "%s::json[], %s::varchar[]) AS i (task_id, seq, data, ref)"
)


def insert_outputs(conn: Connection, items: Sequence[dict[str, Any]], created: datetime) -> None:
    """Emitted items, in one statement whatever their number."""
    _cursor(conn).execute(
        _INSERT_OUTPUTS,
        (
            created,
            [o["task_id"] for o in items],
            [o["seq"] for o in items],
            [json.dumps(o["data"]) for o in items],
            [o.get("ref") for o in items],
        ),
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


def finish_terminal(
    conn: Connection, worker_id: str, outcomes: Sequence[Any], stamp: datetime
) -> list[tuple[str, str, int, str]]:
    """Terminal outcomes in one statement: record the outcomes of the attempts that
    still hold their lease, and delete exactly their jobs (an outcome whose lease was
    lost is left out). Returns (id, owner, version, status) of the records changed."""
    params: dict[str, Any] = {c: [] for c, _ in _OUTCOME_COLUMNS}
    for o in outcomes:
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
    params["_worker"], params["_stamp"] = worker_id, stamp
    return [(r[0], r[1], r[2], r[3]) for r in _cursor(conn).execute(_FINISH, params).fetchall()]


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

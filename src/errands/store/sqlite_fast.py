"""SQLite statements of the hot path, run straight on the DBAPI cursor.

Submitting, claiming and finishing run thousands of times a second. Through
SQLAlchemy's execution layer each statement costs several times what SQLite itself
spends on it (measured: a claim of 8 jobs, 1.4 ms against 0.6 ms), so on SQLite these
few statements are written out here and executed directly. They must write exactly
what the SQLAlchemy types would (``UTCDateTime`` as naive-UTC ISO text, ``JSON`` as
``json.dumps`` text) — ``tests/test_store.py`` reads every value back through the
ORM-level types. Every other dialect uses the SQLAlchemy Core statements in
``tasks.py`` and ``queue.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from .schema import task_table

_TASK_COLUMNS = (
    "id",
    "owner",
    "name",
    "payload",
    "status",
    "attempts",
    "max_attempts",
    "priority",
    "run_at",
    "cancel_requested",
    "version",
    "created_at",
    "updated_at",
)
_INSERT_TASK = (
    f"INSERT INTO errands_task ({', '.join(_TASK_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_TASK_COLUMNS))})"
)
# A job's turn (see ``queue.py``): after the owner's last waiting job of that name, and
# no earlier than the name's frontier (its lowest waiting turn). Each row of an
# ``executemany`` sees the rows before it: a batch of one owner's jobs gets consecutive
# turns.
_INSERT_JOB = (
    "INSERT INTO errands_job (task_id, name, owner, priority, run_at, turn) "
    "VALUES (?1, ?2, ?3, ?4, ?5, max("
    "coalesce((SELECT max(turn) + 1 FROM errands_job "
    "WHERE lease_owner IS NULL AND owner = ?3 AND name = ?2), 0), "
    "coalesce((SELECT min(turn) FROM errands_job WHERE lease_owner IS NULL AND name = ?2), 0)))"
)
_JSON_COLUMNS = frozenset({"payload", "result"})


def stamp(value: datetime | None) -> str | None:
    """A timezone-aware datetime as ``UTCDateTime`` stores it on SQLite."""
    if value is None:
        return None
    v = value.astimezone(UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _cursor(conn: Connection) -> Any:
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


_FIRST_TURN = (
    "SELECT max(coalesce((SELECT max(turn) + 1 FROM errands_job "
    "WHERE lease_owner IS NULL AND owner = ?1 AND name = ?2), 0), "
    "coalesce((SELECT min(turn) FROM errands_job WHERE lease_owner IS NULL AND name = ?2), 0))"
)
_INSERT_JOB_AT = (
    "INSERT INTO errands_job (task_id, name, owner, priority, run_at, turn) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def insert_jobs(conn: Connection, jobs: Sequence[dict[str, Any]]) -> None:
    cur = _cursor(conn)
    owner, name = jobs[0]["owner"], jobs[0]["name"]
    if len(jobs) > 1 and all(j["owner"] == owner and j["name"] == name for j in jobs):
        # One owner and task name (most batches): the first turn once, then in order.
        first = cur.execute(_FIRST_TURN, (owner, name)).fetchone()[0]
        cur.executemany(
            _INSERT_JOB_AT,
            [
                (j["task_id"], name, owner, j["priority"], j["run_at"], first + i)
                for i, j in enumerate(jobs)
            ],
        )
        return
    cur.executemany(
        _INSERT_JOB,
        [(j["task_id"], j["name"], j["owner"], j["priority"], j["run_at"]) for j in jobs],
    )


def _task_values(row: dict[str, Any]) -> list[Any]:
    values = []
    for col in _TASK_COLUMNS:
        v = row[col]
        if col in _JSON_COLUMNS:
            v = json.dumps(v)
        elif isinstance(v, datetime):
            v = stamp(v)
        elif isinstance(v, bool):
            v = int(v)
        values.append(v)
    return values


def insert_tasks(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    cur = _cursor(conn)
    if len(rows) == 1:
        cur.execute(_INSERT_TASK, _task_values(rows[0]))
    else:
        cur.executemany(_INSERT_TASK, [_task_values(r) for r in rows])


def _marks(n: int) -> str:
    return ",".join("?" * n)


# A claim starts an attempt (see ``queue.py``): progress starts over and, for a task
# that ran before, the output floor rises past every item stored so far.
_START = (
    "UPDATE errands_task SET status = 'running', attempts = attempts + 1, "
    "started_at = ?, updated_at = ?, version = version + 1, "
    "progress_current = NULL, progress_total = NULL, progress_message = NULL, "
    "output_floor = CASE WHEN started_at IS NULL THEN output_floor ELSE max(output_floor, "
    "coalesce((SELECT max(seq) FROM errands_output WHERE task_id = errands_task.id), 0)) + 1 "
    "END "
)


def claim(
    conn: Connection,
    worker_id: str,
    names: Sequence[str],
    limit: int,
    now: float,
    lease_seconds: float,
    chosen: Sequence[str] | None = None,
) -> list[tuple[Any, ...]]:
    """Rows (id, name, owner, payload, attempts, max_attempts, version,
    cancel_requested, output_floor) of the jobs leased — the first due in claim order,
    or the ``chosen`` ones; see ``queue.claim``."""
    cur = _cursor(conn)
    lease = "UPDATE errands_job SET lease_owner = ?, lease_expires_at = ?, attempt = attempt + 1 "
    if chosen is None:
        statement = (
            lease + "WHERE task_id IN (SELECT task_id FROM errands_job WHERE lease_owner IS NULL "
            # "+name": not an index term, so SQLite walks the claim-order index
            # (priority, turn, run_at) instead of the (name, turn) one plus a sort.
            f"AND run_at <= ? AND +name IN ({_marks(len(names))}) "
            "ORDER BY priority DESC, turn, run_at LIMIT ?) RETURNING task_id"
        )
        params: tuple[Any, ...] = (worker_id, now + lease_seconds, now, *names, limit)
    else:
        statement = (
            lease + f"WHERE task_id IN ({_marks(len(chosen))}) AND lease_owner IS NULL "
            f"AND name IN ({_marks(len(names))}) RETURNING task_id"
        )
        params = (worker_id, now + lease_seconds, *chosen, *names)
    leased = [r[0] for r in cur.execute(statement, params).fetchall()]
    if not leased:
        return []
    at = stamp(datetime.fromtimestamp(now, UTC))
    rows = cur.execute(
        _START + f"WHERE id IN ({_marks(len(leased))}) AND status = 'queued' "
        "RETURNING id, name, owner, payload, attempts, max_attempts, version, "
        "cancel_requested, output_floor",
        (at, at, *leased),
    ).fetchall()
    if len(rows) != len(leased):  # a job whose record is no longer queued: drop it
        orphans = list(set(leased) - {r[0] for r in rows})
        cur.execute(f"DELETE FROM errands_job WHERE task_id IN ({_marks(len(orphans))})", orphans)
    return [(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], bool(r[7]), r[8]) for r in rows]


def next_run_at(conn: Connection, names: Sequence[str]) -> float | None:
    row = (
        _cursor(conn)
        .execute(
            "SELECT min(run_at) FROM errands_job WHERE lease_owner IS NULL "
            f"AND name IN ({_marks(len(names))})",
            list(names),
        )
        .fetchone()
    )
    return None if row is None or row[0] is None else float(row[0])


# -- an attempt's writes, fenced (see ``queue.py``) -----------------------------------
_FENCE = (
    "WHERE id = ? AND status = 'running' AND output_floor = ? AND EXISTS "
    "(SELECT 1 FROM errands_job WHERE task_id = errands_task.id AND lease_owner = ?) "
    "RETURNING id, owner, version, status"
)
_REPORT_PROGRESS = (
    "UPDATE errands_task SET progress_current = ?, progress_total = ?, "
    "progress_message = ?, updated_at = ?, version = version + 1 " + _FENCE
)
_REPORT_TOUCH = "UPDATE errands_task SET updated_at = ?, version = version + 1 " + _FENCE


def report(
    conn: Connection, worker_id: str, reports: Sequence[Any], updated: datetime
) -> list[tuple[str, str, int, str]]:
    """Progress (or a new version) of running attempts; (id, owner, version, status) of
    the records written — those whose attempt still holds the lease."""
    cur = _cursor(conn)
    at = stamp(updated)
    rows: list[tuple[str, str, int, str]] = []
    for r in reports:
        if r.progress is None:
            row = cur.execute(_REPORT_TOUCH, (at, r.task_id, r.floor, worker_id)).fetchone()
        else:
            current, total, message = r.progress
            row = cur.execute(
                _REPORT_PROGRESS, (current, total, message, at, r.task_id, r.floor, worker_id)
            ).fetchone()
        if row is not None:
            rows.append(row)
    return rows


_INSERT_OUTPUT = (
    "INSERT INTO errands_output (task_id, seq, data, created_at, ref) VALUES (?, ?, ?, ?, ?)"
)


def insert_outputs(conn: Connection, items: Sequence[dict[str, Any]], created: datetime) -> None:
    at = stamp(created)
    _cursor(conn).executemany(
        _INSERT_OUTPUT,
        [(o["task_id"], o["seq"], json.dumps(o["data"]), at, o.get("ref")) for o in items],
    )


_FINISH = (
    "UPDATE errands_task SET status = ?, result = ?, result_ref = ?, error_type = ?, "
    "error_message = ?, error_detail = ?, finished_at = ?, expires_at = ?, "
    "updated_at = ?, version = version + 1{progress} " + _FENCE
)
_FINISH_KEEP = _FINISH.format(progress="")
_FINISH_PROGRESS = _FINISH.format(
    progress=", progress_current = ?, progress_total = ?, progress_message = ?"
)


def finish_terminal(
    conn: Connection, worker_id: str, outcomes: Sequence[Any], updated: datetime
) -> list[tuple[str, str, int, str]]:
    """Terminal outcomes of attempts that still hold their lease: the record written,
    the job deleted. (id, owner, version, status) of the records changed."""
    cur = _cursor(conn)
    at = stamp(updated)
    rows: list[tuple[str, str, int, str]] = []
    for o in outcomes:
        values: tuple[Any, ...] = (
            o.status.value,
            _json(o.result),
            o.result_ref,
            o.error_type,
            o.error_message,
            o.error_detail,
            at,
            stamp(o.expires_at),
            at,
        )
        if o.progress is None:
            sql = _FINISH_KEEP
        else:
            sql, values = _FINISH_PROGRESS, (*values, *o.progress)
        row = cur.execute(sql, (*values, o.task_id, o.floor, worker_id)).fetchone()
        if row is not None:
            rows.append(row)
    if rows:
        cur.execute(
            f"DELETE FROM errands_job WHERE task_id IN ({_marks(len(rows))})", [r[0] for r in rows]
        )
    return rows


def changes(conn: Connection, task_ids: Sequence[str]) -> list[tuple[str, str, int, str]]:
    sql = (
        f"SELECT id, owner, version, status FROM errands_task WHERE id IN ({_marks(len(task_ids))})"
    )
    rows: list[tuple[str, str, int, str]] = _cursor(conn).execute(sql, list(task_ids)).fetchall()
    return rows


# -- reading one record (the status endpoint's query) ----------------------------------
TASK_READ_COLUMNS = tuple(c.name for c in task_table.c)
_SELECT_TASK = f"SELECT {', '.join(TASK_READ_COLUMNS)} FROM errands_task WHERE id = ?"
_SELECT_OWNED = _SELECT_TASK + " AND owner = ?"
_SELECT_VERSION = "SELECT version FROM errands_task WHERE id = ?"
_SELECT_VERSION_OWNED = _SELECT_VERSION + " AND owner = ?"
_TIME_COLUMNS = frozenset(
    {"run_at", "created_at", "updated_at", "started_at", "finished_at", "expires_at"}
)


def _time(text: str | None) -> datetime | None:
    """What ``UTCDateTime`` returns for the text it stored."""
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=UTC)


def get_task(conn: Connection, task_id: str, owner: str | None) -> dict[str, Any] | None:
    """One record's columns, converted as the SQLAlchemy types would."""
    cur = _cursor(conn)
    if owner is None:
        row = cur.execute(_SELECT_TASK, (task_id,)).fetchone()
    else:
        row = cur.execute(_SELECT_OWNED, (task_id, owner)).fetchone()
    if row is None:
        return None
    values = dict(zip(TASK_READ_COLUMNS, row, strict=True))
    for key in _TIME_COLUMNS:
        values[key] = _time(values[key])
    for key in _JSON_COLUMNS:
        raw = values[key]
        # The JSON column has numeric affinity: a number comes back as a number.
        if isinstance(raw, str | bytes):
            values[key] = json.loads(raw)
    return values


def version_of(conn: Connection, task_id: str, owner: str | None) -> int | None:
    cur = _cursor(conn)
    if owner is None:
        row = cur.execute(_SELECT_VERSION, (task_id,)).fetchone()
    else:
        row = cur.execute(_SELECT_VERSION_OWNED, (task_id, owner)).fetchone()
    return None if row is None else int(row[0])

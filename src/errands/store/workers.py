"""The worker registry (``errands_worker``) and the figures of the admin views.

A worker inserts its row when it starts, updates ``seen_at`` every heartbeat interval
and deletes the row when it stops; the reaper deletes rows of workers that stopped
without a word. What a worker runs is read from the job table (its leases).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from ..records import Status
from .schema import job_table, task_table, worker_table

W = worker_table.c
J = job_table.c
T = task_table.c


def register(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(delete(worker_table).where(W.id == row["id"]))
    conn.execute(insert(worker_table).values(row))


def beat(conn: Connection, worker_id: str, now: datetime) -> None:
    conn.execute(update(worker_table).where(W.id == worker_id).values(seen_at=now))


def unregister(conn: Connection, worker_id: str) -> None:
    conn.execute(delete(worker_table).where(W.id == worker_id))


def on_host(conn: Connection, hostname: str, exclude: str) -> list[tuple[str, int, str | None]]:
    """(id, pid, process_key) of the other workers registered under ``hostname``."""
    rows = conn.execute(
        select(W.id, W.pid, W.process_key).where(W.hostname == hostname, W.id != exclude)
    )
    return [(r.id, r.pid, r.process_key) for r in rows]


def forget(conn: Connection, worker_ids: Sequence[str]) -> None:
    """Delete these workers' rows (workers known to be dead)."""
    if worker_ids:
        conn.execute(delete(worker_table).where(W.id.in_(list(worker_ids))))


def forget_silent(conn: Connection, before: datetime) -> int:
    """Delete the rows of workers not seen since ``before``."""
    return conn.execute(delete(worker_table).where(W.seen_at < before)).rowcount or 0


def alive(conn: Connection, since: datetime) -> list[dict[str, Any]]:
    """Workers seen since ``since``, each with the tasks it holds leases on."""
    shown = [c for c in worker_table.c if c.name != "process_key"]  # internal to liveness
    workers = [
        dict(r._mapping)
        for r in conn.execute(select(*shown).where(W.seen_at >= since).order_by(W.id))
    ]
    if not workers:
        return []
    running: dict[str, list[dict[str, Any]]] = {w["id"]: [] for w in workers}
    rows = conn.execute(
        select(J.lease_owner, J.task_id, J.name, J.owner).where(J.lease_owner.in_(list(running)))
    )
    for r in rows:
        running[r.lease_owner].append({"task_id": r.task_id, "name": r.name, "owner": r.owner})
    for w in workers:
        w["running"] = running[w["id"]]
    return workers


def status_counts(conn: Connection) -> dict[str, int]:
    """Records by status (every owner)."""
    counts = {s.value: 0 for s in Status}
    for status, n in conn.execute(select(T.status, func.count()).group_by(T.status)):
        counts[status] = n
    return counts


def name_status_counts(conn: Connection) -> list[tuple[str, str, int, int]]:
    """(name, status, records, records that started) for every name and status."""
    rows = conn.execute(
        select(T.name, T.status, func.count(), func.count(T.started_at)).group_by(T.name, T.status)
    )
    return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]


def finished_since(
    conn: Connection, since: datetime, limit: int = 200_000
) -> list[tuple[str, str, datetime, datetime | None, datetime]]:
    """(name, status, created_at, started_at, finished_at) of records finished since
    ``since`` (found through the ``updated_at`` index: a finished record's last change
    is its finish)."""
    rows = conn.execute(
        select(T.name, T.status, T.created_at, T.started_at, T.finished_at)
        .where(T.updated_at >= since, T.finished_at >= since)
        .limit(limit)
    )
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def queue_state(conn: Connection, now: float) -> tuple[int, int, float | None]:
    """(jobs waiting, of them due now, run_at of the oldest due one) from the job table."""
    waiting = conn.execute(
        select(func.count()).select_from(job_table).where(J.lease_owner.is_(None))
    ).scalar_one()
    due, oldest = conn.execute(
        select(func.count(), func.min(J.run_at)).where(J.lease_owner.is_(None), J.run_at <= now)
    ).one()
    return int(waiting), int(due), oldest

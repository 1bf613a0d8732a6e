"""Purging a large history while workers run: small batches, so claims go on; nothing
that has not expired is deleted. On both databases."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise
from typing import Any

import pytest
from sqlalchemy import func, select, text

from errands import ANY_OWNER, Errands, Status, TaskContext, TaskRecord
from errands.store.schema import output_table, task_table

pytestmark = [pytest.mark.databases("sqlite", "postgresql"), pytest.mark.slow]

EXPIRED = 100_000
KEPT = 1_000

_COLUMNS = (
    "id, owner, name, payload, status, attempts, max_attempts, priority, run_at, "
    "cancel_requested, version, created_at, updated_at, started_at, finished_at, expires_at"
)


def load_history(app: Errands, database: str) -> None:
    """EXPIRED finished records whose retention ended a day ago (every tenth with an
    output item) and KEPT that expire tomorrow, written with one statement each."""
    app.db.ensure_schema()
    with app.db.engine.begin() as conn:
        if database == "postgresql":
            rows = (
                "SELECT '00000000-0000-7000-8000-' || lpad(to_hex(g), 12, '0'), "
                "'old-' || (g % 100), 'noop', '{{}}'::json, 'succeeded', 1, 1, 0, "
                "now() - interval '30 days', false, 3, now() - interval '30 days', "
                "now() - interval '30 days', now() - interval '30 days', "
                "now() - interval '30 days', now() + interval '{expiry}' "
                "FROM generate_series({first}, {last}) AS g"
            )
            outputs = (
                "INSERT INTO errands_output (task_id, seq, data, created_at) "
                "SELECT '00000000-0000-7000-8000-' || lpad(to_hex(g), 12, '0'), 1, "
                "'{\"hit\": 1}'::json, now() FROM generate_series(1, :n, 10) AS g"
            )
        else:
            rows = (
                "WITH RECURSIVE n(g) AS (SELECT {first} UNION ALL SELECT g + 1 FROM n "
                "WHERE g < {last}) "
                "SELECT printf('00000000-0000-7000-8000-%012x', g), 'old-' || (g % 100), "
                "'noop', '{{}}', 'succeeded', 1, 1, 0, datetime('now', '-30 days'), 0, 3, "
                "datetime('now', '-30 days'), datetime('now', '-30 days'), "
                "datetime('now', '-30 days'), datetime('now', '-30 days'), "
                "datetime('now', '{expiry}') FROM n"
            )
            outputs = (
                "WITH RECURSIVE n(g) AS (SELECT 1 UNION ALL SELECT g + 10 FROM n "
                "WHERE g + 10 <= :n) INSERT INTO errands_output (task_id, seq, data, "
                "created_at) SELECT printf('00000000-0000-7000-8000-%012x', g), 1, "
                "'{\"hit\": 1}', datetime('now') FROM n"
            )
        spans = [(1, EXPIRED, "-1 day"), (EXPIRED + 1, EXPIRED + KEPT, "+1 day")]
        for first, last, expiry in spans:
            select_rows = rows.format(first=first, last=last, expiry=expiry)
            conn.execute(text(f"INSERT INTO errands_task ({_COLUMNS}) {select_rows}"))
        conn.execute(text(outputs), {"n": EXPIRED + KEPT})


def count(app: Errands, table: Any, *where: Any) -> int:
    with app.db.engine.connect() as conn:
        query = select(func.count()).select_from(table)
        return int(conn.execute(query.where(*where) if where else query).scalar_one())


async def test_purging_a_large_history_while_workers_claim(
    app: Errands, database: str, run_worker: Any
) -> None:
    @app.task
    async def tick(ctx: TaskContext, payload: dict[str, Any]) -> int:
        await asyncio.sleep(0.005)
        return int(payload["i"])

    load_history(app, database)
    assert count(app, task_table) == EXPIRED + KEPT
    assert count(app, output_table) == (EXPIRED + KEPT + 9) // 10

    records: list[TaskRecord] = []
    async with run_worker(app, concurrency=4, purge_interval=3600):
        submitter_done = asyncio.Event()

        async def keep_submitting() -> None:
            while not submitter_done.is_set():
                records.append(await app.submit("tick", {"i": len(records)}, owner="live"))
                await asyncio.sleep(0.01)

        submitter = asyncio.create_task(keep_submitting())
        await asyncio.sleep(0.5)
        purge_started = time.time()
        purged = await app.purge(batch=500)
        purge_ended = time.time()
        submitter_done.set()
        await submitter
        done = [await app.wait(r.id, owner="live", timeout=30, poll=0.05) for r in records]

    assert purged == EXPIRED
    assert count(app, task_table, task_table.c.owner.like("old-%")) == KEPT  # none kept went
    assert count(app, output_table) == KEPT // 10  # the purged records' outputs went too
    assert all(r.status is Status.SUCCEEDED for r in done)
    # Claims went on while the purge ran: tasks started inside its window, and the
    # longest gap between two starts is recorded (bench/RESULTS.md has the figure).
    starts = sorted(
        r.started_at.timestamp()
        for r in await app.get_many([r.id for r in done], owner=ANY_OWNER)
        if r.started_at is not None
    )
    during = [t for t in starts if purge_started <= t <= purge_ended]
    assert during, "no task started while the purge ran"
    window = [purge_started, *during, purge_ended]
    stall = max(b - a for a, b in pairwise(window))
    print(
        f"\n{database}: purged {purged:,} records in {purge_ended - purge_started:.2f} s; "
        f"{len(during)} tasks started meanwhile; longest claim gap {stall * 1000:.0f} ms"
    )

"""Administrative views (``app.admin``) and lifecycle observers, on a real SQLite file
with an in-process worker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from errands import (
    ANY_OWNER,
    Errands,
    InvalidTransition,
    Status,
    TaskContext,
    TaskEvent,
    TaskFailed,
)
from tests.conftest import eventually_async

# The conformance suite: every test runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.databases("sqlite", "postgresql")


def _register(app: Errands) -> asyncio.Event:
    release = asyncio.Event()

    @app.task(max_attempts=1)
    async def hold(ctx: TaskContext, payload: dict[str, Any]) -> str:
        await release.wait()
        return "held"

    @app.task(max_attempts=1)
    async def boom(ctx: TaskContext, payload: dict[str, Any]) -> None:
        raise TaskFailed("no")

    return release


async def test_workers_are_listed_with_what_they_run(app: Errands, run_worker: Any) -> None:
    release = _register(app)
    rec = await app.submit("hold", {}, owner="alice")
    async with run_worker(app, concurrency=3) as worker:

        async def listed() -> bool:
            found = await app.admin.workers()
            return bool(found) and bool(found[0].running)

        await eventually_async(listed, "the worker listed with its task", timeout=10)
        (info,) = await app.admin.workers()
        assert info.id == worker.id and info.concurrency == 3
        assert set(info.names) == {"hold", "boom"}
        assert info.running == [{"task_id": rec.id, "name": "hold", "owner": "alice"}]
        release.set()
        await app.wait(rec.id, owner="alice", timeout=10)
    assert await app.admin.workers() == []  # a stopped worker removes itself


async def test_counts_queue_activity_and_retry(app: Errands, run_worker: Any) -> None:
    release = _register(app)
    release.set()
    events: list[TaskEvent] = []
    app.observers.add(events.append)
    ok = [await app.submit("hold", {}, owner="alice") for _ in range(3)]
    bad = await app.submit("boom", {}, owner="bob")
    queue = await app.admin.queue()
    assert queue.waiting == 4 and queue.due == 4 and queue.oldest_age is not None
    async with run_worker(app):
        for rec in [*ok, bad]:
            await app.wait(rec.id, owner=ANY_OWNER, timeout=10)
    counts = await app.admin.status_counts()
    assert counts["succeeded"] == 3 and counts["failed"] == 1 and counts["queued"] == 0
    by_name = {(n, s): (c, started) for n, s, c, started in await app.admin.name_status_counts()}
    assert by_name[("hold", "succeeded")] == (3, 3) and by_name[("boom", "failed")] == (1, 1)
    buckets = await app.admin.activity(hours=1, bucket_seconds=60)
    assert len(buckets) >= 60
    assert sum(b.succeeded for b in buckets) == 3 and sum(b.failed for b in buckets) == 1
    last = [b for b in buckets if b.finished][-1]
    assert last.run_p50 is not None and last.run_p50 >= 0 and last.wait_p50 is not None
    assert (await app.admin.queue()).waiting == 0

    kinds = [(e.kind, e.name, e.status) for e in events]
    assert kinds.count(("submitted", "hold", Status.QUEUED)) == 3
    assert kinds.count(("started", "hold", Status.RUNNING)) == 3
    assert kinds.count(("finished", "hold", Status.SUCCEEDED)) == 3
    assert ("finished", "boom", Status.FAILED) in kinds
    assert all(e.seconds is not None for e in events if e.kind == "finished")

    again = await app.retry(bad.id, owner=ANY_OWNER)
    assert again.id != bad.id and again.owner == "bob" and again.name == "boom"
    assert again.status is Status.QUEUED
    with pytest.raises(InvalidTransition):
        await app.retry(ok[0].id, owner=ANY_OWNER)

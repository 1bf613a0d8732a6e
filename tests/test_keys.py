"""Idempotent submit and unique tasks, on both databases: the same request never creates
a second record, even when twenty arrive at once."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from errands import ANY_OWNER, Errands, IdempotencyConflict, Status, TaskContext, TaskRecord
from errands.store.schema import job_table, task_table
from tests.apps.web import make_api
from tests.conftest import eventually_async

pytestmark = pytest.mark.databases("sqlite", "postgresql")


def register(app: Errands) -> asyncio.Event:
    release = asyncio.Event()

    @app.task
    async def export(ctx: TaskContext, payload: dict[str, Any]) -> str:
        return "exported"

    @app.task(unique=True)
    async def reindex(ctx: TaskContext, payload: dict[str, Any]) -> str:
        await release.wait()
        return "reindexed"

    return release


def rows(app: Errands) -> tuple[int, int]:
    with app.db.engine.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(task_table)).scalar_one(),
            conn.execute(select(func.count()).select_from(job_table)).scalar_one(),
        )


@pytest.fixture
def keyed(app: Errands) -> Errands:
    register(app)
    app.db.ensure_schema()
    return app


async def test_same_key_same_task_different_request_conflicts(keyed: Errands) -> None:
    first = await keyed.submit("export", {"q": 1}, owner="alice", idempotency_key="k1")
    again = await keyed.submit("export", {"q": 1}, owner="alice", idempotency_key="k1")
    assert again.id == first.id and rows(keyed) == (1, 1)
    # The same key with another payload or another task name: refused, nothing written.
    with pytest.raises(IdempotencyConflict):
        await keyed.submit("export", {"q": 2}, owner="alice", idempotency_key="k1")
    with pytest.raises(IdempotencyConflict):
        keyed.sync.submit("reindex", {"q": 1}, owner="alice", idempotency_key="k1")
    assert rows(keyed) == (1, 1)
    # Keys of different owners never collide; a new key is a new task.
    bobs = await keyed.submit("export", {"q": 1}, owner="bob", idempotency_key="k1")
    other = await keyed.submit("export", {"q": 1}, owner="alice", idempotency_key="k2")
    assert len({first.id, bobs.id, other.id}) == 3 and rows(keyed) == (3, 3)
    # The key lives as long as its record: cancelled still counts; deleted, it is free.
    await keyed.cancel(first.id, owner="alice")
    assert (await keyed.submit("export", {"q": 1}, owner="alice", idempotency_key="k1")).id == (
        first.id
    )
    await keyed.delete(first.id, owner="alice")
    fresh = await keyed.submit("export", {"q": 1}, owner="alice", idempotency_key="k1")
    assert fresh.id != first.id
    for bad in ("", "x" * 256, "nul\x00"):
        with pytest.raises(ValueError):
            await keyed.submit("export", {}, owner="alice", idempotency_key=bad)


def test_twenty_concurrent_submits_create_one_task(keyed: Errands) -> None:
    def submit(i: int) -> str:
        if i % 2:
            return keyed.sync.submit("export", {"q": 9}, owner="alice", idempotency_key="once").id
        return keyed.sync.submit("reindex", {"all": True}, owner="alice").id

    with ThreadPoolExecutor(max_workers=20) as pool:
        ids = list(pool.map(submit, range(40)))
    assert len(set(ids[1::2])) == 1  # 20 idempotent submits: one task
    assert len(set(ids[0::2])) == 1  # 20 submits of a unique task: one task
    assert rows(keyed) == (2, 2)


async def test_unique_task_while_queued_or_running(app: Errands, run_worker: Any) -> None:
    release = register(app)
    first = await app.submit("reindex", {"all": True}, owner="alice")
    assert (await app.submit("reindex", {"all": True}, owner="alice")).id == first.id
    # Another payload or another owner is another task.
    other = await app.submit("reindex", {"all": False}, owner="alice")
    bobs = await app.submit("reindex", {"all": True}, owner="bob")
    assert len({first.id, other.id, bobs.id}) == 3
    # Within one batch too.
    batch = await app.submit_many("reindex", [{"all": True}, {"n": 1}, {"n": 1}], owner="alice")
    assert batch[0].id == first.id and batch[1].id == batch[2].id != first.id
    async with run_worker(app, concurrency=8):
        running = await eventually_async(
            lambda: _running(app, first.id), "the task to start", timeout=10
        )
        assert running.status is Status.RUNNING
        assert (await app.submit("reindex", {"all": True}, owner="alice")).id == first.id
        release.set()
        done = await app.wait(first.id, owner="alice", timeout=10)
        assert done.status is Status.SUCCEEDED
        # Finished: the next submit is a new task.
        after = await app.submit("reindex", {"all": True}, owner="alice")
        assert after.id != first.id
        await app.wait(after.id, owner="alice", timeout=10)
    assert rows(app)[0] == 5


async def _running(app: Errands, task_id: str) -> TaskRecord | None:
    record = await app.get(task_id, owner=ANY_OWNER)
    return record if record.status is Status.RUNNING else None


async def test_http_idempotency_key_header(keyed: Errands) -> None:
    transport = httpx.ASGITransport(app=make_api(keyed, submit_rate=None))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        headers = {"X-User": "alice", "Idempotency-Key": "click-1"}
        body = {"name": "export", "payload": {"q": 1}}
        first = await client.post("/api/tasks", json=body, headers=headers)
        again = await client.post("/api/tasks", json=body, headers=headers)
        assert first.status_code == again.status_code == 202
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["location"] == first.headers["location"]
        conflict = await client.post(
            "/api/tasks", json={"name": "export", "payload": {"q": 2}}, headers=headers
        )
        assert conflict.status_code == 409
        assert conflict.headers["content-type"] == "application/problem+json"
        assert "idempotency" in conflict.json()["detail"].lower()
        bob = await client.post(
            "/api/tasks", json=body, headers={"X-User": "bob", "Idempotency-Key": "click-1"}
        )
        assert bob.status_code == 202 and bob.json()["id"] != first.json()["id"]
        long_key = await client.post(
            "/api/tasks", json=body, headers={"X-User": "alice", "Idempotency-Key": "k" * 300}
        )
        assert long_key.status_code == 422
    assert rows(keyed) == (2, 2)

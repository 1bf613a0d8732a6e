"""The database going away: the HTTP API answers 503 (a temporary state, with
``Retry-After``), and a worker whose connections are cut mid-run carries on once they
can be opened again — every task ends exactly once, none is left ``running``.

Restarting the whole PostgreSQL server with many processes attached is covered by the
real-process cluster tests; here one database's connections are killed with
``pg_terminate_backend``, which is what a server restart or a failover does to them."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from errands import ANY_OWNER, Errands, Status, TaskContext
from errands.ids import new_task_id
from tests.apps.web import make_api


@pytest.mark.parametrize(
    "url",
    ["postgresql://postgres@127.0.0.1:1/nowhere", "sqlite:///{tmp}/no/such/dir/tasks.db"],
    ids=["postgresql", "sqlite"],
)
async def test_api_answers_503_while_the_database_is_unreachable(url: str, tmp_path: Path) -> None:
    app = Errands(url.format(tmp=tmp_path))

    @app.task
    async def noop(ctx: TaskContext, payload: dict[str, Any]) -> None:
        return None

    transport = httpx.ASGITransport(app=make_api(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        headers = {"X-User": "alice"}
        for method, path, body in [
            ("GET", f"/api/tasks/{new_task_id()}", None),
            ("GET", "/api/tasks", None),
            ("POST", "/api/tasks", {"name": "noop", "payload": {}}),
        ]:
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status_code == 503, (method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["retry-after"] == "1"
            problem = response.json()
            assert problem["status"] == 503 and "unavailable" in problem["detail"]
            assert "127.0.0.1" not in response.text and "sqlite" not in response.text
    app.close()


@pytest.mark.databases("postgresql")
async def test_worker_carries_on_after_its_connections_are_killed(
    app: Errands, db_url: str, run_worker: Any
) -> None:
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    @app.task(max_attempts=3)
    async def step(ctx: TaskContext, payload: dict[str, Any]) -> int:
        with lock:
            runs[ctx.task_id] += 1
        for i in range(5):
            await asyncio.sleep(0.04)
            ctx.progress(i + 1, 5)
        return int(payload["n"])

    admin = create_engine(db_url)

    def kill_connections() -> int:
        with admin.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).all()
            conn.commit()
        return len(killed)

    records = await app.submit_many("step", [{"n": i} for i in range(40)], owner="alice")
    async with run_worker(app, concurrency=4):
        killed = 0
        for _ in range(3):  # mid-run: tasks are running, writing progress and outcomes
            await asyncio.sleep(0.4)
            killed += await asyncio.to_thread(kill_connections)
        done = [await app.wait(r.id, owner=ANY_OWNER, timeout=60, poll=0.1) for r in records]
    admin.dispose()
    assert killed >= 3  # the worker's pool and its LISTEN connection, each time
    assert [r.status for r in done] == [Status.SUCCEEDED] * 40
    assert [r.result for r in done] == list(range(40))
    # A run cut off by the outage may be retried (at most its attempts), never lost;
    # a task whose outcome was written runs no more.
    assert all(1 <= runs[r.id] <= r.attempts for r in done)
    assert sum(runs.values()) == sum(r.attempts for r in done)
    assert not (await app.list(owner="alice", status=Status.RUNNING)).items

"""The thin end-to-end path: submit → record → worker → result."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from errands import Errands, Status, TaskContext


class AddIn(BaseModel):
    a: int
    b: int


async def test_submit_run_result(app: Errands, run_worker: Any) -> None:
    @app.task
    async def add(ctx: TaskContext, payload: AddIn) -> dict[str, int]:
        ctx.progress(1, 1, "added")
        ctx.emit({"sum": payload.a + payload.b})
        return {"sum": payload.a + payload.b}

    record = await app.submit("add", {"a": 2, "b": 3}, owner="alice")
    assert record.status is Status.QUEUED
    async with run_worker(app):
        done = await app.wait(record.id, owner="alice", timeout=10)
    assert done.status is Status.SUCCEEDED
    assert done.result == {"sum": 5}
    assert done.progress.current == 1 and done.progress.message == "added"
    assert await app.outputs(record.id, owner="alice") == [(1, {"sum": 5})]

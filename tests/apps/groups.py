"""Tasks of the group tests: ``errands worker tests.apps.groups:app``.

``part`` reports progress and emits an item, then returns ``n × 10`` (or fails when
``fail`` is set); ``steady`` is the same with attempts enough to outlive a SIGKILL loop; ``collect``
(a group's ``then``) sums the results. Each run of either
appends ``<event> <task id> <pid>`` to ``$ERRANDS_TEST_LOG`` with one ``O_APPEND``
write, so tests can count runs across processes. The database URL comes from
``$ERRANDS_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from errands import Errands, TaskContext

app = Errands()


def log(event: str, ctx: TaskContext) -> None:
    path = os.environ.get("ERRANDS_TEST_LOG")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{event} {ctx.task_id} {os.getpid()} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


def install(target: Errands) -> Errands:
    """Register these tasks on a test's own app (to submit and read)."""
    for definition in app.registry:
        target.registry.add(definition)
    return target


@app.task(max_attempts=2, backoff=0.1)
async def part(ctx: TaskContext, payload: dict[str, Any]) -> int:
    steps = int(payload.get("steps", 2))
    for k in range(steps):
        ctx.progress(k + 1, steps)
        await asyncio.sleep(float(payload.get("delay", 0.01)))
    ctx.emit({"n": payload["n"]})
    if payload.get("fail"):
        raise RuntimeError(f"part {payload['n']} fails")
    return int(payload["n"]) * 10


@app.task(max_attempts=20)
async def steady(ctx: TaskContext, payload: dict[str, Any]) -> int:
    """``part`` with attempts enough to outlive a loop of SIGKILLs."""
    return await part.fn(ctx, payload)  # type: ignore[no-any-return]


@app.task(max_attempts=20)
async def collect(ctx: TaskContext, payload: dict[str, Any]) -> int:
    log("collect", ctx)
    return sum(payload["results"])

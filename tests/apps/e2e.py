"""Tasks for the end-to-end tests: ``errands worker tests.apps.e2e:app``.

The app reads its database URL from ``$ERRANDS_DATABASE_URL``. Tests register these
same definitions on their own app (see ``install``) to submit, read and cancel.

Tasks that take a ``log`` path append one line per execution to it
(``<event> <task id> <attempt> <pid> <unix time>``) with a single ``O_APPEND`` write, so
tests can count executions across worker processes.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

from pydantic import BaseModel, Field

from errands import Errands, TaskContext, TaskFailed

app = Errands()


def install(target: Errands) -> Errands:
    """Register this module's task definitions on ``target`` (a test's own app)."""
    for definition in app.registry:
        target.registry.add(definition)
    return target


def log_line(path: str | None, event: str, ctx: TaskContext) -> None:
    if not path:
        return
    line = f"{event} {ctx.task_id} {ctx.attempt} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_log(path: str | os.PathLike[str]) -> list[tuple[str, str, int, int]]:
    """The log's lines as (event, task id, attempt, pid)."""
    return [row[:4] for row in read_timed_log(path)]  # type: ignore[misc]


def read_timed_log(path: str | os.PathLike[str]) -> list[tuple[str, str, int, int, float]]:
    """The log's lines as (event, task id, attempt, pid, unix time)."""
    try:
        with open(path) as fh:
            text = fh.read()
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines():
        event, task_id, attempt, pid, at = line.split()
        rows.append((event, task_id, int(attempt), int(pid), float(at)))
    return rows


class QuickIn(BaseModel):
    log: str
    sleep: float = Field(0.0, ge=0, le=5)


@app.task
async def quick(ctx: TaskContext, payload: QuickIn) -> dict[str, str]:
    """Logs its execution and returns its id."""
    log_line(payload.log, "run", ctx)
    if payload.sleep:
        await asyncio.sleep(payload.sleep)
    return {"id": ctx.task_id}


class SlowIn(BaseModel):
    steps: int = Field(10, ge=1, le=10_000)
    delay: float = Field(0.1, ge=0, le=10)
    log: str | None = None


async def _slow(ctx: TaskContext, payload: SlowIn) -> dict[str, int]:
    log_line(payload.log, "start", ctx)
    ctx.progress(0, payload.steps, "started")
    for i in range(1, payload.steps + 1):
        await asyncio.sleep(payload.delay)
        ctx.progress(i, payload.steps, f"step {i} of {payload.steps}")
    log_line(payload.log, "done", ctx)
    return {"steps": payload.steps, "attempt": ctx.attempt}


@app.task(max_attempts=3, backoff=0.1)
async def slow(ctx: TaskContext, payload: SlowIn) -> dict[str, int]:
    """Sleeps ``steps`` × ``delay`` seconds, reporting progress after every step."""
    return await _slow(ctx, payload)


@app.task(max_attempts=1)
async def slow_once(ctx: TaskContext, payload: SlowIn) -> dict[str, int]:
    """``slow`` with a single attempt."""
    return await _slow(ctx, payload)


class LoopIn(BaseModel):
    seconds: float = Field(20.0, gt=0, le=60)
    log: str | None = None


@app.task
def sync_loop(ctx: TaskContext, payload: LoopIn) -> dict[str, bool]:
    """A plain function (thread executor) that stops when it sees ``ctx.cancelled``."""
    log_line(payload.log, "start", ctx)
    ctx.progress(0, None, "looping")
    end = time.monotonic() + payload.seconds
    while time.monotonic() < end:
        if ctx.cancelled:
            log_line(payload.log, "saw-cancel", ctx)
            return {"finished": False}
        time.sleep(0.02)
    return {"finished": True}


@app.task(executor="process")
def spin(ctx: TaskContext, payload: LoopIn) -> dict[str, int]:
    """CPU-bound busy loop in a child process; only killing the child stops it early."""
    log_line(payload.log, "start", ctx)
    ctx.progress(0, None, "spinning")
    end = time.monotonic() + payload.seconds
    n = 0
    while time.monotonic() < end:
        n += 1
        if n % 200_000 == 0:
            ctx.progress(n, None, "spinning")
    return {"iterations": n}


class EmitIn(BaseModel):
    steps: int = Field(40, ge=1, le=10_000)
    delay: float = Field(0.1, ge=0, le=10)
    log: str | None = None


@app.task(max_attempts=5, backoff=0.1)
async def emitter(ctx: TaskContext, payload: EmitIn) -> dict[str, Any]:
    """Emits one item every ``delay`` seconds, ``steps`` in all. Every run has a token
    of its own, carried by its items and its result: a run's output is exactly
    ``{"run": token, "i": 0}`` … ``{"run": token, "i": steps - 1}``."""
    run = uuid.uuid4().hex
    log_line(payload.log, "start", ctx)
    try:
        for i in range(payload.steps):
            ctx.emit({"run": run, "i": i})
            ctx.progress(i + 1, payload.steps, f"item {i + 1}")
            await asyncio.sleep(payload.delay)
    except asyncio.CancelledError:
        log_line(payload.log, "stopped", ctx)
        raise
    log_line(payload.log, "done", ctx)
    return {"run": run, "items": payload.steps, "attempt": ctx.attempt}


@app.task(max_attempts=5, backoff=0.1)
def emitter_sync(ctx: TaskContext, payload: EmitIn) -> dict[str, Any]:
    """``emitter`` as a plain function (a thread): it stops when it sees
    ``ctx.cancelled``."""
    run = uuid.uuid4().hex
    log_line(payload.log, "start", ctx)
    for i in range(payload.steps):
        if ctx.cancelled:
            log_line(payload.log, "stopped", ctx)
            return {"run": run, "stopped": True}
        ctx.emit({"run": run, "i": i})
        ctx.progress(i + 1, payload.steps, f"item {i + 1}")
        time.sleep(payload.delay)
    log_line(payload.log, "done", ctx)
    return {"run": run, "items": payload.steps, "attempt": ctx.attempt}


class FailIn(BaseModel):
    reason: str = "it was asked to fail"


@app.task(max_attempts=1)
def fail(ctx: TaskContext, payload: FailIn) -> None:
    """Fails with a message meant for the user."""
    raise TaskFailed(payload.reason)


@app.task(max_attempts=1)
def crash(ctx: TaskContext, payload: dict[str, str]) -> None:
    """Fails with an internal error whose text must not reach the user."""
    raise RuntimeError(f"internal detail: {payload.get('secret', 'password=hunter2')}")


@app.task(retention=0.1)
async def ephemeral(ctx: TaskContext, payload: dict[str, int]) -> dict[str, int]:
    """A task whose finished record expires almost at once; emits one item."""
    ctx.emit({"n": payload.get("n", 0)})
    return {"n": payload.get("n", 0)}

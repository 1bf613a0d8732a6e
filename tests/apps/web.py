"""Tasks and an HTTP app for the web tests: ``errands worker tests.apps.web:app``.

The identity is the ``X-User`` header (``admin`` is an administrator); the database
URL comes from ``$ERRANDS_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection

from errands import Errands, TaskContext, TaskFailed
from errands.web import task_api
from tests.engines import engine_from_env

app = Errands(engine=engine_from_env())


class StepsIn(BaseModel):
    steps: int = Field(5, ge=0, le=10_000)
    delay: float = Field(0.05, ge=0, le=5)
    emit: bool = True


@app.task(max_attempts=1)
async def steps(ctx: TaskContext, payload: StepsIn) -> dict[str, Any]:
    """Reports progress ``steps`` times, emitting one item per step."""
    for i in range(payload.steps):
        await asyncio.sleep(payload.delay)
        ctx.progress(i + 1, payload.steps, f"step {i + 1}")
        if payload.emit:
            ctx.emit({"step": i + 1})
    return {"steps": payload.steps}


class FailIn(BaseModel):
    message: str = "it broke"


@app.task(max_attempts=2, backoff=0.1)
async def patient(ctx: TaskContext, payload: StepsIn) -> dict[str, Any]:
    """``steps`` with a second attempt: it survives the loss of its worker."""
    return await steps.fn(ctx, payload)  # type: ignore[no-any-return]


def _wait_for_file(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.02)


class TwoTriesIn(BaseModel):
    first: int = Field(3, ge=0, le=1000)
    second: int = Field(4, ge=0, le=1000)
    #: The first attempt fails once this file exists (the test decides when).
    gate: str


@app.task(max_attempts=2, backoff=0.05)
async def two_tries(ctx: TaskContext, payload: TwoTriesIn) -> dict[str, Any]:
    """Emits ``first`` items, waits for the gate and fails; its second attempt emits
    ``second`` other items and succeeds. Items say which attempt emitted them."""
    if ctx.attempt == 1:
        for i in range(payload.first):
            ctx.emit({"attempt": 1, "i": i})
        ctx.progress(1, 2, "first attempt")
        await asyncio.to_thread(_wait_for_file, payload.gate)
        raise RuntimeError("the first attempt fails")
    for i in range(payload.second):
        ctx.emit({"attempt": ctx.attempt, "i": i})
    return {"attempt": ctx.attempt, "items": payload.second}


@app.task(max_attempts=1)
def fail(ctx: TaskContext, payload: FailIn) -> None:
    raise TaskFailed(payload.message)


@app.task(max_attempts=1)
def crash(ctx: TaskContext, payload: dict[str, Any]) -> None:
    raise RuntimeError("secret internal detail")


@app.task(max_attempts=1)
async def sleepy(ctx: TaskContext, payload: dict[str, Any]) -> str:
    """Runs until cancelled (or 60 s)."""
    deadline = time.monotonic() + float(payload.get("seconds", 60))
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        ctx.raise_if_cancelled()
    return "slept"


def current_owner(conn: HTTPConnection) -> str | None:
    return conn.headers.get("x-user") or None


def is_admin(conn: HTTPConnection) -> bool:
    return conn.headers.get("x-user") == "admin"


def make_api(target: Errands, **options: Any) -> FastAPI:
    """A FastAPI app serving ``target``'s tasks under ``/api``."""
    api = FastAPI(title="errands test app")
    router = task_api(target, current_owner=current_owner, is_admin=is_admin, **options)
    api.include_router(router, prefix="/api")
    api.state.router = router
    return api


def install(target: Errands) -> Errands:
    for definition in app.registry:
        target.registry.add(definition)
    return target

"""The task the chaos tool's workers run: ``errands worker bench.chaos_tasks:app``.

The app reads its database URL from ``$ERRANDS_DATABASE_URL``; ``bench/chaos.py``
registers the same definition on its own app to submit and check.

Every run of the body draws a run token (a uuid4). It emits ``items`` items, one every
``interval`` seconds, each ``{"run": token, "i": i}``, reports progress after each, and
returns ``{"run": token, "items": items, "attempt": ctx.attempt}``. It appends one line
per event to the payload's ``log`` file with a single ``O_APPEND`` write:

    <event> <task id> <run token> <attempt> <pid> <unix time>

``start`` when the body begins, ``end`` when it ran to its end (just before returning),
``abort`` when it was interrupted (``CancelledError`` at a shutdown, a lost lease, …).
A run with neither ``end`` nor ``abort`` died with its process.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from errands import Errands, TaskContext

app = Errands()

#: Attempts a task may use: enough that kills and lost leases never exhaust them.
MAX_ATTEMPTS = 50


class ChaosIn(BaseModel):
    items: int = Field(ge=1, le=1000)
    interval: float = Field(ge=0, le=1)
    log: str


def log_event(path: str, event: str, ctx: TaskContext, run: str) -> None:
    line = f"{event} {ctx.task_id} {run} {ctx.attempt} {os.getpid()} {time.time():.6f}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@app.task(max_attempts=MAX_ATTEMPTS, backoff=0.05, backoff_max=0.5)
async def chaos(ctx: TaskContext, payload: ChaosIn) -> dict[str, Any]:
    run = uuid.uuid4().hex
    log_event(payload.log, "start", ctx, run)
    try:
        for i in range(payload.items):
            await asyncio.sleep(payload.interval)
            ctx.emit({"run": run, "i": i})
            ctx.progress(i + 1, payload.items, f"item {i + 1} of {payload.items}")
    except BaseException:
        log_event(payload.log, "abort", ctx, run)
        raise
    log_event(payload.log, "end", ctx, run)
    return {"run": run, "items": payload.items, "attempt": ctx.attempt}


@dataclass(frozen=True)
class Event:
    """One line of the run log."""

    event: str
    task_id: str
    run: str
    attempt: int
    pid: int
    at: float


def read_log(path: Path) -> tuple[list[Event], list[str]]:
    """The log's events, and the lines that could not be read (a torn write)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return [], []
    events: list[Event] = []
    bad: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        try:
            event, task_id, run, attempt, pid, at = parts
            events.append(Event(event, task_id, run, int(attempt), int(pid), float(at)))
        except ValueError:
            bad.append(line)
    return events, bad

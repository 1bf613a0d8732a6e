"""Process-executor tasks for tests/test_worker.py.

A child process of a worker imports this module and looks the task definitions up by
name, so they must live at module level on an app of their own. ``Errands()`` reads
``$ERRANDS_DATABASE_URL`` and connects to nothing until it is used; the tests copy these
definitions into their own app's registry, and the children only need the definitions.
Import this module after setting ``ERRANDS_DATABASE_URL`` (see the ``process_tasks``
fixture in test_worker.py).
"""

from __future__ import annotations

import os
import time

from pydantic import BaseModel

from errands import Errands, TaskContext, TaskFailed

app = Errands()


class SumIn(BaseModel):
    n: int


@app.task(executor="process", max_attempts=1)
def cpu_sum_squares(ctx: TaskContext, payload: SumIn) -> dict[str, int]:
    """CPU-bound: the sum of i*i for i < n, reporting progress along the way."""
    total = 0
    for i in range(payload.n):
        total += i * i
        if i % 10_000 == 0:
            ctx.progress(i, payload.n, "summing")
    ctx.progress(payload.n, payload.n, "done")
    return {"sum": total, "pid": os.getpid()}


class StepsIn(BaseModel):
    steps: int
    delay: float


@app.task(executor="process", max_attempts=1)
def slow_steps(ctx: TaskContext, payload: StepsIn) -> int:
    """Reports progress step by step, slowly enough to be watched from outside."""
    for i in range(1, payload.steps + 1):
        ctx.progress(i, payload.steps, f"step {i}")
        ctx.emit(i)
        time.sleep(payload.delay)
    return payload.steps


class SleepIn(BaseModel):
    pid_file: str
    seconds: float


@app.task(executor="process", max_attempts=1, timeout=1.0)
def sleep_forever(ctx: TaskContext, payload: SleepIn) -> str:
    """Writes its pid, then sleeps far longer than its timeout."""
    tmp = payload.pid_file + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(tmp, payload.pid_file)
    time.sleep(payload.seconds)
    return "too late"


@app.task(executor="process", max_attempts=1)
def leaky_in_child(ctx: TaskContext, payload: dict[str, str]) -> None:
    """Fails with an exception whose text must not reach the task's owner."""
    raise ValueError(f"secret {payload['secret']}")


@app.task(executor="process", max_attempts=3, backoff=0.01)
def refuse_in_child(ctx: TaskContext, payload: dict[str, object]) -> None:
    """Fails for good from a child process: another attempt could not help."""
    raise TaskFailed(f"bad input (attempt {ctx.attempt})", retry=False)

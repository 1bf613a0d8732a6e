"""An example tasks module: ``errands worker examples.tasks:app``.

``count`` walks to a number, reporting progress and emitting every tenth step;
``fail`` always fails with a message for the user.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field

from errands import Errands, TaskContext, TaskFailed

app = Errands()


class CountIn(BaseModel):
    to: int = Field(100, ge=1, le=1_000_000)
    delay: float = Field(0.01, ge=0, le=10)


@app.task(max_attempts=3, timeout=600)
async def count(ctx: TaskContext, payload: CountIn) -> dict[str, int]:
    for i in range(1, payload.to + 1):
        ctx.progress(i, payload.to, f"step {i} of {payload.to}")
        if i % 10 == 0:
            ctx.emit({"step": i})
        await asyncio.sleep(payload.delay)
    return {"counted": payload.to}


class FailIn(BaseModel):
    reason: str = "it was asked to fail"


@app.task(max_attempts=1)
def fail(ctx: TaskContext, payload: FailIn) -> None:
    raise TaskFailed(payload.reason)

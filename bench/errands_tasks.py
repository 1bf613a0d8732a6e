"""The errands app and tasks the benchmark workers run.

Workers: ``python -m errands worker bench.errands_tasks:app --concurrency N`` with
``$BENCH_ERRANDS_URL`` naming the database (set by ``errands_adapter.py``). The tasks
mirror the peers' tasks in ``shared/bench/peers``: same return values, the same
start-time probe (one Redis ``HSET`` into db 15, only for W2 tasks and task #0 of
W1/W3), and W3 reports progress 20 times through errands' own ``ctx.progress``.

``$BENCH_ERRANDS_EXECUTOR``: ``async`` (default: ``async def`` tasks run on the worker's
event loop) or ``thread`` (plain ``def`` tasks, one thread per attempt).

``$BENCH_ERRANDS_ENGINE``: ``sql`` (default), ``celery-redis`` or ``celery-rabbitmq``
(the Celery engine on that broker, see ``_celery.py``), on the Celery queue
``$BENCH_ERRANDS_QUEUE`` (the adapter sets a new one per run; the workers inherit it).
"""

from __future__ import annotations

import os
from typing import Any

from errands import Errands, TaskContext

from . import _celery
from ._peers import load_common

common = load_common()

URL = os.environ.get("BENCH_ERRANDS_URL", "sqlite:///" + str(common.STATE) + "/errands.db")
EXECUTOR = os.environ.get("BENCH_ERRANDS_EXECUTOR", "async")
if EXECUTOR not in ("async", "thread"):
    raise SystemExit(f"BENCH_ERRANDS_EXECUTOR must be async or thread, not {EXECUTOR!r}")

ENGINE = _celery.check_engine(os.environ.get("BENCH_ERRANDS_ENGINE", "sql"))
QUEUE = os.environ.get("BENCH_ERRANDS_QUEUE", "errands-bench")
BROKER = None if ENGINE == "sql" else _celery.broker_url(ENGINE, common.REDIS_URL)


def make_engine(queue: str = QUEUE) -> Any:
    """What ``Errands(engine=...)`` gets: ``"sql"``, or a Celery engine (its defaults:
    the library's own Celery app on ``BROKER``) on ``queue``."""
    if BROKER is None:
        return "sql"
    from errands.engines.celery import CeleryEngine

    return CeleryEngine(BROKER, queue=queue)


app = Errands(URL, engine=make_engine())
"""The app the workers load (its tasks are registered at the bottom of this module)."""


def _noop(payload: dict[str, Any]) -> dict[str, Any]:
    i = payload["i"]
    if i == 0:
        common.probe_start("w1-first")
    result: dict[str, Any] = common.w1_result(i)
    return result


def _w2(payload: dict[str, Any]) -> dict[str, Any]:
    common.probe_start(payload["key"])
    return {"ok": True}


def _w3(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    i = payload["i"]
    if i == 0:
        common.probe_start("w3-first")
    n = common.W3_REPORTS
    for k in range(1, n + 1):
        ctx.progress(k, n)
    result: dict[str, Any] = common.w3_result(i)
    return result


def register(target: Errands, executor: str = EXECUTOR) -> None:
    """Register the three benchmark tasks on ``target`` (``async def`` or plain ``def``)."""
    if executor == "async":

        @target.task(name="noop")
        async def noop(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
            return _noop(payload)

        @target.task(name="w2task")
        async def w2task(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
            return _w2(payload)

        @target.task(name="w3task")
        async def w3task(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
            return _w3(ctx, payload)

    else:

        @target.task(name="noop")
        def noop_sync(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
            return _noop(payload)

        @target.task(name="w2task")
        def w2task_sync(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
            return _w2(payload)

        @target.task(name="w3task")
        def w3task_sync(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
            return _w3(ctx, payload)


register(app)

"""The errands app, tasks and HTTP app of the web benchmark (``bench/web.py``).

- workers: ``python -m errands worker bench.web_tasks:app`` (the database is
  ``$ERRANDS_DATABASE_URL``);
- HTTP: ``bench/web_server.py`` serves :func:`make_api` (``task_api`` under ``/api``,
  the identity is the ``X-User`` header, no submit rate limit; plus ``GET /api/ping``,
  which does no errands work: the framework's floor); with ``--framework flask``,
  gunicorn serves :func:`make_flask`, the same with ``errands.flask.task_blueprint``.

``errands worker`` has no option for the worker's progress write interval
(``WorkerSettings.progress_interval``, default 0.25 s), so this app's workers take it
from ``$BENCH_WEB_PROGRESS_INTERVAL``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from errands import Errands, TaskContext
from errands.web import task_api


class BenchErrands(Errands):
    """An ``Errands`` whose workers write progress every ``$BENCH_WEB_PROGRESS_INTERVAL`` s."""

    def worker(self, **settings: Any) -> Any:
        interval = os.environ.get("BENCH_WEB_PROGRESS_INTERVAL")
        if interval:
            settings.setdefault("progress_interval", float(interval))
        return super().worker(**settings)


_pool = os.environ.get("BENCH_WEB_POOL_SIZE")
app = BenchErrands(pool_size=int(_pool) if _pool else None)
"""``$BENCH_WEB_POOL_SIZE``: the app's database threads and connections (default: the
library's, 4 on SQLite)."""


class NoopIn(BaseModel):
    i: int = 0


@app.task(name="noop", max_attempts=1)
async def noop(ctx: TaskContext, payload: NoopIn) -> dict[str, Any]:
    """The submit test's task (and the finished records the status test reads)."""
    ctx.progress(1, 1, "done")
    return {"ok": True, "i": payload.i}


class TickIn(BaseModel):
    seconds: float = Field(20.0, gt=0, le=3600)
    interval: float = Field(0.1, gt=0, le=60)


@app.task(name="ticker", max_attempts=1)
async def ticker(ctx: TaskContext, payload: TickIn) -> dict[str, Any]:
    """Reports progress every ``interval`` s (on a fixed schedule) for ``seconds``."""
    loop = asyncio.get_running_loop()
    n = max(1, round(payload.seconds / payload.interval))
    start = loop.time()
    for i in range(1, n + 1):
        await asyncio.sleep(max(0.0, start + i * payload.interval - loop.time()))
        ctx.progress(i, n, f"tick {i}")
    return {"ticks": n}


async def current_owner(conn: HTTPConnection) -> str | None:
    # async: a plain function would run in Starlette's thread pool on every request
    return conn.headers.get("x-user") or None


def make_api() -> FastAPI:
    """The benchmark's ASGI app (``uvicorn --factory bench.web_tasks:make_api``)."""
    api = FastAPI(title="errands web benchmark")
    api.include_router(task_api(app, current_owner=current_owner, submit_rate=None), prefix="/api")

    @api.get("/api/ping", include_in_schema=False)
    async def ping(request: Request) -> Response:
        """The framework's floor: a route of the same app that does no errands work."""
        if await current_owner(request) is None:
            return Response(status_code=401)
        return Response(b'{"ok":true}', media_type="application/json")

    return api


def make_flask() -> Any:
    """The same API as a Flask (WSGI) app (``gunicorn 'bench.web_tasks:make_flask()'``)."""
    from flask import Flask
    from flask import request as flask_request

    from errands.flask import task_blueprint

    def owner(request: Request) -> str | None:
        return request.headers.get("x-user") or None

    site = Flask("errands-web-bench")
    site.register_blueprint(
        task_blueprint(app, current_owner=owner, submit_rate=None), url_prefix="/api"
    )

    @site.get("/api/ping")
    def ping() -> Any:
        """The framework's floor: a route of the same app that does no errands work."""
        if owner(flask_request) is None:
            return site.response_class(status=401)
        return site.response_class(b'{"ok":true}', mimetype="application/json")

    return site

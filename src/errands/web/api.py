"""``task_api``: the HTTP API of an errands app, as a FastAPI router any ASGI app mounts.

The host application says who is asking (``current_owner``) and, optionally, who is an
administrator (``is_admin``); everything else — validation, ownership, live events —
is here. Every read and change goes through the :class:`~errands.Errands` facade with
the caller's owner, so ownership is enforced in the store's queries, and a task of
someone else gets the very bytes a missing one gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic import create_model as _create_model
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..app import ANY_OWNER, Errands
from ..errors import (
    IdempotencyConflict,
    InvalidPayload,
    InvalidTransition,
    PayloadTooLarge,
    TaskNotFound,
    UnknownTask,
    WaitTimeout,
)
from ..ids import is_task_id
from ..records import Status, TaskRecord
from .hub import ChangeHub, hub_for
from .problems import MEDIA_TYPE as PROBLEM
from .problems import (
    NOT_FOUND_DETAIL,
    Problem,
    ProblemRoute,
    problem_responses,
    validation_problem,
)
from .ratelimit import SubmitLimiter
from .resources import OutputPage, TaskPage, TaskResource, dumps, resource
from .streams import MAX_INT, Cursor, Event, race, task_events, until_disconnected

#: ``current_owner`` and ``is_admin``: take the request (or WebSocket), return a value
#: or an awaitable of it.
OwnerFn = Callable[[HTTPConnection], str | Awaitable[str | None] | None]
AdminFn = Callable[[HTTPConnection], bool | Awaitable[bool]]

log = logging.getLogger("errands.web")
_JSON_TYPE = re.compile(r"^application/([\w.+-]+\+)?json\s*(;.*)?$", re.IGNORECASE)
_PRIVATE = {"Cache-Control": "private, no-cache"}


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    payload: Any = None
    priority: int | None = Field(None, ge=-1_000_000, le=1_000_000)
    run_at: AwareDatetime | None = None


_ENVELOPE = TypeAdapter(_Envelope)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _storable(when: datetime) -> bool:
    """Whether the store, which keeps a UTC timestamp, can hold ``when`` (years 1–9999
    in UTC)."""
    try:
        datetime.fromtimestamp(when.timestamp(), UTC)
    except (OverflowError, ValueError, OSError):
        return False
    return True


def _bad_body(what: str) -> Problem:
    return Problem(422, f"The body is {what}.", errors=[{"field": "body", "message": what}])


def _event_stream(events: list[str]) -> dict[str, Any]:
    """The OpenAPI entry of a stream of Server-Sent Events: before OpenAPI 3.2 (and its
    ``itemSchema``), the ``schema`` of ``text/event-stream`` describes one event."""
    event = {
        "type": "object",
        "properties": {
            "event": {"type": "string", "enum": events},
            "id": {"type": "string"},
            "data": {"type": "string", "description": "JSON"},
            "retry": {"type": "integer", "minimum": 0},
        },
        "required": ["event", "data"],
    }
    return {"content": {"text/event-stream": {"schema": event}}}


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(doc), status, headers, media_type="application/json")


async def call_hook(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a hook of the host (``current_owner``, ``is_admin``, the dashboard's): a
    coroutine function on the loop, anything else in a thread (it may block); an
    awaitable result is awaited."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    result = await run_in_threadpool(fn, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _base(conn: HTTPConnection, rel: str) -> str:
    """The path the router is mounted at: the request's full path less the route's own
    part (``rel`` with its path parameters filled in). Not the matched route's path:
    FastAPI ≥ 0.16x keeps an included router's routes without the ``prefix``."""
    root = str(conn.scope.get("root_path", ""))
    path = str(conn.scope.get("path", ""))
    if root and not path.startswith(root):
        path = root + path
    params = conn.scope.get("path_params") or {}
    own = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: str(params.get(m[1], m[0])), rel)
    return path[: -len(own)] if path.endswith(own) else root


def _etag(version: int) -> str:
    return f'"{version}"'


def _matches(header: str, etag: str) -> bool:
    return any(tag.strip().removeprefix("W/") in (etag, "*") for tag in header.split(","))


def _retry_after(record: TaskRecord, poll: float) -> str:
    wait = poll
    if record.status is Status.QUEUED:
        wait = max(poll, (record.run_at - datetime.now(UTC)).total_seconds())
    return str(max(1, min(60, math.ceil(wait))))


def _inline(schema: Any, defs: dict[str, Any], depth: int = 0) -> Any:
    """Resolve ``#/$defs/…`` references in place (the schema goes inline into the
    OpenAPI document, where ``$defs`` refs would not resolve)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = defs.get(ref[len("#/$defs/") :], {})
            return {} if depth > 20 else _inline(target, defs, depth + 1)
        return {k: _inline(v, defs, depth) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, defs, depth) for v in schema]
    return schema


def _submit_schema(app: Errands) -> dict[str, Any]:
    """The request body of ``POST /tasks``: one variant per registered task, with its
    payload schema, told apart by ``name``."""
    variants: list[Any] = [
        _create_model(
            "Submit_" + re.sub(r"\W", "_", definition.name),
            __config__=ConfigDict(extra="forbid"),
            name=(Literal[definition.name], ...),  # type: ignore[valid-type,arg-type]
            payload=(definition.payload_model or dict[str, Any], None),
            priority=(int | None, None),
            run_at=(AwareDatetime | None, None),
        )
        for definition in app.registry
    ]
    if not variants:
        schema = _ENVELOPE.json_schema()
    elif len(variants) == 1:
        schema = variants[0].model_json_schema()
    else:
        union = Union[tuple(variants)]  # type: ignore[valid-type]  # noqa: UP007
        schema = TypeAdapter(union).json_schema()  # type: ignore[arg-type]
        schema.pop("discriminator", None)
    return _inline(schema, schema.get("$defs", {}))  # type: ignore[no-any-return]


def task_api(
    app: Errands,
    *,
    current_owner: OwnerFn,
    is_admin: AdminFn | None = None,
    submit_rate: float | None = 2.0,
    submit_burst: int = 30,
    max_body_bytes: int | None = None,
    poll_interval: float = 1.0,
    keepalive: float = 15.0,
    delete_wait: float = 10.0,
) -> APIRouter:
    """The errands HTTP API for ``app``. Mount it with
    ``api.include_router(task_api(app, current_owner=...), prefix="/api")``.

    - ``current_owner(request)``: the caller's owner id, or None (→ 401). Sync
      functions run in a thread pool (they may block); async ones on the loop. For a
      WebSocket it gets the ``WebSocket`` (same headers, cookies and query).
    - ``is_admin(request)``: True for administrators, who may read and change every
      task, list any owner's (``?owner=…`` or ``?owner=*``) and see tracebacks.
    - ``submit_rate`` / ``submit_burst``: per owner, submits per second after a burst
      (``None``: no limit); over it, 429 with ``Retry-After``.
    - ``max_body_bytes``: the largest request body (default: the app's payload limit
      plus 16 KiB); larger gets 413.
    - ``poll_interval``: seconds between the live views' change polls, and the
      ``Retry-After`` hint of unfinished tasks.
    - ``keepalive``: seconds between SSE keep-alive comments.
    - ``delete_wait``: how long ``DELETE`` waits for a running task to stop.

    Tasks registered before this call appear in ``/openapi.json`` with their payload
    schemas; tasks registered later are accepted but not documented.
    """
    api = TaskAPI(
        app,
        current_owner=current_owner,
        is_admin=is_admin,
        limiter=SubmitLimiter(submit_rate, submit_burst) if submit_rate else None,
        body_limit=max_body_bytes if max_body_bytes is not None else app.max_payload_bytes + 16384,
        poll_interval=poll_interval,
        keepalive=keepalive,
        delete_wait=delete_wait,
    )
    return api.router()


@dataclass(eq=False)
class TaskAPI:
    """The handlers of :func:`task_api`, one method per route."""

    app: Errands
    current_owner: OwnerFn
    is_admin: AdminFn | None
    limiter: SubmitLimiter | None
    body_limit: int
    poll_interval: float
    keepalive: float
    delete_wait: float
    hub: ChangeHub = field(init=False)

    def __post_init__(self) -> None:
        self.hub = hub_for(self.app.runtime)
        self.hub.poll_interval = self.poll_interval

    # -- who is asking -------------------------------------------------------------------
    async def identify(self, conn: HTTPConnection) -> tuple[str, bool]:
        owner = await call_hook(self.current_owner, conn)
        if not owner:
            raise Problem(401, "Sign in to use this API.")
        if not isinstance(owner, str):
            raise TypeError("current_owner must return a string or None")
        if len(owner) > 255 or "\x00" in owner:  # the store refuses these: say so now
            log.error("errands: current_owner returned an owner id errands cannot store")
            raise Problem(401, "Sign in to use this API.")
        admin = bool(await call_hook(self.is_admin, conn)) if self.is_admin is not None else False
        return owner, admin

    async def load(self, task_id: str, owner: str, admin: bool) -> TaskRecord:
        try:
            return await self.app.get(task_id, owner=_who(owner, admin))
        except TaskNotFound:
            raise Problem(404, NOT_FOUND_DETAIL) from None

    # -- submit --------------------------------------------------------------------
    async def submit(self, request: Request) -> Response:
        owner, admin = await self.identify(request)
        ctype = request.headers.get("content-type", "")
        if not _JSON_TYPE.match(ctype):
            raise Problem(415, "Send the task as JSON (Content-Type: application/json).")
        raw = await _read_body(request, self.body_limit)
        try:
            doc = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
        except RecursionError:
            raise _bad_body("nested too deeply") from None
        except (ValueError, UnicodeDecodeError):
            raise _bad_body("not valid JSON") from None
        try:
            envelope = _ENVELOPE.validate_python(doc)
        except ValidationError as exc:
            raise validation_problem(exc.errors(include_url=False)) from None
        if envelope.run_at is not None and not _storable(envelope.run_at):
            raise validation_problem([{"loc": ["run_at"], "msg": "must be in years 1–9999 UTC"}])
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 255:
            raise validation_problem(
                [{"loc": ["Idempotency-Key"], "msg": "must be 1 to 255 characters"}]
            )
        wait = self.limiter.take(owner) if self.limiter is not None else 0.0
        if wait:
            raise Problem(
                429,
                "Too many tasks submitted; try again later.",
                headers={"Retry-After": SubmitLimiter.retry_after(wait)},
            )
        try:
            record = await self.app.submit(
                envelope.name,
                envelope.payload,
                owner=owner,
                priority=envelope.priority,
                run_at=envelope.run_at,
                idempotency_key=key,
            )
        except IdempotencyConflict as exc:
            raise Problem(409, exc.message) from None
        except UnknownTask as exc:
            raise Problem(
                422,
                exc.message,
                errors=[{"field": "name", "message": "no task is registered under this name"}],
            ) from None
        except PayloadTooLarge as exc:
            raise Problem(413, exc.message) from None
        except InvalidPayload as exc:
            raise validation_problem(exc.errors or [{"msg": exc.message}], ["payload"]) from None
        base = _base(request, "/tasks")
        doc = resource(record, base, datetime.now(UTC), admin)
        headers = {"Location": doc["links"]["self"], "ETag": _etag(record.version), **_PRIVATE}
        return _json(doc, 202, headers)

    # -- reading -------------------------------------------------------------------
    async def get_task(self, request: Request, task_id: str) -> Response:
        owner, admin = await self.identify(request)
        conditional = request.headers.get("if-none-match")
        if conditional:
            version = await self.app.get_version(task_id, owner=_who(owner, admin))
            etag = _etag(version)
            if _matches(conditional, etag):
                return Response(status_code=304, headers={"ETag": etag, **_PRIVATE})
        record = await self.load(task_id, owner, admin)
        headers = {"ETag": _etag(record.version), **_PRIVATE}
        if not record.done:
            headers["Retry-After"] = _retry_after(record, self.poll_interval)
        base = _base(request, "/tasks/{task_id}")
        return _json(resource(record, base, datetime.now(UTC), admin), 200, headers)

    async def list_tasks(
        self,
        request: Request,
        status: Annotated[Status | None, Query(description="Only tasks in this status")] = None,
        name: Annotated[str | None, Query(description="Only tasks of this name")] = None,
        limit: Annotated[int, Query(ge=1, le=500, description="Tasks per page")] = 50,
        cursor: Annotated[
            str | None, Query(description="`next_cursor` of the previous page")
        ] = None,
        owner_param: Annotated[
            str | None,
            Query(alias="owner", description="Administrators: an owner's id, or `*` for all"),
        ] = None,
    ) -> Response:
        owner, admin = await self.identify(request)
        errors = []
        if owner_param is not None and not admin and owner_param != owner:
            errors.append({"loc": ["owner"], "msg": "only administrators list other owners"})
        elif owner_param == "":
            errors.append({"loc": ["owner"], "msg": "an owner's id, or * for all"})
        for param, value in (("name", name), ("owner", owner_param)):
            if value is not None and "\x00" in value:
                errors.append({"loc": [param], "msg": "must not contain NUL characters"})
        if cursor and not is_task_id(cursor):
            errors.append({"loc": ["cursor"], "msg": "not a cursor of this list"})
        if errors:
            raise validation_problem(errors)
        target: Any = owner
        if admin and owner_param is not None:
            target = ANY_OWNER if owner_param == "*" else owner_param
        page = await self.app.list(
            owner=target, status=status, name=name, limit=limit, cursor=cursor or None
        )
        base = _base(request, "/tasks")
        now = datetime.now(UTC)
        items = [resource(r, base, now, admin) for r in page.items]
        return _json({"items": items, "next_cursor": page.next_cursor}, 200, _PRIVATE)

    async def task_output(
        self,
        request: Request,
        task_id: str,
        after: Annotated[int, Query(ge=0, le=MAX_INT, description="A sequence number")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000, description="Items per page")] = 1000,
    ) -> Response:
        owner, admin = await self.identify(request)
        page = await self.app.output_page(
            task_id, owner=_who(owner, admin), after=after, limit=limit
        )
        doc = {
            "items": [{"seq": s, "data": d} for s, d in page.items],
            "last_seq": page.items[-1][0] if page.items else max(after, page.floor),
            "output_floor": page.floor,
        }
        return _json(doc, 200, _PRIVATE)

    # -- changing ------------------------------------------------------------------
    async def cancel_task(self, request: Request, task_id: str) -> Response:
        owner, admin = await self.identify(request)
        record = await self.app.cancel(task_id, owner=_who(owner, admin))
        base = _base(request, "/tasks/{task_id}/cancel")
        doc = resource(record, base, datetime.now(UTC), admin)
        return _json(doc, 200 if record.done else 202, {"ETag": _etag(record.version)})

    async def delete_task(self, request: Request, task_id: str) -> Response:
        owner, admin = await self.identify(request)
        target = _who(owner, admin)
        try:
            record = await self.app.cancel(task_id, owner=target)
            if not record.done:
                await self.app.wait(task_id, owner=target, timeout=self.delete_wait, poll=0.25)
            await self.app.delete(task_id, owner=target)
        except (WaitTimeout, InvalidTransition):
            raise Problem(
                409,
                "The task is still stopping; try again shortly.",
                headers={"Retry-After": "1"},
            ) from None
        return Response(status_code=204)

    # -- live events -----------------------------------------------------------------
    async def task_events_sse(
        self,
        request: Request,
        task_id: str,
        last_event_id: Annotated[
            str | None, Query(description="Resume after this event id")
        ] = None,
    ) -> Response:
        resume = request.headers.get("last-event-id") or last_event_id
        events = await self._events(request, "/tasks/{task_id}/events", task_id, resume)
        if events is None:
            return Response(status_code=204)

        async def frames() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            async with contextlib.aclosing(events):  # closed with the response: unwatch
                async for event in events:
                    yield b": keep-alive\n\n" if event is None else event.sse()

        return sse_response(frames())

    async def _events(
        self, conn: HTTPConnection, rel: str, task_id: str, resume: str | None
    ) -> AsyncGenerator[Event | None, None] | None:
        """The task's events after the ``resume`` cursor, for the caller; None when the
        caller already has everything of the finished task."""
        owner, admin = await self.identify(conn)
        cursor = Cursor.parse(resume)
        record = await self.load(task_id, owner, admin)
        if record.done and cursor.version >= record.version:
            rest = await self.app.outputs(
                record.id, owner=_who(owner, admin), after=cursor.seq, limit=1
            )
            if not rest:
                return None
        return task_events(
            self.hub,
            record,
            base=_base(conn, rel),
            admin=admin,
            cursor=cursor,
            keepalive=self.keepalive,
        )

    async def owner_events(self, request: Request) -> Response:
        owner, admin = await self.identify(request)
        base = _base(request, "/events")
        app, hub, keepalive = self.app, self.hub, self.keepalive

        async def frames() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            async with hub.owner(owner) as watch:
                while True:
                    try:
                        async with asyncio.timeout(keepalive):
                            await watch.changed.wait()
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    records = await app.get_many(watch.take(), owner=owner)
                    now = datetime.now(UTC)
                    for r in sorted(records, key=lambda r: r.id):
                        if watch.mark_sent(r.id, r.version):
                            data = dumps(resource(r, base, now, admin)).decode()
                            yield f"event: task\ndata: {data}\n\n".encode()

        return sse_response(frames())

    async def task_ws(self, websocket: WebSocket, task_id: str) -> None:
        """The same events as ``/events`` of the task, as JSON text messages
        ``{"event", "id", "data"}``; resume with ``?last_event_id=``."""
        await websocket.accept()
        resume = websocket.query_params.get("last_event_id")
        try:
            events = await self._events(websocket, "/tasks/{task_id}/ws", task_id, resume)
        except Problem as problem:
            await websocket.send_text(f'{{"event":"error","data":{problem.body().decode()}}}')
            await websocket.close(4000 + problem.status)
            return
        if events is None:
            await websocket.close(1000)
            return

        async def pump() -> None:
            async with contextlib.aclosing(events):
                async for event in events:
                    if event is not None:
                        await websocket.send_text(event.ws())
            await websocket.close(1000)

        work = asyncio.ensure_future(pump())
        watcher = asyncio.ensure_future(until_disconnected(websocket.receive))
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await race(work, watcher)

    # -- the router ----------------------------------------------------------------------
    def router(self) -> APIRouter:
        router = APIRouter(route_class=ProblemRoute, tags=["tasks"])
        router.post(
            "/tasks",
            status_code=202,
            summary="Submit a task",
            responses={
                202: {"model": TaskResource, "description": "Queued; `Location` names it"},
                **problem_responses(401, 409, 413, 415, 422, 429, 431),
            },
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _submit_schema(self.app)}},
                },
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "The same key (per caller) returns the task it first "
                        "created instead of creating another; with a different request, 409.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    }
                ],
            },
        )(self.submit)
        router.get(
            "/tasks/{task_id}",
            summary="Read a task",
            responses={
                200: {"model": TaskResource, "description": "The task; `ETag` is its version"},
                304: {"description": "Unchanged since the `If-None-Match` version"},
                **problem_responses(401, 404, 431),
            },
        )(self.get_task)
        router.get(
            "/tasks",
            summary="List the caller's tasks, newest first",
            responses={200: {"model": TaskPage}, **problem_responses(401, 422, 431)},
        )(self.list_tasks)
        router.get(
            "/tasks/{task_id}/output",
            summary="Items the task's current attempt emitted after sequence number `after`",
            responses={200: {"model": OutputPage}, **problem_responses(401, 404, 422, 431)},
        )(self.task_output)
        router.post(
            "/tasks/{task_id}/cancel",
            summary="Cancel a task",
            description=(
                "A queued task is cancelled at once (200). A running one is asked to stop "
                "(202); watch it until `done`. A finished task is returned unchanged (200)."
            ),
            responses={
                200: {"model": TaskResource},
                202: {"model": TaskResource, "description": "Asked to stop"},
                **problem_responses(401, 404, 431),
            },
        )(self.cancel_task)
        router.delete(
            "/tasks/{task_id}",
            status_code=204,
            summary="Delete a task (cancelling it first if it is not finished)",
            responses={204: {"description": "Deleted"}, **problem_responses(401, 404, 409, 431)},
        )(self.delete_task)
        router.get(
            "/tasks/{task_id}/events",
            summary="The task's live events (Server-Sent Events)",
            description=(
                "Events `output`, `status`, `progress`, `attempt` (a new attempt began: "
                "drop the items held, the new attempt's follow) and a final `done`; each "
                "`id` is `<version>-<seq>`. Reconnect with `Last-Event-ID` (or "
                "`?last_event_id=`) to resume. 204 when the client already has the "
                "finished task."
            ),
            responses={
                200: _event_stream(["output", "status", "progress", "attempt", "done", "deleted"]),
                204: {"description": "Nothing left to send: the task finished"},
                **problem_responses(401, 404, 422, 431),
            },
        )(self.task_events_sse)
        router.get(
            "/events",
            summary="Live changes to all of the caller's tasks (Server-Sent Events)",
            description="One `task` event (the task resource) per change.",
            responses={200: _event_stream(["task"]), **problem_responses(401, 431)},
        )(self.owner_events)
        router.add_api_websocket_route("/tasks/{task_id}/ws", self.task_ws)
        return router


def _who(owner: str, admin: bool) -> Any:
    return ANY_OWNER if admin else owner


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"The body is larger than {limit} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Problem(413, f"The body is larger than {limit} bytes.")
    return bytes(body)


def sse_response(frames: AsyncIterator[bytes]) -> StreamingResponse:
    """A ``text/event-stream`` response. Starlette's streaming response watches for the
    client's disconnect and cancels the stream; the generator is then closed, releasing
    what it watched."""
    return StreamingResponse(
        frames,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        media_type="text/event-stream",
    )


__all__ = ["PROBLEM", "task_api"]

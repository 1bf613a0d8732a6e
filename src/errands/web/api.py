"""``task_api``: the HTTP API of an errands app, as a FastAPI router any ASGI app mounts:
its tasks (``/tasks``, ``/events``) and its users' schedules (``/schedules``).

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
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Coroutine
from datetime import timedelta
from typing import Annotated, Any, Literal, Union

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter
from pydantic import create_model as _create_model
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..app import Errands
from ..records import Status
from .groups import MAX_INDEX, MAX_PARTS, ChildrenQuery
from .limits import DEFAULT_MAX_RUN_AT_DELAY
from .problems import MEDIA_TYPE as PROBLEM
from .problems import Problem, problem_responses, validation_problem
from .protocol import (
    ENVELOPE,
    Call,
    ListQuery,
    OutputQuery,
    Reply,
    TaskProtocol,
    check_header_size,
    check_owner,
    problem_reply,
    too_large,
)
from .resources import (
    ChildrenPage,
    OutputPage,
    SchedulePage,
    ScheduleResource,
    TaskPage,
    TaskResource,
)
from .schedules import (
    NEW_SCHEDULE,
    NewSchedule,
    ScheduleChange,
    ScheduleProtocol,
    ScheduleQuery,
)
from .sse import sse_response
from .streams import MAX_INT, race, until_disconnected

#: ``current_owner`` and ``is_admin``: take the request (or WebSocket), return a value
#: or an awaitable of it.
OwnerFn = Callable[[HTTPConnection], str | Awaitable[str | None] | None]
AdminFn = Callable[[HTTPConnection], bool | Awaitable[bool]]

log = logging.getLogger("errands.web")
#: The query parameters every listing takes.
PageCursor = Annotated[str | None, Query(description="`next_cursor` of the previous page")]
OwnerParam = Annotated[
    str | None, Query(alias="owner", description="Administrators: an owner's id, or `*` for all")
]


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


#: The fields of a request body naming a task, beside ``name``, given the task's
#: payload type.
Fields = Callable[[Any], dict[str, Any]]


def _per_task_schema(
    app: Errands, prefix: str, fallback: TypeAdapter[Any], fields: Fields
) -> dict[str, Any]:
    """A request body naming a task (``name``) beside ``fields``: one variant per
    registered task, with its payload schema, told apart by ``name`` (``fallback``'s
    schema when no task is registered)."""
    variants: list[Any] = [
        _create_model(
            prefix + re.sub(r"\W", "_", definition.name),
            __config__=ConfigDict(extra="forbid"),
            name=(Literal[definition.name], ...),  # type: ignore[valid-type,arg-type]
            **fields(definition.payload_model or dict[str, Any]),
        )
        for definition in app.registry
    ]
    if not variants:
        schema = fallback.json_schema()
    elif len(variants) == 1:
        schema = variants[0].model_json_schema()
    else:
        union = Union[tuple(variants)]  # type: ignore[valid-type]  # noqa: UP007
        schema = TypeAdapter(union).json_schema()  # type: ignore[arg-type]
        schema.pop("discriminator", None)
    return _inline(schema, schema.get("$defs", {}))  # type: ignore[no-any-return]


def _submit_schema(app: Errands) -> dict[str, Any]:
    """The request body of ``POST /tasks``: a task (``payload``), or a group of one
    part per payload (``payloads``, with ``then``)."""

    def fields(payload: Any) -> dict[str, Any]:
        parts = Field(
            None,
            min_length=1,
            max_length=MAX_PARTS,
            description="A group: one part per payload (instead of `payload`; "
            "not with `run_at` or `Idempotency-Key`)",
        )
        then = Field(
            None,
            min_length=1,
            max_length=255,
            description="With `payloads`: the task run once every part has succeeded, "
            'with `{"results": [...]}`',
        )
        return {
            "payload": (payload, None),
            "payloads": (list[payload] | None, parts),  # type: ignore[valid-type]
            "then": (str | None, then),
            "priority": (int | None, None),
            "run_at": (AwareDatetime | None, None),
        }

    return _per_task_schema(app, "Submit_", ENVELOPE, fields)


def _schedule_schema(app: Errands) -> dict[str, Any]:
    """The request body of ``POST /schedules`` (its fields beside the task's are
    ``NewSchedule``'s)."""
    own = NewSchedule.model_fields
    fields = {name: (own[name].annotation, own[name]) for name in ("cron", "every", "timezone")}
    return _per_task_schema(
        app, "Schedule_", NEW_SCHEDULE, lambda payload: {"payload": (payload, None), **fields}
    )


def _json_body(schema: dict[str, Any] | type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` of a route whose required body is JSON of ``schema``."""
    if not isinstance(schema, dict):
        schema = _inline(schema.model_json_schema(), {})
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


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
    allowed_priorities: Collection[int] | None = None,
    max_client_priority: int | None = None,
    max_run_at_delay: timedelta | float | None = DEFAULT_MAX_RUN_AT_DELAY,
) -> APIRouter:
    """The errands HTTP API for ``app``: its tasks and its users' schedules. Mount it
    with ``api.include_router(task_api(app, current_owner=...), prefix="/api")``.

    - ``current_owner(request)``: the caller's owner id, or None (→ 401). Sync
      functions run in a thread pool (they may block); async ones on the loop. For a
      WebSocket it gets the ``WebSocket`` (same headers, cookies and query).
    - ``is_admin(request)``: True for administrators, who may read and change every
      task and schedule, list any owner's (``?owner=…`` or ``?owner=*``) and see
      tracebacks.
    - ``submit_rate`` / ``submit_burst``: per owner, submits per second after a burst
      (``None``: no limit); over it, 429 with ``Retry-After``.
    - ``max_body_bytes``: the largest request body (default: the app's payload limit
      plus 16 KiB); larger gets 413.
    - ``poll_interval``: seconds between the live views' change polls, and the
      ``Retry-After`` hint of unfinished tasks.
    - ``keepalive``: seconds between SSE keep-alive comments.
    - ``delete_wait``: how long ``DELETE`` waits for a running task to stop.
    - ``allowed_priorities`` / ``max_client_priority``: the priorities callers who
      are not administrators may set (by default none: a priority puts a task ahead of
      every other user's); ``max_run_at_delay``: how far ahead their ``run_at`` may be
      (default 30 days; None: no limit). Refused: 422 naming the field.

    Tasks registered before this call appear in ``/openapi.json`` with their payload
    schemas; tasks registered later are accepted but not documented.
    """
    protocol = TaskProtocol.configured(
        app,
        submit_rate=submit_rate,
        submit_burst=submit_burst,
        max_body_bytes=max_body_bytes,
        poll_interval=poll_interval,
        keepalive=keepalive,
        delete_wait=delete_wait,
        allowed_priorities=allowed_priorities,
        max_client_priority=max_client_priority,
        max_run_at_delay=max_run_at_delay,
    )
    return TaskAPI(protocol, current_owner, is_admin).router()


class TaskAPI:
    """The FastAPI routes of :func:`task_api`: each says who is asking and hands the
    request to the framework-neutral :class:`~errands.web.protocol.TaskProtocol`."""

    def __init__(
        self, protocol: TaskProtocol, current_owner: OwnerFn, is_admin: AdminFn | None
    ) -> None:
        self.protocol = protocol
        self.schedules = ScheduleProtocol.of(protocol)
        self.current_owner = current_owner
        self.is_admin = is_admin

    async def call(self, conn: HTTPConnection, rel: str) -> Call:
        """Who is asking, and where: ``rel`` is the route's own path."""
        owner = check_owner(await call_hook(self.current_owner, conn))
        admin = bool(await call_hook(self.is_admin, conn)) if self.is_admin is not None else False
        base = _base(conn, rel)
        return Call(
            owner,
            admin,
            base + "/tasks",
            conn.headers,
            conn.query_params,
            schedules=base + "/schedules",
        )

    # -- the routes ----------------------------------------------------------------------
    async def submit(self, request: Request) -> Response:
        call = await self.call(request, "/tasks")
        body = await _read_body(request, self.protocol.body_limit)
        return _response(await self.protocol.submit(call, body))

    async def get_task(self, request: Request, task_id: str) -> Response:
        call = await self.call(request, "/tasks/{task_id}")
        return _response(await self.protocol.get(call, task_id))

    async def list_tasks(
        self,
        request: Request,
        status: Annotated[Status | None, Query(description="Only tasks in this status")] = None,
        name: Annotated[str | None, Query(description="Only tasks of this name")] = None,
        limit: Annotated[int, Query(ge=1, le=500, description="Tasks per page")] = 50,
        cursor: PageCursor = None,
        owner_param: OwnerParam = None,
    ) -> Response:
        call = await self.call(request, "/tasks")
        query = ListQuery(status=status, name=name, limit=limit, cursor=cursor, owner=owner_param)
        return _response(await self.protocol.list(call, query))

    async def task_output(
        self,
        request: Request,
        task_id: str,
        after: Annotated[int, Query(ge=0, le=MAX_INT, description="A sequence number")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000, description="Items per page")] = 1000,
    ) -> Response:
        call = await self.call(request, "/tasks/{task_id}/output")
        query = OutputQuery(after=after, limit=limit)
        return _response(await self.protocol.output(call, task_id, query))

    async def task_children(
        self,
        request: Request,
        task_id: str,
        after: Annotated[
            int,
            Query(
                ge=-1,
                le=MAX_INDEX,
                description="The `group_index` of the last part read (`next_cursor`)",
            ),
        ] = -1,
        limit: Annotated[int, Query(ge=1, le=500, description="Parts per page")] = 100,
    ) -> Response:
        call = await self.call(request, "/tasks/{task_id}/children")
        query = ChildrenQuery(after=after, limit=limit)
        return _response(await self.protocol.children(call, task_id, query))

    async def cancel_task(self, request: Request, task_id: str) -> Response:
        call = await self.call(request, "/tasks/{task_id}/cancel")
        return _response(await self.protocol.cancel(call, task_id))

    async def delete_task(self, request: Request, task_id: str) -> Response:
        call = await self.call(request, "/tasks/{task_id}")
        return _response(await self.protocol.delete(call, task_id))

    async def task_events_sse(
        self,
        request: Request,
        task_id: str,
        last_event_id: Annotated[
            str | None, Query(description="Resume after this event id")
        ] = None,
    ) -> Response:
        call = await self.call(request, "/tasks/{task_id}/events")
        frames = await self.protocol.events_stream(call, task_id)
        if frames is None:
            return Response(status_code=204)
        return sse_response(frames)

    async def owner_events(self, request: Request) -> Response:
        call = await self.call(request, "/events")
        return sse_response(self.protocol.owner_stream(call))

    async def task_ws(self, websocket: WebSocket, task_id: str) -> None:
        """The same events as ``/events`` of the task, as JSON text messages
        ``{"event", "id", "data"}``; resume with ``?last_event_id=``."""
        await websocket.accept()
        resume = websocket.query_params.get("last_event_id")
        try:
            call = await self.call(websocket, "/tasks/{task_id}/ws")
            events = await self.protocol.task_events(call, task_id, resume)
        except Problem as problem:
            await websocket.send_text(f'{{"event":"error","data":{problem.body().decode()}}}')
            await websocket.close(4000 + problem.status)
            return
        if events is None:
            await websocket.close(1000)
            return

        async def pump() -> None:
            async with contextlib.aclosing(events):  # type: ignore[type-var]
                async for event in events:
                    if event is not None:
                        await websocket.send_text(event.ws())
                        await asyncio.sleep(0)  # a lost connection is heard of at once
            await websocket.close(1000)

        work = asyncio.ensure_future(pump())
        watcher = asyncio.ensure_future(until_disconnected(websocket.receive))
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await race(work, watcher)

    # -- the schedule routes ---------------------------------------------------------------
    async def create_schedule(self, request: Request) -> Response:
        call = await self.call(request, "/schedules")
        body = await _read_body(request, self.protocol.body_limit)
        return _response(await self.schedules.create(call, body))

    async def list_schedules(
        self,
        request: Request,
        limit: Annotated[int, Query(ge=1, le=500, description="Schedules per page")] = 50,
        cursor: PageCursor = None,
        owner_param: OwnerParam = None,
    ) -> Response:
        call = await self.call(request, "/schedules")
        query = ScheduleQuery(limit=limit, cursor=cursor, owner=owner_param)
        return _response(await self.schedules.list(call, query))

    async def get_schedule(self, request: Request, schedule_id: str) -> Response:
        call = await self.call(request, "/schedules/{schedule_id}")
        return _response(await self.schedules.get(call, schedule_id))

    async def change_schedule(self, request: Request, schedule_id: str) -> Response:
        call = await self.call(request, "/schedules/{schedule_id}")
        body = await _read_body(request, self.protocol.body_limit)
        return _response(await self.schedules.change(call, schedule_id, body))

    async def delete_schedule(self, request: Request, schedule_id: str) -> Response:
        call = await self.call(request, "/schedules/{schedule_id}")
        return _response(await self.schedules.delete(call, schedule_id))

    def schedule_router(self) -> APIRouter:
        router = APIRouter(route_class=ProblemRoute, tags=["schedules"])
        schedule = {
            200: {"model": ScheduleResource},
            **problem_responses(401, 404, 431, subject="schedule"),
        }
        router.post(
            "/schedules",
            status_code=201,
            summary="Create a schedule: a task on every tick of `cron` or every `every` seconds",
            responses={
                201: {"model": ScheduleResource, "description": "Created; `Location` names it"},
                **problem_responses(401, 413, 415, 422, 431),
            },
            openapi_extra=_json_body(_schedule_schema(self.protocol.errands)),
        )(self.create_schedule)
        router.get(
            "/schedules",
            summary="List the caller's schedules, oldest first",
            responses={200: {"model": SchedulePage}, **problem_responses(401, 422, 431)},
        )(self.list_schedules)
        router.get(
            "/schedules/{schedule_id}",
            summary="Read a schedule",
            responses=schedule,
        )(self.get_schedule)
        router.patch(
            "/schedules/{schedule_id}",
            summary='Pause (`{"paused": true}`) or resume a schedule',
            description="A resumed schedule's next tick is the first after now.",
            responses={
                **schedule,
                **problem_responses(401, 404, 413, 415, 422, 431, subject="schedule"),
            },
            openapi_extra=_json_body(ScheduleChange),
        )(self.change_schedule)
        router.delete(
            "/schedules/{schedule_id}",
            status_code=204,
            summary="Delete a schedule (the tasks it created stay)",
            responses={
                204: {"description": "Deleted"},
                **problem_responses(401, 404, 431, subject="schedule"),
            },
        )(self.delete_schedule)
        return router

    # -- the router ----------------------------------------------------------------------
    def router(self) -> APIRouter:
        router = APIRouter(route_class=ProblemRoute, tags=["tasks"])
        router.post(
            "/tasks",
            status_code=202,
            summary="Submit a task, or a group (`payloads`: one part per payload)",
            responses={
                202: {"model": TaskResource, "description": "Queued; `Location` names it"},
                **problem_responses(401, 409, 413, 415, 422, 429, 431),
            },
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _submit_schema(self.protocol.errands)}
                    },
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
        router.get(
            "/tasks/{task_id}/children",
            summary="A group's parts, in order (its `then` task last)",
            description=(
                "The parts after `after` (a `group_index`), `limit` at a time; "
                "`next_cursor` is the last one's `group_index` when the page is full, "
                "else null. 404 for a task that is not a group."
            ),
            responses={200: {"model": ChildrenPage}, **problem_responses(401, 404, 422, 431)},
        )(self.task_children)
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
        router.routes.extend(self.schedule_router().routes)
        return router


class ProblemRoute(APIRoute):
    """Answers :class:`Problem`, ``TaskNotFound`` and FastAPI's validation errors as
    problem documents, and refuses oversized header sections (431) before the handler runs."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                check_header_size(request.scope["headers"])
                return await handler(request)
            except RequestValidationError as exc:
                return _problem(validation_problem(exc.errors()))
            except HTTPException as exc:
                detail, headers = str(exc.detail), dict(exc.headers or {})
                return _problem(Problem(exc.status_code, detail, headers=headers))
            except Exception as exc:
                reply = problem_reply(exc, f"{request.method} {request.url.path}")
                if reply is None:
                    raise
                return _response(reply)

        return route


def _response(reply: Reply) -> Response:
    return Response(reply.body, reply.status, reply.headers, media_type=reply.media_type)


def _problem(problem: Problem) -> Response:
    return Response(problem.body(), problem.status, problem.headers, media_type=PROBLEM)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


__all__ = ["PROBLEM", "task_api"]

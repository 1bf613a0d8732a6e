"""``task_blueprint``: the errands HTTP API as a Flask blueprint, for WSGI applications.

The same API as ``errands.web.task_api`` (FastAPI), tasks and schedules: the
resources, the problem documents, the 404 bytes for someone else's task or schedule,
``ETag``/``304`` and the Server-Sent Event streams all come from
:class:`~errands.web.protocol.TaskProtocol` and
:class:`~errands.web.schedules.ScheduleProtocol`; this module only says who is asking
and turns their answers into Flask responses. There is no WebSocket (WSGI has none),
so task resources link none.

The protocol is async and Flask is not: every request awaits its protocol call on the
app's event loop thread (:func:`errands.flask.loop.loop_for`) and blocks its own
thread meanwhile. A Server-Sent Event stream is a streaming response whose frames are
awaited on that loop one by one; it holds its WSGI thread while open, and when the
client leaves, the server notices on the next frame it writes (a keep-alive comes every
``keepalive`` seconds), closes the response and so the stream, releasing its watch.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import AsyncIterator, Callable, Collection, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, Request, Response, request, send_file, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from ..app import Errands
from ..web.limits import DEFAULT_MAX_RUN_AT_DELAY
from ..web.problems import MEDIA_TYPE as PROBLEM
from ..web.problems import Problem
from ..web.protocol import (
    SSE,
    SSE_HEADERS,
    Blocking,
    Call,
    ChildrenQuery,
    ListQuery,
    OutputQuery,
    Reply,
    TaskProtocol,
    check_header_size,
    check_owner,
    parse_query,
    problem_reply,
    run_blocking,
    too_large,
)
from ..web.schedules import ScheduleProtocol, ScheduleQuery
from .loop import loop_for

#: ``current_owner`` and ``is_admin`` take Flask's request (they run in the request's
#: thread and may block).
OwnerFn = Callable[[Request], str | None]
AdminFn = Callable[[Request], bool]

#: The largest header section answered; larger gets 431 (as ``task_api``).
#: ``<errands-task>``'s script, served as ``<prefix>/errands-task.js``.
ELEMENT_SCRIPT = Path(__file__).resolve().parent.parent / "demo" / "static" / "errands-task.js"

_View = Callable[..., Response]

#: The answer to a request cut off by the app's closing (its loop stopped meanwhile).
_CLOSING = Problem(503, "The service is stopping; try again shortly.", headers={"Retry-After": "1"})


def task_blueprint(
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
    name: str = "errands",
) -> Blueprint:
    """The errands HTTP API for ``app`` (tasks at ``/tasks``, schedules at
    ``/schedules``) as a blueprint named ``name``. Register it with
    ``flask_app.register_blueprint(task_blueprint(app, current_owner=...),
    url_prefix="/api")``.

    - ``current_owner(request)``: the caller's owner id, or None (→ 401).
    - ``is_admin(request)``: True for administrators, who may read and change every
      task and schedule, list any owner's (``?owner=…`` or ``?owner=*``) and see
      tracebacks.
    - ``submit_rate`` / ``submit_burst``: per owner, submits per second after a burst
      (``None``: no limit); over it, 429 with ``Retry-After``.
    - ``max_body_bytes``: the largest request body (default: the app's payload limit
      plus 16 KiB); larger gets 413.
    - ``poll_interval``: seconds between the live views' change polls, and the
      ``Retry-After`` hint of unfinished tasks.
    - ``keepalive``: seconds between SSE keep-alive comments (also how soon a stream
      whose client left is noticed and closed).
    - ``delete_wait``: how long ``DELETE`` waits for a running task to stop.
    - ``allowed_priorities`` / ``max_client_priority``: the priorities callers who
      are not administrators may set (by default none: a priority puts a task ahead of
      every other user's); ``max_run_at_delay``: how far ahead their ``run_at`` may be
      (default 30 days; None: no limit). Refused: 422 naming the field.

    Besides the API, the blueprint serves ``<errands-task>``'s script as
    ``errands-task.js``.
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
        ws=False,
    )
    return FlaskTaskAPI(protocol, current_owner, is_admin).blueprint(name)


class FlaskTaskAPI:
    """The views of :func:`task_blueprint`: each says who is asking and hands the
    request to the framework-neutral :class:`~errands.web.protocol.TaskProtocol`."""

    def __init__(
        self, protocol: TaskProtocol, current_owner: OwnerFn, is_admin: AdminFn | None
    ) -> None:
        self.protocol = protocol
        #: The same API with the same options and rate limiter, run in the request's
        #: thread (no hop to the loop): every view but the event streams.
        self.now = dataclasses.replace(protocol, app=Blocking(protocol.errands))
        #: The schedules' views, also in the request's thread.
        self.schedules = ScheduleProtocol.of(self.now)
        self.current_owner = current_owner
        self.is_admin = is_admin

    def call(self) -> Call:
        """Who is asking, and where (the collections are the blueprint's ``/tasks`` and
        ``/schedules``)."""
        owner = check_owner(self.current_owner(request))
        admin = bool(self.is_admin(request)) if self.is_admin is not None else False
        tasks, schedules = url_for(".tasks"), url_for(".schedules")
        return Call(owner, admin, tasks, _headers(), _query(), schedules)

    def run(self, work: Coroutine[Any, Any, Reply]) -> Response:
        """A call of ``self.now``, run in this thread; its reply as a response."""
        return _response(run_blocking(work))

    def stream(self, frames: AsyncIterator[bytes]) -> Response:
        """A ``text/event-stream`` response whose frames come from ``frames``."""
        body = loop_for(self.protocol.errands).iterate(frames)
        return Response(body, 200, SSE_HEADERS, mimetype=SSE, direct_passthrough=True)

    # -- the views -----------------------------------------------------------------------
    def submit(self) -> Response:
        call = self.call()
        body = _read_body(self.protocol.body_limit)
        return self.run(self.now.submit(call, body))

    def list_tasks(self) -> Response:
        query = parse_query(ListQuery, _query())
        return self.run(self.now.list(self.call(), query))

    def get_task(self, task_id: str) -> Response:
        return self.run(self.now.get(self.call(), task_id))

    def task_output(self, task_id: str) -> Response:
        query = parse_query(OutputQuery, _query())
        return self.run(self.now.output(self.call(), task_id, query))

    def task_children(self, task_id: str) -> Response:
        query = parse_query(ChildrenQuery, _query())
        return self.run(self.now.children(self.call(), task_id, query))

    def cancel_task(self, task_id: str) -> Response:
        return self.run(self.now.cancel(self.call(), task_id))

    def delete_task(self, task_id: str) -> Response:
        return self.run(self.now.delete(self.call(), task_id))

    def task_events(self, task_id: str) -> Response:
        call = self.call()
        frames = loop_for(self.protocol.errands).run(self.protocol.events_stream(call, task_id))
        if frames is None:
            return _response(Reply(204, b"", {}, None))
        return self.stream(frames)

    def owner_events(self) -> Response:
        return self.stream(self.protocol.owner_stream(self.call()))

    def create_schedule(self) -> Response:
        call = self.call()
        body = _read_body(self.protocol.body_limit)
        return self.run(self.schedules.create(call, body))

    def list_schedules(self) -> Response:
        query = parse_query(ScheduleQuery, _query())
        return self.run(self.schedules.list(self.call(), query))

    def get_schedule(self, schedule_id: str) -> Response:
        return self.run(self.schedules.get(self.call(), schedule_id))

    def change_schedule(self, schedule_id: str) -> Response:
        call = self.call()
        body = _read_body(self.protocol.body_limit)
        return self.run(self.schedules.change(call, schedule_id, body))

    def delete_schedule(self, schedule_id: str) -> Response:
        return self.run(self.schedules.delete(self.call(), schedule_id))

    # -- the blueprint -------------------------------------------------------------------
    def blueprint(self, name: str) -> Blueprint:
        bp = Blueprint(name, __name__)
        routes: list[tuple[str, str, _View, list[str]]] = [
            ("/tasks", "tasks", self.list_tasks, ["GET"]),
            ("/tasks", "submit", self.submit, ["POST"]),
            ("/tasks/<task_id>", "task", self.get_task, ["GET"]),
            ("/tasks/<task_id>", "delete", self.delete_task, ["DELETE"]),
            ("/tasks/<task_id>/output", "output", self.task_output, ["GET"]),
            ("/tasks/<task_id>/children", "children", self.task_children, ["GET"]),
            ("/tasks/<task_id>/cancel", "cancel", self.cancel_task, ["POST"]),
            ("/tasks/<task_id>/events", "task_events", self.task_events, ["GET"]),
            ("/events", "owner_events", self.owner_events, ["GET"]),
            ("/schedules", "schedules", self.list_schedules, ["GET"]),
            ("/schedules", "create_schedule", self.create_schedule, ["POST"]),
            ("/schedules/<schedule_id>", "schedule", self.get_schedule, ["GET"]),
            ("/schedules/<schedule_id>", "change_schedule", self.change_schedule, ["PATCH"]),
            ("/schedules/<schedule_id>", "delete_schedule", self.delete_schedule, ["DELETE"]),
        ]
        for rule, endpoint, view, methods in routes:
            bp.add_url_rule(rule, endpoint, _answering(view), methods=methods)
        bp.add_url_rule("/errands-task.js", "element_script", _element_script)
        return bp


def _answering(view: _View) -> _View:
    """``view``, refusing oversized header sections (431) before it runs, and answering
    the problems it raises as problem documents."""

    def answer(**params: Any) -> Response:
        try:
            check_header_size(request.headers.items())
            return view(**params)
        except concurrent.futures.CancelledError:
            return _response(Reply(503, _CLOSING.body(), dict(_CLOSING.headers), PROBLEM))
        except Exception as exc:
            reply = problem_reply(exc, f"{request.method} {request.path}")
            if reply is None:
                raise
            return _response(reply)

    return answer


def _element_script() -> Response:
    return send_file(ELEMENT_SCRIPT, mimetype="text/javascript")


def _headers() -> dict[str, str]:
    """The request's headers by lower-case name (the first of repeated ones)."""
    headers: dict[str, str] = {}
    for key, value in request.headers.items():
        headers.setdefault(key.lower(), value)
    return headers


def _query() -> dict[str, str]:
    """The query string's parameters (the last of repeated ones, as FastAPI reads them)."""
    return {key: values[-1] for key, values in request.args.lists()}


def _read_body(limit: int) -> bytes:
    """The request's body; 413 once it is longer than ``limit`` (or than the host's
    ``MAX_CONTENT_LENGTH``)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large(limit)
    body = bytearray()
    try:
        while chunk := request.stream.read(min(65536, limit + 1 - len(body))):
            body += chunk
            if len(body) > limit:
                raise too_large(limit)
    except RequestEntityTooLarge:
        raise too_large(request.max_content_length or limit) from None
    return bytes(body)


def _response(reply: Reply) -> Response:
    response = Response(reply.body, reply.status, reply.headers)
    if reply.media_type is None:
        del response.headers["Content-Type"]
    else:
        response.headers["Content-Type"] = reply.media_type
    return response


__all__ = ["AdminFn", "FlaskTaskAPI", "OwnerFn", "task_blueprint"]

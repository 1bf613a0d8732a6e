"""errands' HTTP API as Django views: the adapter of ``errands.web.protocol`` (tasks)
and ``errands.web.schedules`` (schedules; mounted apart, see ``errands.django.urls``).

The views are async. Under ASGI (uvicorn, daphne, granian) every resource works, the
Server-Sent Events included; under WSGI, Django runs them in a loop of their own per
request, and the event streams answer ``501``: clients poll ``GET tasks/<id>`` with
``If-None-Match`` instead (``<errands-task>`` falls back to polling by itself).

Who is asking: the request's signed-in user (``str(user.pk)``), whatever
authentication the project uses (sessions, or its own middleware setting
``request.user``); anonymous requests get 401. Superusers are the API's administrators
(every owner's tasks and schedules; tracebacks). Requests carrying the session cookie
must carry the CSRF token on writes (``X-CSRFToken``, or ``X-CSRF-Token`` as
``<errands-task>`` sends it); a refusal is a problem document like every other error.

Options: ``settings.ERRANDS["API"]`` takes ``task_api``'s ``submit_rate``,
``submit_burst``, ``max_body_bytes``, ``poll_interval``, ``keepalive`` and
``delete_wait``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings as django_settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import NoReverseMatch, get_script_prefix, get_urlconf, reverse
from django.views.decorators.csrf import csrf_exempt

from ..web.problems import Problem
from ..web.protocol import (
    SSE,
    SSE_HEADERS,
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
    too_large,
)
from ..web.schedules import ScheduleProtocol, ScheduleQuery
from .conf import get_app, settings

#: The URL namespace of the schedules' URLs (``errands.django.urls.schedule_urls``).
SCHEDULES_APP = "errands_schedules"

_protocol: TaskProtocol | None = None
_schedules: ScheduleProtocol | None = None
_lock = threading.Lock()
_API_OPTIONS = {
    "submit_rate",
    "submit_burst",
    "max_body_bytes",
    "poll_interval",
    "keepalive",
    "delete_wait",
}


def protocol() -> TaskProtocol:
    """The project's API (made on first use, from ``settings.ERRANDS["API"]``)."""
    global _protocol
    if _protocol is None:
        with _lock:
            if _protocol is None:
                options = dict(settings().get("API") or {})
                unknown = set(options) - _API_OPTIONS
                if unknown:
                    raise ValueError(f"settings.ERRANDS['API']: unknown keys {sorted(unknown)}")
                _protocol = TaskProtocol.configured(get_app(), ws=False, **options)
    return _protocol


def schedule_protocol() -> ScheduleProtocol:
    """The schedules' handlers, beside :func:`protocol`."""
    global _schedules
    if _schedules is None:
        _schedules = ScheduleProtocol.of(protocol())
    return _schedules


def _response(reply: Reply) -> HttpResponse:
    response = HttpResponse(reply.body, status=reply.status, content_type=reply.media_type)
    for name, value in reply.headers.items():
        response[name] = value
    return response


def _csrf_refused(request: HttpRequest) -> bool:
    """A write carrying the session cookie without a valid CSRF token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return False
    if django_settings.SESSION_COOKIE_NAME not in request.COOKIES:
        return False  # not authenticated by the cookie: nothing to forge
    header = request.META.get("HTTP_X_CSRF_TOKEN")
    if header and "HTTP_X_CSRFTOKEN" not in request.META:
        request.META["HTTP_X_CSRFTOKEN"] = header
    check = CsrfViewMiddleware(lambda r: HttpResponse())
    return check.process_view(request, None, (), {}) is not None


async def _call(request: HttpRequest) -> Call:
    user = await request.auser()
    owner = check_owner(str(user.pk) if user.is_authenticated else None)
    if _csrf_refused(request):
        raise Problem(403, "The CSRF token is missing or wrong.")
    tasks, schedules = _collections(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    query = {k: request.GET[k] for k in request.GET}
    return Call(owner, bool(user.is_superuser), tasks, headers, query, schedules)


def _collections(request: HttpRequest) -> tuple[str, str | None]:
    """The URL paths of the task and schedule collections: the one the request came to
    by its own namespace, the other by its application's (``""`` for tasks, None for
    schedules, where the project does not mount it)."""
    match = request.resolver_match
    namespace = f"{match.namespace}:" if match is not None and match.namespace else ""
    where = (get_urlconf(), get_script_prefix())
    if match is not None and match.app_name == SCHEDULES_APP:
        tasks = _reversed("errands:tasks", *where) or ""
        return tasks, reverse(f"{namespace}schedules").rstrip("/")
    return reverse(f"{namespace}tasks").rstrip("/"), _reversed(f"{SCHEDULES_APP}:schedules", *where)


@functools.lru_cache(maxsize=64)
def _reversed(name: str, urlconf: Any, prefix: str) -> str | None:
    """The path of ``name`` in the URLconf ``urlconf`` under the script prefix
    ``prefix`` (the request's: they are the cache's key), or None where it is not
    mounted."""
    try:
        url: str = reverse(name, urlconf=urlconf)
    except NoReverseMatch:
        return None
    return url.rstrip("/")


Handler = Callable[..., Awaitable[HttpResponse]]


def _view(methods: dict[str, Handler]) -> Any:
    """One URL's async view: dispatch on the method, answer errors as problems."""

    async def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        handler = methods.get(request.method or "")
        try:
            check_header_size(request.headers.items())
            if handler is None:
                allowed = ", ".join(methods)
                raise Problem(405, "Method not allowed.", headers={"Allow": allowed})
            return await handler(request, **kwargs)
        except Exception as exc:
            reply = problem_reply(exc, f"{request.method} {request.path}")
            if reply is None:
                raise
            return _response(reply)

    return csrf_exempt(view)  # checked in _call, answered as a problem


def _body(request: HttpRequest, limit: int) -> bytes:
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    body: bytes = request.read(limit + 1)
    if len(body) > limit:
        raise too_large(limit)
    return body


async def _submit(request: HttpRequest) -> HttpResponse:
    api = protocol()
    call = await _call(request)
    return _response(await api.submit(call, _body(request, api.body_limit)))


async def _list(request: HttpRequest) -> HttpResponse:
    call = await _call(request)
    return _response(await protocol().list(call, parse_query(ListQuery, call.query)))


async def _get(request: HttpRequest, task_id: str) -> HttpResponse:
    return _response(await protocol().get(await _call(request), task_id))


async def _delete(request: HttpRequest, task_id: str) -> HttpResponse:
    return _response(await protocol().delete(await _call(request), task_id))


async def _output(request: HttpRequest, task_id: str) -> HttpResponse:
    call = await _call(request)
    return _response(await protocol().output(call, task_id, parse_query(OutputQuery, call.query)))


async def _children(request: HttpRequest, task_id: str) -> HttpResponse:
    call = await _call(request)
    query = parse_query(ChildrenQuery, call.query)
    return _response(await protocol().children(call, task_id, query))


async def _cancel(request: HttpRequest, task_id: str) -> HttpResponse:
    return _response(await protocol().cancel(await _call(request), task_id))


def _streams(request: HttpRequest) -> None:
    if not isinstance(request, ASGIRequest):
        raise Problem(
            501,
            "Live events need an ASGI server; poll the task with If-None-Match instead.",
        )


def _stream(frames: Any) -> StreamingHttpResponse:
    response = StreamingHttpResponse(frames, content_type=SSE)
    for name, value in SSE_HEADERS.items():
        response[name] = value
    return response


async def _task_events(request: HttpRequest, task_id: str) -> HttpResponse:
    call = await _call(request)
    if not isinstance(request, ASGIRequest):
        await protocol().load(call, task_id)  # someone else's task: 404, as everywhere
    _streams(request)
    frames = await protocol().events_stream(call, task_id)
    if frames is None:
        return HttpResponse(status=204)
    return _stream(frames)


async def _owner_events(request: HttpRequest) -> HttpResponse:
    call = await _call(request)
    _streams(request)
    return _stream(protocol().owner_stream(call))


async def _create_schedule(request: HttpRequest) -> HttpResponse:
    api = schedule_protocol()
    call = await _call(request)
    return _response(await api.create(call, _body(request, api.body_limit)))


async def _list_schedules(request: HttpRequest) -> HttpResponse:
    call = await _call(request)
    query = parse_query(ScheduleQuery, call.query)
    return _response(await schedule_protocol().list(call, query))


async def _get_schedule(request: HttpRequest, schedule_id: str) -> HttpResponse:
    return _response(await schedule_protocol().get(await _call(request), schedule_id))


async def _change_schedule(request: HttpRequest, schedule_id: str) -> HttpResponse:
    api = schedule_protocol()
    call = await _call(request)
    return _response(await api.change(call, schedule_id, _body(request, api.body_limit)))


async def _delete_schedule(request: HttpRequest, schedule_id: str) -> HttpResponse:
    return _response(await schedule_protocol().delete(await _call(request), schedule_id))


tasks = _view({"GET": _list, "POST": _submit})
task = _view({"GET": _get, "DELETE": _delete})
output = _view({"GET": _output})
children = _view({"GET": _children})
cancel = _view({"POST": _cancel})
task_events = _view({"GET": _task_events})
owner_events = _view({"GET": _owner_events})
schedules = _view({"GET": _list_schedules, "POST": _create_schedule})
schedule = _view({"GET": _get_schedule, "PATCH": _change_schedule, "DELETE": _delete_schedule})

__all__ = [
    "cancel",
    "children",
    "output",
    "owner_events",
    "schedule",
    "schedules",
    "task",
    "task_events",
    "tasks",
]

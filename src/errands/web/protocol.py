"""The HTTP API itself, free of any web framework: what each request means and what it
answers, byte for byte.

``task_api`` (FastAPI), ``errands.django.urls`` and ``errands.flask.task_blueprint``
are adapters: each says who is asking (a :class:`Call`: the owner, whether an
administrator, the request's headers and query, the URLs of the task and schedule
collections), awaits one :class:`TaskProtocol` method (or one of
:class:`~errands.web.schedules.ScheduleProtocol`, for schedules) and turns its
:class:`Reply` (or the :class:`~errands.web.problems.Problem` it raises: see
:func:`problem_reply`) into the framework's response. So the JSON, the problem
documents, the 404 bytes for someone else's task, the ``ETag``s and the live events
are the same in every framework.

Every read and change goes through the :class:`~errands.Errands` facade with the
caller's owner, so ownership is enforced in the store's queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Collection, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ..app import ANY_OWNER, Errands
from ..errors import (
    DatabaseUnavailable,
    IdempotencyConflict,
    InvalidPayload,
    InvalidTransition,
    PayloadTooLarge,
    ScheduleNotFound,
    StorageFull,
    TaskNotFound,
    UnknownTask,
    WaitTimeout,
)
from ..ids import is_task_id
from ..records import Status, TaskRecord
from ..store.database import log_failure
from .groups import MAX_PARTS, ChildrenQuery, group_refusals, refused_part, then_without_payloads
from .hub import ChangeHub, hub_for
from .limits import DEFAULT_MAX_RUN_AT_DELAY, ClientLimits
from .problems import MEDIA_TYPE as PROBLEM
from .problems import NOT_FOUND_DETAIL, SCHEDULE_NOT_FOUND_DETAIL, Problem, validation_problem
from .ratelimit import SubmitLimiter
from .resources import dumps, resource
from .streams import MAX_INT, Cursor, Event, task_events

T = TypeVar("T")
log = logging.getLogger("errands.web")
JSON = "application/json"
_JSON_TYPE = re.compile(r"^application/([\w.+-]+\+)?json\s*(;.*)?$", re.IGNORECASE)
PRIVATE = {"Cache-Control": "private, no-cache"}
#: The headers of a ``text/event-stream`` answer.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE = "text/event-stream"


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer: status, headers and body (``media_type`` is its Content-Type)."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str | None = JSON


@dataclass(frozen=True, slots=True)
class Call:
    """One request, as the API needs it.

    ``collection`` is the URL path of the task collection (``/api/tasks``): a task's
    links are ``{collection}/{id}``, ``{collection}/{id}/events`` and so on.
    ``schedules`` is the URL path of the schedule collection (``/api/schedules``), or
    None where the adapter serves none. ``headers`` is read with lower-case names.
    """

    owner: str
    admin: bool
    collection: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    schedules: str | None = None

    @property
    def who(self) -> Any:
        """The owner to act as: the caller, or every owner for an administrator."""
        return ANY_OWNER if self.admin else self.owner

    def owner_refusal(self, owner: str | None) -> dict[str, Any] | None:
        """Why a listing's ``owner`` parameter is refused for this caller (a
        pydantic-style error entry), or None: only administrators name another owner,
        and none names the empty one."""
        if owner is not None and not self.admin and owner != self.owner:
            return {"loc": ["owner"], "msg": "only administrators list other owners"}
        if owner == "":
            return {"loc": ["owner"], "msg": "an owner's id, or * for all"}
        return None

    def listed_owner(self, owner: str | None) -> Any:
        """Whose records a listing shows: the caller's, or for an administrator the
        ``owner`` parameter's (``*``: every owner)."""
        if self.admin and owner is not None:
            return ANY_OWNER if owner == "*" else owner
        return self.owner


def check_owner(owner: object) -> str:
    """The caller's owner id from the host's ``current_owner``; 401 without one."""
    if not owner:
        raise Problem(401, "Sign in to use this API.")
    if not isinstance(owner, str):
        raise TypeError("current_owner must return a string or None")
    if len(owner) > 255 or "\x00" in owner:  # the store refuses these: say so now
        log.error("errands: current_owner returned an owner id errands cannot store")
        raise Problem(401, "Sign in to use this API.")
    return owner


_NOT_FOUND_BODY = Problem(404, NOT_FOUND_DETAIL).body()
_NO_SCHEDULE_BODY = Problem(404, SCHEDULE_NOT_FOUND_DETAIL).body()
_UNAVAILABLE = Problem(
    503, "The task database is unavailable; try again shortly.", headers={"Retry-After": "1"}
)
_FULL = Problem(507, "The task database is out of space; nothing was written.")


def problem_reply(exc: BaseException, what: str = "") -> Reply | None:
    """The answer to an error a handler raised, or None for one that is not the API's
    to answer (a bug: let the framework report it). ``what`` names the request in the
    log line of a database failure."""
    if isinstance(exc, Problem):
        return Reply(exc.status, exc.body(), dict(exc.headers), PROBLEM)
    if isinstance(exc, TaskNotFound):
        return Reply(404, _NOT_FOUND_BODY, {}, PROBLEM)
    if isinstance(exc, ScheduleNotFound):
        return Reply(404, _NO_SCHEDULE_BODY, {}, PROBLEM)
    if isinstance(exc, DatabaseUnavailable | StorageFull):
        # One line in the log; the answer never names the database, its host or files.
        log_failure(log, exc, "errands: %s failed", what or "a request")
        answer = _FULL if isinstance(exc, StorageFull) else _UNAVAILABLE
        return Reply(answer.status, answer.body(), dict(answer.headers), PROBLEM)
    return None


# -- parsing -----------------------------------------------------------------------------
class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    payload: Any = None
    payloads: list[Any] | None = Field(None, min_length=1, max_length=MAX_PARTS)
    then: str | None = Field(None, min_length=1, max_length=255)
    priority: int | None = Field(None, ge=-1_000_000, le=1_000_000)
    run_at: AwareDatetime | None = None


ENVELOPE = TypeAdapter(_Envelope)


class ListQuery(BaseModel):
    """The query of ``GET /tasks``."""

    model_config = ConfigDict(extra="ignore")

    status: Status | None = None
    name: str | None = None
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = None
    owner: str | None = None


class OutputQuery(BaseModel):
    """The query of ``GET /tasks/{id}/output``."""

    model_config = ConfigDict(extra="ignore")

    after: int = Field(0, ge=0, le=MAX_INT)
    limit: int = Field(1000, ge=1, le=1000)


def parse_query(model: type[BaseModel], query: Mapping[str, str]) -> Any:
    """``query`` as ``model`` (``ListQuery``, ``OutputQuery``); 422 naming each field."""
    try:
        return model.model_validate(dict(query))
    except ValidationError as exc:
        errors = [{**e, "loc": ["query", *e["loc"]]} for e in exc.errors(include_url=False)]
        raise validation_problem(errors) from None


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


def json_body(call: Call, body: bytes, limit: int, what: str) -> Any:
    """The JSON document a request sends (``what``: "the task", in the 415 message);
    415 unless it says it is JSON, 413 over ``limit`` bytes, 422 if it is not JSON."""
    if not _JSON_TYPE.match(call.headers.get("content-type", "")):
        raise Problem(415, f"Send {what} as JSON (Content-Type: application/json).")
    if len(body) > limit:
        raise too_large(limit)
    try:
        return json.loads(body, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise _bad_body("nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise _bad_body("not valid JSON") from None


#: The largest header section the API reads (its names, values and line ends).
MAX_HEADER_BYTES = 16 * 1024


def check_header_size(headers: Iterable[tuple[Any, Any]]) -> None:
    """431 for a header section over :data:`MAX_HEADER_BYTES` (pairs of name and value,
    as text or bytes); before anything else runs."""
    if sum(len(k) + len(v) + 4 for k, v in headers) > MAX_HEADER_BYTES:
        raise Problem(431, f"The request's headers exceed {MAX_HEADER_BYTES} bytes.")


def too_large(limit: int) -> Problem:
    return Problem(413, f"The body is larger than {limit} bytes.")


def etag(version: int) -> str:
    return f'"{version}"'


def _matches(header: str, tag: str) -> bool:
    return any(t.strip().removeprefix("W/") in (tag, "*") for t in header.split(","))


def _retry_after(record: TaskRecord, poll: float) -> str:
    wait = poll
    if record.status is Status.QUEUED:
        wait = max(poll, (record.run_at - datetime.now(UTC)).total_seconds())
    return str(max(1, min(60, math.ceil(wait))))


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, dumps(doc), headers or {}, JSON)


# -- without an event loop ----------------------------------------------------------------
class Blocking:
    """The facade's methods the protocol awaits, done by ``app.sync`` in the calling
    thread: awaiting them never suspends. A :class:`TaskProtocol` on it runs a
    request's handler to its end in one step (:func:`run_blocking`), as a WSGI view
    does, with no event loop and no thread hop. (The live event streams need the loop:
    they wait for changes.)"""

    def __init__(self, app: Errands) -> None:
        self.app = app
        self.runtime = app.runtime
        self.max_payload_bytes = app.max_payload_bytes
        self.sync = app.sync

    async def submit(self, name: str, payload: Any, **options: Any) -> TaskRecord:
        return self.sync.submit(name, payload, **options)

    async def submit_group(self, name: str, payloads: Any, **options: Any) -> TaskRecord:
        return self.sync.submit_group(name, payloads, **options)

    async def parts(self, group_id: str, **args: Any) -> list[TaskRecord]:
        return self.sync.parts(group_id, **args)

    async def get(self, task_id: str, *, owner: str) -> TaskRecord:
        return self.sync.get(task_id, owner=owner)

    async def get_version(self, task_id: str, *, owner: str) -> int:
        return self.sync.get_version(task_id, owner=owner)

    async def get_many(self, task_ids: Any, *, owner: str) -> list[TaskRecord]:
        return self.sync.get_many(task_ids, owner=owner)

    async def list(self, **args: Any) -> Any:
        return self.sync.list(**args)

    async def output_page(self, task_id: str, **args: Any) -> Any:
        return self.sync.output_page(task_id, **args)

    async def outputs(self, task_id: str, **args: Any) -> Any:
        return self.sync.outputs(task_id, **args)

    async def cancel(self, task_id: str, *, owner: str) -> TaskRecord:
        return self.sync.cancel(task_id, owner=owner)

    async def delete(self, task_id: str, *, owner: str) -> None:
        self.sync.delete(task_id, owner=owner)

    async def wait(self, task_id: str, **args: Any) -> TaskRecord:
        return self.sync.wait(task_id, **args)


def run_blocking(work: Coroutine[Any, Any, T]) -> T:
    """The result of a handler of a :class:`TaskProtocol` on :class:`Blocking`, run to
    its end in this thread."""
    try:
        work.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    work.close()
    raise RuntimeError("a blocking protocol call waited on an event loop")


# -- the handlers ------------------------------------------------------------------------
@dataclass(eq=False)
class TaskProtocol:
    """The API's handlers, one method per resource and verb.

    - ``limiter``: per owner submit rate (None: no limit); over it, 429.
    - ``body_limit``: the largest request body; adapters refuse larger ones with
      :func:`too_large` while reading.
    - ``poll_interval``: seconds between the live views' change polls, and the
      ``Retry-After`` hint of unfinished tasks.
    - ``keepalive``: seconds between SSE keep-alive comments.
    - ``delete_wait``: how long ``DELETE`` waits for a running task to stop.
    - ``ws``: whether the task resource links a WebSocket (``/ws``).
    - ``limits``: the priority and ``run_at`` a caller who is not an administrator
      may ask for (``web/limits.py``).
    """

    app: Errands | Blocking
    limiter: SubmitLimiter | None = None
    body_limit: int = 0
    poll_interval: float = 1.0
    keepalive: float = 15.0
    delete_wait: float = 10.0
    ws: bool = True
    limits: ClientLimits = field(default_factory=ClientLimits)
    _hub: ChangeHub | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.body_limit:
            self.body_limit = self.app.max_payload_bytes + 16384

    @classmethod
    def configured(
        cls,
        app: Errands,
        *,
        submit_rate: float | None = 2.0,
        submit_burst: int = 30,
        max_body_bytes: int | None = None,
        poll_interval: float = 1.0,
        keepalive: float = 15.0,
        delete_wait: float = 10.0,
        ws: bool = True,
        allowed_priorities: Collection[int] | None = None,
        max_client_priority: int | None = None,
        max_run_at_delay: timedelta | float | None = DEFAULT_MAX_RUN_AT_DELAY,
    ) -> TaskProtocol:
        """The API from the options every adapter takes (``task_api``'s): a per-owner
        submit rate (``None``: no limit), the largest body (default: the payload limit
        plus 16 KiB), the timings, and what callers who are not administrators may ask
        (``web/limits.py``)."""
        return cls(
            app,
            limiter=SubmitLimiter(submit_rate, submit_burst) if submit_rate else None,
            body_limit=max_body_bytes or 0,
            poll_interval=poll_interval,
            keepalive=keepalive,
            delete_wait=delete_wait,
            ws=ws,
            limits=ClientLimits.of(allowed_priorities, max_client_priority, max_run_at_delay),
        )

    @property
    def errands(self) -> Errands:
        """The errands app (under :class:`Blocking`, too)."""
        return self.app.app if isinstance(self.app, Blocking) else self.app

    @property
    def hub(self) -> ChangeHub:
        """The app's live-change hub (made on first use, on the running loop)."""
        if self._hub is None:
            self._hub = hub_for(self.app.runtime)
            self._hub.poll_interval = self.poll_interval
        return self._hub

    def resource(self, call: Call, record: TaskRecord) -> dict[str, Any]:
        now = datetime.now(UTC)
        return resource(record, call.collection, now, call.admin, self.ws, call.schedules)

    async def load(self, call: Call, task_id: str) -> TaskRecord:
        try:
            return await self.app.get(task_id, owner=call.who)
        except TaskNotFound:
            raise Problem(404, NOT_FOUND_DETAIL) from None

    # -- submit ----------------------------------------------------------------------
    async def submit(self, call: Call, body: bytes) -> Reply:
        """``POST /tasks``: a task, or with ``payloads`` a group (answered with the
        group's own task); ``body`` is the request's body (at most ``body_limit``)."""
        doc = json_body(call, body, self.body_limit, "the task")
        try:
            envelope = ENVELOPE.validate_python(doc)
        except ValidationError as exc:
            raise validation_problem(exc.errors(include_url=False)) from None
        if envelope.run_at is not None and not _storable(envelope.run_at):
            raise validation_problem([{"loc": ["run_at"], "msg": "must be in years 1–9999 UTC"}])
        if not call.admin:
            refused = self.limits.refusals(envelope.priority, envelope.run_at, time.time())
            if refused:
                raise validation_problem(refused)
        key = call.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 255:
            raise validation_problem(
                [{"loc": ["Idempotency-Key"], "msg": "must be 1 to 255 characters"}]
            )
        group = envelope.payloads is not None
        if group:
            errors = group_refusals(
                payload_given="payload" in envelope.model_fields_set,
                run_at=envelope.run_at is not None,
                key=key,
            )
            if errors:
                raise validation_problem(errors)
        elif envelope.then is not None:
            raise then_without_payloads()
        wait = self.limiter.take(call.owner) if self.limiter is not None else 0.0
        if wait:
            raise Problem(
                429,
                "Too many tasks submitted; try again later.",
                headers={"Retry-After": SubmitLimiter.retry_after(wait)},
            )
        try:
            record = await self._submitted(call, envelope, key)
        except IdempotencyConflict as exc:
            raise Problem(409, exc.message) from None
        except UnknownTask as exc:
            field = "then" if group and exc.name != envelope.name else "name"
            raise Problem(
                422,
                exc.message,
                errors=[{"field": field, "message": "no task is registered under this name"}],
            ) from None
        except PayloadTooLarge as exc:
            raise Problem(413, exc.message) from None
        except InvalidPayload as exc:
            if envelope.payloads is not None:
                registry = self.errands.registry
                raise refused_part(registry, envelope.name, envelope.payloads, exc) from None
            raise validation_problem(exc.errors or [{"msg": exc.message}], ["payload"]) from None
        doc = self.resource(call, record)
        headers = {"Location": doc["links"]["self"], "ETag": etag(record.version), **PRIVATE}
        return _json(doc, 202, headers)

    async def _submitted(self, call: Call, envelope: _Envelope, key: str | None) -> TaskRecord:
        """The task ``envelope`` asks for, submitted: one task, or a group."""
        if envelope.payloads is not None:
            return await self.app.submit_group(
                envelope.name,
                envelope.payloads,
                owner=call.owner,
                then=envelope.then,
                priority=envelope.priority,
            )
        return await self.app.submit(
            envelope.name,
            envelope.payload,
            owner=call.owner,
            priority=envelope.priority,
            run_at=envelope.run_at,
            idempotency_key=key,
        )

    # -- reading -------------------------------------------------------------------
    async def get(self, call: Call, task_id: str) -> Reply:
        """``GET /tasks/{id}``, with ``If-None-Match`` → 304."""
        conditional = call.headers.get("if-none-match")
        if conditional:
            tag = etag(await self.app.get_version(task_id, owner=call.who))
            if _matches(conditional, tag):
                return Reply(304, b"", {"ETag": tag, **PRIVATE}, None)
        record = await self.load(call, task_id)
        headers = {"ETag": etag(record.version), **PRIVATE}
        if not record.done:
            headers["Retry-After"] = _retry_after(record, self.poll_interval)
        return _json(self.resource(call, record), 200, headers)

    async def list(self, call: Call, query: ListQuery) -> Reply:
        """``GET /tasks``: the caller's tasks, newest first (``parse_query(ListQuery,
        …)`` gives ``query``)."""
        refusal = call.owner_refusal(query.owner)
        errors = [refusal] if refusal else []
        for param, value in (("name", query.name), ("owner", query.owner)):
            if value is not None and "\x00" in value:
                errors.append({"loc": [param], "msg": "must not contain NUL characters"})
        if query.cursor and not is_task_id(query.cursor):
            errors.append({"loc": ["cursor"], "msg": "not a cursor of this list"})
        if errors:
            raise validation_problem(errors)
        page = await self.app.list(
            owner=call.listed_owner(query.owner),
            status=query.status,
            name=query.name,
            limit=query.limit,
            cursor=query.cursor or None,
        )
        items = [self.resource(call, r) for r in page.items]
        return _json({"items": items, "next_cursor": page.next_cursor}, 200, PRIVATE)

    async def output(self, call: Call, task_id: str, query: OutputQuery) -> Reply:
        """``GET /tasks/{id}/output``: the items after ``query.after``."""
        after = query.after
        page = await self.app.output_page(task_id, owner=call.who, after=after, limit=query.limit)
        doc = {
            "items": [{"seq": s, "data": d} for s, d in page.items],
            "last_seq": page.items[-1][0] if page.items else max(after, page.floor),
            "output_floor": page.floor,
        }
        return _json(doc, 200, PRIVATE)

    async def children(self, call: Call, task_id: str, query: ChildrenQuery) -> Reply:
        """``GET /tasks/{id}/children``: a group's parts in order (its ``then`` task
        last) after the part ``query.after`` (a ``group_index``); ``next_cursor`` is
        the last one's ``group_index`` when the page is full. A task that is not a group
        is missing here."""
        parts = await self.app.parts(task_id, owner=call.who, after=query.after, limit=query.limit)
        items = [self.resource(call, r) for r in parts]
        full = len(parts) == query.limit
        doc = {"items": items, "next_cursor": parts[-1].group_index if full else None}
        return _json(doc, 200, PRIVATE)

    # -- changing ------------------------------------------------------------------
    async def cancel(self, call: Call, task_id: str) -> Reply:
        """``POST /tasks/{id}/cancel``: 200 when done, 202 while the task stops."""
        record = await self.app.cancel(task_id, owner=call.who)
        doc = self.resource(call, record)
        return _json(doc, 200 if record.done else 202, {"ETag": etag(record.version)})

    async def delete(self, call: Call, task_id: str) -> Reply:
        """``DELETE /tasks/{id}``: cancel, wait for the task to stop, delete."""
        try:
            record = await self.app.cancel(task_id, owner=call.who)
            if not record.done:
                await self.app.wait(task_id, owner=call.who, timeout=self.delete_wait, poll=0.25)
            await self.app.delete(task_id, owner=call.who)
        except (WaitTimeout, InvalidTransition):
            raise Problem(
                409,
                "The task is still stopping; try again shortly.",
                headers={"Retry-After": "1"},
            ) from None
        return Reply(204, b"", {}, None)

    # -- live events -----------------------------------------------------------------
    async def task_events(
        self, call: Call, task_id: str, resume: str | None
    ) -> AsyncIterator[Event | None] | None:
        """The task's events after the ``resume`` cursor (``Last-Event-ID``); None
        when the caller already has everything of the finished task. Close the
        iterator (``aclose``) when the client leaves."""
        cursor = Cursor.parse(resume)
        record = await self.load(call, task_id)
        if record.done and cursor.version >= record.version:
            rest = await self.app.outputs(record.id, owner=call.who, after=cursor.seq, limit=1)
            if not rest:
                return None
        return task_events(
            self.hub,
            record,
            collection=call.collection,
            admin=call.admin,
            cursor=cursor,
            keepalive=self.keepalive,
            ws=self.ws,
            schedules=call.schedules,
        )

    async def events_stream(self, call: Call, task_id: str) -> AsyncIterator[bytes] | None:
        """``GET /tasks/{id}/events`` as Server-Sent Event frames (None: answer 204).
        The resume cursor is ``Last-Event-ID``, else ``?last_event_id=``."""
        resume = call.headers.get("last-event-id") or call.query.get("last_event_id")
        events = await self.task_events(call, task_id, resume)
        if events is None:
            return None
        return _frames(events)

    def owner_stream(self, call: Call) -> AsyncIterator[bytes]:
        """``GET /events``: one ``task`` event (the resource) per change to any of the
        caller's tasks, as Server-Sent Event frames."""
        return self._owner_frames(call)

    async def _owner_frames(self, call: Call) -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        async with self.hub.owner(call.owner) as watch:
            while True:
                try:
                    async with asyncio.timeout(self.keepalive):
                        await watch.changed.wait()
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                records = await self.app.get_many(watch.take(), owner=call.owner)
                for r in sorted(records, key=lambda r: r.id):
                    if watch.mark_sent(r.id, r.version):
                        data = dumps(self.resource(call, r)).decode()
                        yield f"event: task\ndata: {data}\n\n".encode()


async def _frames(events: AsyncIterator[Event | None]) -> AsyncIterator[bytes]:
    yield b"retry: 2000\n\n"
    async with contextlib.aclosing(events):  # type: ignore[type-var]  # closed with the stream
        async for event in events:
            yield b": keep-alive\n\n" if event is None else event.sse()


__all__ = [
    "MAX_HEADER_BYTES",
    "PRIVATE",
    "SSE",
    "SSE_HEADERS",
    "Call",
    "ChildrenQuery",
    "ListQuery",
    "OutputQuery",
    "Reply",
    "TaskProtocol",
    "check_header_size",
    "check_owner",
    "json_body",
    "parse_query",
    "problem_reply",
    "too_large",
]

"""The dashboard's ASGI app: the administrator check in front of everything, then its
pages (the overview, one task), its two actions (retry, cancel), the JSON its script
polls and its two static files."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketClose

from ...app import ANY_OWNER, Errands
from ...errors import DatabaseUnavailable, ErrandsError, StorageFull, TaskNotFound
from ...records import ACTIVE, Page, Status, TaskRecord
from ...store.database import log_failure
from ..api import call_hook
from ..resources import PROGRESS_FIELDS
from . import csrf
from .charts import fmt_seconds, fmt_time, latency_svg, throughput_svg, to_json

#: ``is_admin(request)``: whether the caller is an administrator.
AdminCheck = Callable[[Request], bool | Awaitable[bool]]
#: ``owner_label(owner_ids)``: how to show owners, ``{owner_id: label}`` (ids left out
#: are shown as they are).
OwnerLabels = Callable[[list[str]], Mapping[str, str] | Awaitable[Mapping[str, str]]]
#: ``owner_filter(text)``: the owner id that the overview's owner filter names; raises
#: :class:`UnknownOwner` when it names nobody.
OwnerFilter = Callable[[str], str | Awaitable[str]]
#: ``not_found(request)``: the answer everyone but administrators gets.
NotFound = Callable[[Request], Response | Awaitable[Response]]
#: ``task_title(record)``: a task's title in the lists (default: its name).
TaskTitle = Callable[[TaskRecord], str]
Handler = Callable[[Request], Awaitable[Response]]

log = logging.getLogger("errands.web.dashboard")
HERE = Path(__file__).parent
PAGE_SIZE = 20
OUTPUTS_SHOWN = 20
#: The most tasks one poll of ``/live`` reads.
LIVE_MAX = 100
#: The largest form body accepted (the forms hold one token).
FORM_BYTES = 4096
STATUS_VALUES = frozenset(s.value for s in Status)
RETRYABLE = frozenset({Status.FAILED, Status.CANCELLED})
FINISHED = ("succeeded", "failed", "cancelled")
_FULL = "The database is out of space."
_UNAVAILABLE = "The database is unavailable for a moment. Try again shortly."
STATIC_TYPES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
STATIC_HEADERS = {"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"}
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # Its own files only: no inline script, and no inline style either (the charts'
    # colours are in dashboard.css).
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; "
    "style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


class UnknownOwner(Exception):
    """Raised by an ``owner_filter`` for text that names no owner: the overview shows
    its message (e.g. "No user has the e-mail address …") and lists no task."""


def _not_found(request: Request) -> Response:
    return PlainTextResponse("Not Found", status_code=404)


class Dashboard:
    """The dashboard of ``app``, an ASGI app to mount:
    ``site.mount("/admin", dashboard(app, is_admin=...))`` serves ``/admin/`` (the
    overview) and ``/admin/tasks/{id}``; ``site.router.routes.extend(d.routes("/admin"))``
    also serves a bare ``/admin``.

    - ``is_admin(request)``: True for administrators; anyone else gets ``not_found``.
    - ``owner_label(owner_ids)``: ``{owner_id: label}``, how to show owners (an e-mail
      address, a name); by default owners show as their ids.
    - ``owner_filter(text)``: the owner id that the owner filter's text names (an
      e-mail address, a user number, …); raise :class:`UnknownOwner` with a message for
      text that names nobody. By default the text is the owner id.
    - ``task_title(record)``: a task's title in the lists and on its page (default: its
      name). Called on the event loop: it must not block.
    - ``not_found(request)``: the answer for everyone but administrators (default: a
      plain-text 404, as a Starlette router's). Pass the host's own 404 page, so that
      the dashboard's paths look like any other missing page.
    - ``home_url``: a link back to the host application in the dashboard's header.

    ``is_admin``, ``owner_label``, ``owner_filter`` and ``not_found`` may be sync (run
    in a thread pool: they may block) or async.
    """

    def __init__(
        self,
        app: Errands,
        *,
        is_admin: AdminCheck,
        owner_label: OwnerLabels | None = None,
        owner_filter: OwnerFilter | None = None,
        task_title: TaskTitle | None = None,
        not_found: NotFound | None = None,
        home_url: str | None = None,
    ) -> None:
        self.app = app
        self._is_admin = is_admin
        self._owner_label = owner_label
        self._owner_filter = owner_filter
        self._task_title = task_title
        self._not_found = not_found or _not_found
        self._home_url = home_url
        # The stylesheet and script, read once, with a version for their URLs (so that
        # browsers may keep them).
        self._files = {name: (HERE / "static" / name).read_bytes() for name in STATIC_TYPES}
        self._versions = {n: hashlib.sha256(d).hexdigest()[:12] for n, d in self._files.items()}
        self._env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=StrictUndefined,
        )
        self._env.globals.update(
            status_names=[s.value for s in Status], fmt_time=fmt_time, fmt_seconds=fmt_seconds
        )
        self._router = Router(
            routes=[
                Route("/", self._guarded(self.overview), methods=["GET"]),
                Route("/tasks/{task_id}", self._guarded(self.task), methods=["GET"]),
                Route("/tasks/{task_id}/retry", self._guarded(self.retry), methods=["POST"]),
                Route("/tasks/{task_id}/cancel", self._guarded(self.cancel), methods=["POST"]),
                Route("/live", self._guarded(self.live), methods=["GET"]),
                Route("/static/{name}", self.static, methods=["GET"]),
            ],
            default=self._no_page,
        )

    # -- the gate -------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # served on its own: the router's, nothing to set up
            await self._router(scope, receive, send)
            return
        if scope["type"] != "http":  # no WebSocket here: what a router says of a stranger
            await WebSocketClose()(scope, receive, send)
            return
        request = Request(scope, receive)
        if not await call_hook(self._is_admin, request):
            # The same answer on every path and for every method: a 405, a redirect or
            # a form error would tell that something is here.
            response: Response = await call_hook(self._not_found, request)
            await response(scope, receive, send)
            return
        if scope["path"] == scope.get("root_path", ""):  # reached at the bare mount path
            scope = {**scope, "path": scope["path"] + "/"}
        await self._router(scope, receive, send)

    def routes(self, path: str) -> list[BaseRoute]:
        """The routes that serve the dashboard at ``path`` (e.g. ``"/admin"``): a
        ``Mount`` for everything under it, and a ``Route`` for ``path`` itself, so that
        the overview answers there too instead of Starlette's redirect to ``path/``."""
        path = "/" + path.strip("/")
        if path == "/":
            return [Mount("", app=self)]
        return [Route(path, _BarePath(self, path)), Mount(path, app=self)]

    # -- pages ----------------------------------------------------------------------------
    async def overview(self, request: Request) -> Response:
        app = self.app
        query = request.query_params
        status = query.get("status") if query.get("status") in STATUS_VALUES else None
        name = (query.get("name") or "").strip()[:200]
        owner_text = (query.get("owner") or "").strip()[:320]
        cursor = query.get("cursor") or None
        owner, owner_note = await self._owner_for(owner_text)
        listing = partial(app.list, owner=owner, status=status, name=name or None, limit=PAGE_SIZE)
        if owner is None:
            page = Page([], None)
        else:
            try:
                page = await listing(cursor=cursor)
            except ValueError:  # a bad cursor: from the start
                cursor = None
                page = await listing()

        counts = await app.admin.status_counts()
        queue = await app.admin.queue()
        buckets = await app.admin.activity(hours=1, bucket_seconds=60)
        workers = await app.admin.workers()
        owners = {t.owner for t in page.items}
        owners.update(str(r["owner"]) for w in workers for r in w.running)
        labels = await self._labels(owners)

        root = _root(request)
        filters = {"status": status or "", "name": name, "owner": owner_text}
        kept = {k: v for k, v in filters.items() if v}
        next_url = None
        if page.next_cursor:
            next_url = f"{root}/?" + urlencode({**kept, "cursor": page.next_cursor})
        first_url = f"{root}/" + (f"?{urlencode(kept)}" if kept else "")
        return self.render(
            request,
            "overview.html",
            title="Overview",
            tasks=page.items,
            next_url=next_url,
            first_url=first_url if cursor else None,
            filters=filters,
            filtered=bool(kept),
            owner_note=owner_note,
            counts=counts,
            total=sum(counts.values()),
            queue=queue,
            finished={s: sum(getattr(b, s) for b in buckets) for s in FINISHED},
            throughput_chart=Markup(throughput_svg(buckets)),
            latency_chart=Markup(latency_svg(buckets)),
            workers=workers,
            labels=labels,
            task_names=app.registry.names(),
            title_of=self._title,
            now=datetime.now(UTC),
        )

    async def task(self, request: Request) -> Response:
        record = await self.app.get(request.path_params["task_id"], owner=ANY_OWNER)
        return await self._task_page(request, record)

    async def _task_page(
        self, request: Request, record: TaskRecord, status_code: int = 200, error: str = ""
    ) -> Response:
        labels = await self._labels({record.owner})
        outputs = await self.app.output_page(record.id, owner=ANY_OWNER, limit=OUTPUTS_SHOWN + 1)
        return self.render(
            request,
            "task.html",
            status_code=status_code,
            title=f"Task {record.id[:8]}",
            task=record,
            heading=self._title(record),
            owner_label=labels.get(record.owner),
            payload_json=to_json(record.payload),
            result_json=None if record.result is None else to_json(record.result),
            outputs=[
                (seq, to_json(item, indent=None)) for seq, item in outputs.items[:OUTPUTS_SHOWN]
            ],
            more_outputs=len(outputs.items) > OUTPUTS_SHOWN,
            can_retry=record.status in RETRYABLE,
            can_cancel=record.status in ACTIVE,
            error=error,
        )

    # -- actions --------------------------------------------------------------------------
    async def retry(self, request: Request) -> Response:
        if not await self._form_accepted(request):
            return self.refused(request)
        task_id = request.path_params["task_id"]
        try:
            new = await self.app.retry(task_id, owner=ANY_OWNER)
        except (TaskNotFound, DatabaseUnavailable, StorageFull):
            raise
        except ErrandsError as exc:  # not failed or cancelled, no longer registered, …
            record = await self.app.get(task_id, owner=ANY_OWNER)
            return await self._task_page(request, record, status_code=409, error=exc.message)
        return RedirectResponse(f"{_root(request)}/tasks/{new.id}", status_code=303)

    async def cancel(self, request: Request) -> Response:
        if not await self._form_accepted(request):
            return self.refused(request)
        task_id = request.path_params["task_id"]
        await self.app.cancel(task_id, owner=ANY_OWNER)
        return RedirectResponse(f"{_root(request)}/tasks/{task_id}", status_code=303)

    # -- for the script -------------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        """``?id=…&id=…``: those tasks' status and progress (unknown ids are left out)."""
        ids = request.query_params.getlist("id")[:LIVE_MAX]
        records = await self.app.get_many(ids, owner=ANY_OWNER) if ids else []
        tasks = {
            r.id: {
                "status": r.status.value,
                "done": r.done,
                "cancel_requested": r.cancel_requested,
                "progress": {k: getattr(r.progress, k) for k in PROGRESS_FIELDS},
            }
            for r in records
        }
        return JSONResponse({"tasks": tasks}, headers={"Cache-Control": "no-store"})

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_TYPES:
            return self.no_page(request)
        return Response(self._files[name], media_type=STATIC_TYPES[name], headers=STATIC_HEADERS)

    # -- answers --------------------------------------------------------------------------
    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> Response:
        """A page, with the CSRF token its forms carry (the cookie is set when the
        browser has none yet)."""
        token = csrf.current_token(request)
        fresh = token is None
        token = token or csrf.new_token()
        root = _root(request)
        html = self._env.get_template(template).render(
            root=root,
            csrf=token,
            csrf_field=csrf.FIELD,
            home_url=self._home_url,
            assets={
                name: f"{root}/static/{name}?v={version}"
                for name, version in self._versions.items()
            },
            **context,
        )
        response = HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)
        if fresh:
            csrf.set_cookie(response, request, token)
        return response

    def message(self, request: Request, status_code: int, title: str, text: str) -> Response:
        return self.render(request, "message.html", status_code, title=title, text=text)

    def no_task(self, request: Request) -> Response:
        return self.message(request, 404, "No such task", "There is no task with this id.")

    def no_page(self, request: Request) -> Response:
        return self.message(request, 404, "Not found", "The dashboard has no such page.")

    async def _no_page(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.no_page(Request(scope, receive))(scope, receive, send)

    def refused(self, request: Request) -> Response:
        return self.message(
            request,
            403,
            "Form expired",
            "This form has expired or did not come from this page. Go back, reload the "
            "page and try again.",
        )

    def _guarded(self, handler: Handler) -> Handler:
        """``handler``, answering a page of its own for a task that is not there (404),
        and when the database cannot serve (503, to retry in a moment) or is out of space
        (507)."""

        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except TaskNotFound:
                return self.no_task(request)
            except (DatabaseUnavailable, StorageFull) as exc:
                log_failure(log, exc, "errands dashboard: %s %s", request.method, request.url.path)
                if isinstance(exc, StorageFull):
                    return self.message(request, 507, "Out of space", _FULL)
                response = self.message(request, 503, "Unavailable", _UNAVAILABLE)
                response.headers["Retry-After"] = "1"
                return response

        return endpoint

    # -- helpers --------------------------------------------------------------------------
    async def _form_accepted(self, request: Request) -> bool:
        """Whether a posted form carries the dashboard's token and comes from this
        host (see ``csrf``). Only a small URL-encoded form is read."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            return False
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > FORM_BYTES:
                return False
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        return csrf.accepted(request, fields.get(csrf.FIELD))

    async def _owner_for(self, text: str) -> tuple[Any, str | None]:
        """The owner the filter names (ANY_OWNER for no filter, None for nobody) and a
        note for the page."""
        if not text:
            return ANY_OWNER, None
        if self._owner_filter is None:
            return text, None
        try:
            owner: str = await call_hook(self._owner_filter, text)
        except UnknownOwner as exc:
            return None, str(exc) or f"No owner matches {text}."
        return owner, None

    async def _labels(self, owners: set[str]) -> Mapping[str, str]:
        if self._owner_label is None or not owners:
            return {}
        return cast(Mapping[str, str], await call_hook(self._owner_label, sorted(owners)))

    def _title(self, record: TaskRecord) -> str:
        return record.name if self._task_title is None else self._task_title(record)


class _BarePath:
    """The dashboard at its mount path itself (``/admin``), as a ``Mount`` would pass
    it on if it matched there."""

    def __init__(self, dashboard: Dashboard, path: str) -> None:
        self._dashboard = dashboard
        self._path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        root = str(scope.get("root_path", ""))
        await self._dashboard({**scope, "root_path": root + self._path}, receive, send)


def _root(request: Request) -> str:
    """Where the dashboard is mounted: the prefix of every link and of the cookie."""
    return str(request.scope.get("root_path", "")).rstrip("/")

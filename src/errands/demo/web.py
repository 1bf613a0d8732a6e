"""The demo application: accounts, a search over files on disk, live task pages, my
tasks, API tokens and (in ``admin.py``) the library's admin dashboard.

It is an ordinary user of errands: tasks are submitted and read through the
:class:`~errands.Errands` API with the signed-in user's owner id, the browser talks to
``errands.web.task_api`` mounted at ``/api``, and the task page shows a task with the
``<errands-task>`` element. Searches can be repeated on a schedule (``schedules.py``),
and run in several folders at once as a group of searches (``groups.py``).
``create_app`` builds it; ``errands demo`` serves it with a worker in the same process.

A refused search is said in words for people (``validation.py``) and shown after a
redirect to the home page, once (``flash.py``: post/redirect/get, so a refresh does not
post the form again). Times are rendered in UTC inside ``<time datetime>``;
``static/local-times.js`` shows them in the reader's time zone with how long ago.
"My tasks" counts the user's tasks (``Errands.count``) and filters them by kind and
status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route, Router
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Receive, Scope, Send

from .. import (
    DatabaseUnavailable,
    Errands,
    InvalidPayload,
    ScheduleNotFound,
    Status,
    StorageFull,
    TaskNotFound,
    TaskRecord,
)
from ..metrics import metrics_app
from ..schedules.service import DEFAULT_MAX_PER_OWNER
from ..store.database import log_failure
from ..web import task_api
from . import accounts, flash, groups, schedules, tasks, validation
from .accounts import AccountError, Accounts
from .admin import admin_dashboard, admin_schedules
from .store import User

log = logging.getLogger("errands.demo")
MemberHandler = Callable[[Request, User, dict[str, str]], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
HERE = Path(__file__).parent
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PAGE_SIZE = 20


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of task "My tasks" filters by: what the filter calls it, the task name,
    and whether it is a group (a search in several folders is a group of ``search``
    tasks; its parts are searches in one folder each)."""

    label: str
    name: str
    is_group: bool | None = None


#: The kinds "My tasks" filters by, by the value of its ``kind`` parameter.
KINDS = {
    "search": Kind("searches", "search", is_group=False),
    "folders": Kind("searches in several folders", "search", is_group=True),
    "export": Kind("CSV exports", "export"),
}
HITS_ON_PAGE = 500
#: The message page's title and text for each status code it is sent with.
MESSAGES = {
    403: (
        "Form expired",
        "This form has expired or did not come from this site. Go back, reload the page and "
        "try again.",
    ),
    503: ("Unavailable", "The server's database is unavailable for a moment. Try again shortly."),
    507: (
        "Out of space",
        "The server has run out of storage space, so nothing was saved. Try again later.",
    ),
}


@dataclass
class DemoSettings:
    #: Default: ``$ERRANDS_DATABASE_URL``, else ``sqlite:///errands-demo.db``.
    database_url: str | None = None
    #: The directory searched (default: this interpreter's standard library).
    corpus: Path | None = None
    #: Where exports and the session secret are kept.
    data_dir: Path = Path(".errands-demo")
    #: Signs session cookies; default: kept in ``data_dir/secret``.
    secret: str | None = None
    #: Run a worker inside the web process.
    worker: bool = True
    worker_options: dict[str, Any] = field(default_factory=dict)
    #: Mark session cookies Secure (serve over HTTPS).
    https_only: bool = False
    #: How many schedules ("Repeat this search") one account may have (None: no limit).
    max_schedules_per_user: int | None = DEFAULT_MAX_PER_OWNER


class Demo:
    """The pieces the routes share."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        url = settings.database_url or os.environ.get("ERRANDS_DATABASE_URL")
        self.errands = Errands(
            url or "sqlite:///errands-demo.db",
            max_schedules_per_owner=settings.max_schedules_per_user,
        )
        self.data_dir = settings.data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.exports = self.data_dir / "exports"
        self.corpus = (settings.corpus or tasks.default_corpus()).resolve()
        tasks.register(self.errands, corpus=self.corpus, exports=self.exports)
        self.accounts = Accounts(self.errands)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals["status_names"] = [s.value for s in Status]
        self.templates.env.filters.update(
            title=tasks.task_title, when=_when, eta=_eta, **schedules.FILTERS
        )
        self.templates.env.globals["weekdays"] = list(schedules.WEEKDAYS)

    def setup(self) -> None:
        self.errands.migrate()
        self.accounts.setup()

    def secret(self) -> str:
        if self.settings.secret:
            return self.settings.secret
        path = self.data_dir / "secret"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        return path.read_text().strip()

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> Response:
        context.setdefault("user", getattr(request.state, "user", None))
        context["csrf"] = accounts.csrf_token(request)
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)

    def not_found(self, request: Request) -> Response:
        return self.render(request, "not_found.html", status_code=404)

    async def task_page(
        self,
        request: Request,
        user: User,
        record: TaskRecord,
        status_code: int = 200,
        repeat_error: str | None = None,
        repeat_form: dict[str, str] | None = None,
    ) -> Response:
        """A task's page; with the "Repeat this search" form's message and the fields
        submitted when that form was refused. A search in several folders (a group)
        also shows its parts; a part links to its group."""
        app = self.errands
        hits: list[tuple[int, Any]] = []
        if record.name == "search":
            hits = await app.outputs(record.id, owner=user.owner, limit=HITS_ON_PAGE)
        found = None
        if record.is_group:
            found = await groups.folder_search(app, record, user.owner)
            if record.done:
                hits = groups.sorted_hits(hits)
        return self.render(
            request,
            "task.html",
            status_code,
            task=record,
            title=found.title(record) if found else tasks.task_title(record),
            found=found,
            group=await groups.parent_of(app, record, user.owner),
            hits=hits,
            hits_last=max((seq for seq, _ in hits), default=0),
            hits_cap=HITS_ON_PAGE,
            origin=await schedules.origin(app, record, user.owner),
            repeat=schedules.form_values(repeat_form),
            repeat_error=repeat_error,
        )

    async def signed_in(self, request: Request) -> User | None:
        """The user, also kept on ``request.state`` for the templates."""
        user = await run_in_threadpool(self.accounts.user_for, request)
        request.state.user = user
        return user

    async def form(self, request: Request) -> dict[str, str] | None:
        """The posted form's fields; None when its CSRF token is not the session's."""
        form = await request.form()
        data = {k: v for k, v in form.items() if isinstance(v, str)}
        return data if accounts.csrf_ok(request, data.get("csrf")) else None

    def database_failed(self, request: Request, exc: Exception) -> Response:
        """The page for a database that cannot serve (503) or is out of space (507)."""
        log_failure(log, exc, "errands demo: %s %s failed", request.method, request.url.path)
        if isinstance(exc, StorageFull):
            return self.message(request, 507)
        response = self.message(request, 503)
        response.headers["Retry-After"] = "1"
        return response

    def csrf_refused(self, request: Request) -> Response:
        return self.message(request, 403)

    def message(self, request: Request, status_code: int) -> Response:
        """The page that explains a refusal or a failure (``MESSAGES``)."""
        title, message = MESSAGES[status_code]
        return self.render(request, "message.html", status_code, title=title, message=message)

    def members(self, handler: MemberHandler) -> Endpoint:
        """A page for signed-in users: others go to the login page; a POST must carry
        the session's CSRF token; a task or a schedule that is not the user's gets the
        not-found page. ``handler(request, user, form)``."""

        async def endpoint(request: Request) -> Response:
            user = await self.signed_in(request)
            if user is None:
                return _redirect(f"/login?next={request.url.path}")
            form = await self.form(request) if request.method == "POST" else {}
            if form is None:
                return self.csrf_refused(request)
            try:
                return await handler(request, user, form)
            except (TaskNotFound, ScheduleNotFound):  # missing, or another user's: the same page
                return self.not_found(request)

        return endpoint


def create_app(settings: DemoSettings | None = None) -> FastAPI:
    demo = Demo(settings or DemoSettings())
    demo.setup()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        options = {"handle_signals": False} | demo.settings.worker_options
        worker = demo.errands.worker(**options) if demo.settings.worker else None
        runner = None if worker is None else asyncio.create_task(worker.run())
        try:
            yield
        finally:
            if worker is not None and runner is not None:
                worker.stop()
                try:
                    await asyncio.wait_for(asyncio.shield(runner), 10)
                except TimeoutError:
                    worker.stop()
                    await runner
            demo.errands.close()

    site = FastAPI(title="errands demo", lifespan=lifespan, docs_url="/api/docs")
    site.state.demo = demo
    # The pages' answer (the API under /api answers problem documents itself).
    site.add_exception_handler(DatabaseUnavailable, demo.database_failed)
    site.add_exception_handler(StorageFull, demo.database_failed)

    # -- the HTTP API, for the pages' scripts and for API tokens -------------------------
    async def api_owner(conn: HTTPConnection) -> str | None:
        user = await run_in_threadpool(demo.accounts.user_for, conn)
        if user is None:
            return None
        # A browser's write must prove it comes from our pages (SameSite is the first
        # line; this header is the second). Token-authenticated scripts need not; any
        # other Authorization header (Basic, …) leaves the session cookie in charge.
        by_token = conn.headers.get("authorization", "")[:7].lower() == "bearer "
        if (
            not by_token
            and isinstance(conn, Request)
            and conn.method not in SAFE_METHODS
            and not accounts.csrf_ok(conn, conn.headers.get("x-csrf-token"))
        ):
            return None
        conn.state.user = user
        return user.owner

    async def api_admin(conn: HTTPConnection) -> bool:
        user = getattr(conn.state, "user", None)
        return bool(user is not None and user.is_admin)

    site.include_router(
        task_api(demo.errands, current_owner=api_owner, is_admin=api_admin), prefix="/api"
    )

    async def page_not_found(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        await demo.signed_in(request)
        await demo.not_found(request)(scope, receive, send)

    pages = Router(default=page_not_found)
    _add_pages(pages, demo)
    metrics = metrics_app(demo.errands)
    site.router.routes.append(Route("/metrics", metrics))  # Mount alone misses a bare /metrics
    site.mount("/metrics", metrics)
    site.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    # Every schedule, for administrators, then the admin dashboard at /admin (and
    # /admin itself, not only /admin/…).
    site.router.routes.append(admin_schedules(demo))
    site.router.routes.extend(admin_dashboard(demo).routes("/admin"))
    site.mount("/", pages)
    site.add_middleware(
        SessionMiddleware,
        secret_key=demo.secret(),
        session_cookie="errands_session",
        same_site="lax",
        https_only=demo.settings.https_only,
        max_age=accounts.SESSION_SECONDS,
    )
    return site


def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def _safe_next(target: str | None) -> str:
    """Only local paths: no open redirects."""
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


def _add_pages(pages: Router, demo: Demo) -> None:
    app = demo.errands

    # -- accounts --------------------------------------------------------------------
    async def account_page(
        request: Request, template: str, sign_in: Callable[[str, str], User], **context: Any
    ) -> Response:
        """The register or login form, and its POST: ``sign_in(email, password)`` gives
        the user to log in, who goes on to the form's ``next`` page (login) or home."""
        await demo.signed_in(request)
        if request.method == "GET":
            return demo.render(request, template, **context)
        data = await demo.form(request)
        if data is None:
            return demo.csrf_refused(request)
        email = data.get("email", "")
        try:
            user = await run_in_threadpool(sign_in, email, data.get("password", ""))
        except AccountError as exc:
            return demo.render(
                request, template, status_code=400, error=str(exc), email=email, **context
            )
        await run_in_threadpool(demo.accounts.log_in, request, user)
        return _redirect(_safe_next(data.get("next")) if "next" in context else "/")

    async def register_page(request: Request) -> Response:
        return await account_page(request, "register.html", demo.accounts.register)

    async def login_page(request: Request) -> Response:
        next_url = _safe_next(request.query_params.get("next"))
        return await account_page(request, "login.html", demo.accounts.authenticate, next=next_url)

    async def logout(request: Request) -> Response:
        if await demo.form(request) is None:
            return demo.csrf_refused(request)
        await run_in_threadpool(demo.accounts.log_out, request)
        return _redirect("/login")

    # -- searching -------------------------------------------------------------------
    async def home_page(request: Request, user: User, status_code: int, **context: Any) -> Response:
        """The search form, beside the user's recent tasks."""
        recent = await app.list(owner=user.owner, limit=5)
        return demo.render(
            request,
            "home.html",
            status_code,
            recent=groups.rows(recent.items),
            corpus=demo.corpus,
            some_folders=await run_in_threadpool(tasks.top_folders, demo.corpus),
            max_folders=tasks.MAX_FOLDERS,
            **context,
        )

    async def home(request: Request) -> Response:
        user = await demo.signed_in(request)
        if user is None:
            return demo.render(request, "welcome.html")
        refused = flash.take(request, "/")  # a refused search's, once
        return await home_page(request, user, 200, form=refused.form, errors=refused.errors)

    def refuse(request: Request, data: dict[str, str], errors: list[str]) -> Response:
        """A refused search: its errors and fields are shown once on the home page,
        after a redirect (a refresh there does not post the form again)."""
        flash.keep(request, "/", errors, data)
        return _redirect("/")

    async def search(request: Request, user: User, data: dict[str, str]) -> Response:
        payload = {
            "query": data.get("query", ""),
            "regex": data.get("regex") == "on",
            "case_sensitive": data.get("case_sensitive") == "on",
            "glob": data.get("glob") or "*.py",
            "pause": 0.005 if data.get("slow") == "on" else 0.0,
        }
        try:
            folders = await run_in_threadpool(
                tasks.parse_folders, data.get("folders", ""), demo.corpus
            )
        except tasks.FolderError as exc:
            return refuse(request, data, [str(exc)])
        try:
            record = await groups.submit_search(app, payload, folders, user.owner)
        except InvalidPayload as exc:
            return refuse(request, data, validation.readable(exc.errors, payload))
        return _redirect(f"/tasks/{record.id}")

    # -- tasks -------------------------------------------------------------------------
    async def task_page(request: Request, user: User, data: dict[str, str]) -> Response:
        record = await app.get(request.path_params["task_id"], owner=user.owner)
        return await demo.task_page(request, user, record)

    async def cancel(request: Request, user: User, data: dict[str, str]) -> Response:
        task_id = request.path_params["task_id"]
        await app.cancel(task_id, owner=user.owner)
        return _redirect(f"/tasks/{task_id}")

    async def export(request: Request, user: User, data: dict[str, str]) -> Response:
        task_id = request.path_params["task_id"]
        source = await app.get(task_id, owner=user.owner)
        if source.name != "search" or source.status is not Status.SUCCEEDED:
            return _redirect(f"/tasks/{task_id}")
        record = await app.submit("export", {"search_id": source.id}, owner=user.owner)
        return _redirect(f"/tasks/{record.id}")

    async def download(request: Request, user: User, data: dict[str, str]) -> Response:
        record = await app.get(request.path_params["task_id"], owner=user.owner)
        path = demo.exports / f"{record.id}.csv"
        if record.name != "export" or record.status is not Status.SUCCEEDED or not path.exists():
            return demo.not_found(request)
        return FileResponse(
            path,
            media_type="text/csv",
            filename=f"search-{record.payload['search_id'][:8]}.csv",
            headers={"Cache-Control": "private, no-store"},
        )

    async def my_tasks(request: Request, user: User, data: dict[str, str]) -> Response:
        """The user's tasks, newest first, a page at a time; filtered by status and by
        kind (``KINDS``: a task name), with how many match and how many there are."""
        wanted = request.query_params.get("status")
        status = wanted if wanted in {s.value for s in Status} else None
        wanted_kind = request.query_params.get("kind", "")
        kind = KINDS.get(wanted_kind)
        filters: dict[str, Any] = {"owner": user.owner, "status": status}
        if kind is not None:
            filters |= {"name": kind.name, "is_group": kind.is_group}
        cursor = request.query_params.get("cursor") or None
        try:
            page = await app.list(**filters, limit=PAGE_SIZE, cursor=cursor)
        except ValueError:  # a cursor that is not one: the first page
            page = await app.list(**filters, limit=PAGE_SIZE)
        matching = await app.count(**filters)
        filtered = status is not None or kind is not None
        total = await app.count(owner=user.owner) if filtered else matching
        query = {k: v for k, v in (("kind", kind and wanted_kind), ("status", status)) if v}
        return demo.render(
            request,
            "tasks.html",
            page=page,
            rows=groups.rows(page.items),
            status=status or "",
            kind=wanted_kind if kind else "",
            kinds=KINDS,
            matching=matching,
            total=total,
            filtered=filtered,
            here=f"/tasks?{urlencode(query)}" if query else "/tasks",
        )

    # -- API tokens --------------------------------------------------------------------
    async def tokens_page(request: Request, user: User, data: dict[str, str]) -> Response:
        created = None
        if request.method == "POST":
            name = data.get("name", "")
            created = await run_in_threadpool(demo.accounts.create_token, user, name)
        tokens = await run_in_threadpool(demo.accounts.tokens, user)
        return demo.render(request, "tokens.html", tokens=tokens, created=created)

    async def revoke_token(request: Request, user: User, data: dict[str, str]) -> Response:
        token_id = request.path_params["token_id"]
        await run_in_threadpool(demo.accounts.revoke_token, user, token_id)
        return _redirect("/tokens")

    pages.add_route("/", home, methods=["GET"])
    pages.add_route("/register", register_page, methods=["GET", "POST"])
    pages.add_route("/login", login_page, methods=["GET", "POST"])
    pages.add_route("/logout", logout, methods=["POST"])
    pages.add_route("/search", demo.members(search), methods=["POST"])
    pages.add_route("/tasks", demo.members(my_tasks), methods=["GET"])
    pages.add_route("/tasks/{task_id}", demo.members(task_page), methods=["GET"])
    pages.add_route("/tasks/{task_id}/cancel", demo.members(cancel), methods=["POST"])
    pages.add_route("/tasks/{task_id}/export", demo.members(export), methods=["POST"])
    pages.add_route("/exports/{task_id}.csv", demo.members(download), methods=["GET"])
    pages.add_route("/tokens", demo.members(tokens_page), methods=["GET", "POST"])
    pages.add_route("/tokens/{token_id:int}/revoke", demo.members(revoke_token), methods=["POST"])
    schedules.add_pages(pages, demo)


def _when(value: datetime | None) -> Markup:
    """A time as ``<time datetime="…" data-local>… UTC</time>``: the UTC text without
    JavaScript; ``static/local-times.js`` shows it in the reader's time zone, with a
    relative phrase ("2 minutes ago"), and the UTC text as its tooltip."""
    if value is None:
        return Markup("")
    utc = value.astimezone(UTC)
    return Markup('<time datetime="{}" data-local>{}</time>').format(
        utc.isoformat(), utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    )


def _eta(record: TaskRecord) -> str:
    """The time left, as ``<errands-task>`` words it (for the page without JavaScript)."""
    seconds = record.eta_seconds(datetime.now(UTC))
    if seconds is None or record.done:
        return ""
    s = max(1, int(seconds + 0.5))  # halves up, as JavaScript's Math.round
    return f"about {s} s left" if s < 60 else f"about {int(s / 60 + 0.5)} min left"

"""The demo application: accounts, a search over files on disk, live task pages, my
tasks, API tokens and (in ``admin.py``) the library's admin dashboard.

It is an ordinary user of errands: tasks are submitted and read through the
:class:`~errands.Errands` API with the signed-in user's owner id, the browser talks to
``errands.web.task_api`` mounted at ``/api``, and the task page shows a task with the
``<errands-task>`` element. Searches can be repeated on a schedule (``schedules.py``),
and run in several folders at once as a group of searches (``groups.py``). The register,
login and logout pages are in ``signin.py``, "My tasks" in ``mytasks.py`` and the API
tokens page in ``tokens.py``. ``create_app`` builds it; ``errands demo``
serves it with a worker in the same process.

Every answer carries the security headers of ``security.py`` (a Content-Security-Policy
that runs no inline script: templates keep scripts and styles in ``static/``). The API's
documentation at ``/api/docs`` works offline (``apidocs.py``), and ``/metrics`` answers
administrators only (``admin.py``).

Fairness and abuse: at most ``max_running_per_user`` of one user's tasks of one kind run
at once (a task held back says so: ``waiting.py``); the search form, the export button
and the API share one per-user submit rate (``SubmitLimiter``: a burst, then a steady
rate; over it the form answers "You are starting searches too fast" with 429 and
``Retry-After``), so mixing them does not double it. "Repeat this search" creates a
schedule, not a task: the number of schedules is limited instead
(``max_schedules_per_user``). Logins are throttled (``throttle.py``) and their password
hashes run in a lane of their own (``lane.py``).

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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
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
from ..web.api import TaskAPI
from ..web.protocol import TaskProtocol
from ..web.ratelimit import SubmitLimiter
from . import (
    accounts,
    apidocs,
    flash,
    groups,
    matching,
    mytasks,
    reading,
    schedules,
    signin,
    summaries,
    tasks,
    tokens,
    validation,
    waiting,
)
from .accounts import Accounts
from .admin import admin_dashboard, admin_metrics, admin_schedules
from .lane import Lane
from .security import SecurityHeaders
from .store import User
from .throttle import Logins, Rules

log = logging.getLogger("errands.demo")
MemberHandler = Callable[[Request, User, dict[str, str]], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
HERE = Path(__file__).parent
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
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
    #: What the pages call the corpus; default: "the Python standard library" for the
    #: default corpus, else the directory's own name (never its path on the server).
    corpus_name: str | None = None
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
    #: How many of one user's tasks of one kind (searches, exports) run at once, of the
    #: worker's slots (4 by default); None: no limit.
    max_running_per_user: int | None = 2
    #: Per user, tasks started per second after a burst, through the pages and the API
    #: together (None: no limit).
    submit_rate: float | None = 2.0
    submit_burst: int = 30
    #: Login and registration attempts per e-mail address typed, and per client address.
    account_throttle: Rules = field(default_factory=lambda: Rules(attempts=5))
    address_throttle: Rules = field(default_factory=lambda: Rules(attempts=20))
    #: Threads hashing passwords, and how many more hashes may wait for them (beyond
    #: that a login is answered "busy" at once).
    hash_threads: int = 1
    hash_queue: int = 8
    #: A search skips files larger than this.
    max_file_bytes: int = reading.MAX_FILE_BYTES
    #: The time a search with a regular expression may spend matching.
    search_seconds: float = matching.SEARCH_SECONDS


class Demo:
    """The pieces the routes share."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        url = settings.database_url or os.environ.get("ERRANDS_DATABASE_URL")
        self.errands = Errands(
            url or "sqlite:///errands-demo.db",
            max_schedules_per_owner=settings.max_schedules_per_user,
            max_running_per_owner=settings.max_running_per_user,
        )
        rate = settings.submit_rate
        #: One per-user submit rate for the pages and the API.
        self.submits = SubmitLimiter(rate, settings.submit_burst) if rate else None
        self.logins = Logins.of(settings.account_throttle, settings.address_throttle)
        self.data_dir = settings.data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.exports = self.data_dir / "exports"
        self.corpus = (settings.corpus or tasks.default_corpus()).resolve()
        self.corpus_name = settings.corpus_name or corpus_name(self.corpus)
        tasks.register(
            self.errands,
            corpus=self.corpus,
            exports=self.exports,
            max_file_bytes=settings.max_file_bytes,
            search_seconds=settings.search_seconds,
        )
        lane = Lane("errands-demo-hash", threads=settings.hash_threads, queue=settings.hash_queue)
        self.accounts = Accounts(self.errands, lane)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals["status_names"] = [s.value for s in Status]
        self.templates.env.filters.update(
            title=tasks.task_title,
            when=_when,
            eta=_eta,
            final_line=summaries.final_line,
            summary=summaries.summarize,
            hit_count=summaries.hit_count,
            error_text=summaries.error_text,
            **schedules.FILTERS,
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
        held = found.searches if found else [record]
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
            waiting=await waiting.note(app, held, user.owner),
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

    def too_fast(self, request: Request, owner: str, what: str) -> Response | None:
        """Take one of ``owner``'s submits: None when allowed, else the page saying
        "You are starting ``what`` too fast" (429, ``Retry-After``)."""
        wait = self.submits.take(owner) if self.submits is not None else 0.0
        if not wait:
            return None
        seconds = SubmitLimiter.retry_after(wait)
        message = f"You are starting {what} too fast; try again in {seconds} s."
        response = self.render(request, "message.html", 429, title="Too fast", message=message)
        response.headers["Retry-After"] = seconds
        return response

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
            demo.accounts.lane.close()
            demo.errands.close()

    # The docs page is the demo's own (apidocs.py); ReDoc would load from a CDN.
    site = FastAPI(title="errands demo", lifespan=lifespan, docs_url=None, redoc_url=None)
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

    # ``task_api``'s router, with the pages' submit rate limiter.
    protocol = replace(TaskProtocol.configured(demo.errands), limiter=demo.submits)
    site.include_router(TaskAPI(protocol, api_owner, api_admin).router(), prefix="/api")

    async def page_not_found(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        await demo.signed_in(request)
        await demo.not_found(request)(scope, receive, send)

    pages = Router(default=page_not_found)
    _add_pages(pages, demo)
    site.router.routes.extend(admin_metrics(demo, metrics_app(demo.errands)))
    site.router.routes.extend(apidocs.api_docs_routes(site, demo, files=apidocs.swagger_ui_files()))
    site.router.routes.append(Route("/favicon.ico", _favicon, methods=["GET"]))
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
    site.add_middleware(SecurityHeaders)  # the outermost: on every answer
    return site


def corpus_name(corpus: Path) -> str:
    """The corpus as the pages name it: never its path on the server."""
    if corpus == tasks.default_corpus().resolve():
        return "the Python standard library"
    return corpus.name or "the searched directory"


async def _favicon(request: Request) -> Response:
    return FileResponse(
        HERE / "static" / "favicon.ico",
        media_type="image/x-icon",
        headers={"Cache-Control": "public, max-age=86400"},
    )


def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def _add_pages(pages: Router, demo: Demo) -> None:
    app = demo.errands

    # -- searching -------------------------------------------------------------------
    async def home_page(request: Request, user: User, status_code: int, **context: Any) -> Response:
        """The search form, beside the user's recent tasks."""
        recent = await app.list(owner=user.owner, limit=5)
        return demo.render(
            request,
            "home.html",
            status_code,
            recent=groups.rows(recent.items),
            corpus=demo.corpus_name,
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
        refused = demo.too_fast(request, user.owner, "searches")
        if refused is not None:
            return refused
        try:
            record = await groups.submit_search(app, payload, folders, user.owner)
        except InvalidPayload as exc:
            return refuse(request, data, validation.readable(exc.errors, payload))
        return _redirect(f"/tasks/{record.id}")

    # -- tasks -------------------------------------------------------------------------
    async def task_page(request: Request, user: User, data: dict[str, str]) -> Response:
        record = await app.get(request.path_params["task_id"], owner=user.owner)
        return await demo.task_page(request, user, record)

    async def outcome(request: Request, user: User, data: dict[str, str]) -> Response:
        """A task's outcome alone (``_outcome.html``), for its page's script."""
        record = await app.get(request.path_params["task_id"], owner=user.owner)
        return demo.render(request, "_outcome.html", task=record)

    async def cancel(request: Request, user: User, data: dict[str, str]) -> Response:
        task_id = request.path_params["task_id"]
        await app.cancel(task_id, owner=user.owner)
        return _redirect(f"/tasks/{task_id}")

    async def export(request: Request, user: User, data: dict[str, str]) -> Response:
        task_id = request.path_params["task_id"]
        source = await app.get(task_id, owner=user.owner)
        if source.name != "search" or source.status is not Status.SUCCEEDED:
            return _redirect(f"/tasks/{task_id}")
        refused = demo.too_fast(request, user.owner, "exports")
        if refused is not None:
            return refused
        if source.is_group:
            words = (await groups.folder_search(app, source, user.owner)).words
        else:
            words = tasks.search_words(source.payload)
        payload = {"search_id": source.id, "search": words}
        record = await app.submit("export", payload, owner=user.owner)
        return _redirect(f"/tasks/{record.id}")

    async def waiting_note(request: Request, user: User, data: dict[str, str]) -> Response:
        """Why the task waits (``waiting.py``), for the task page's script."""
        record = await app.get(request.path_params["task_id"], owner=user.owner)
        held = [record]
        if record.is_group:
            held = (await groups.folder_search(app, record, user.owner)).searches
        note = await waiting.note(app, held, user.owner)
        body = {"status": record.status.value, "waiting": note}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def download(request: Request, user: User, data: dict[str, str]) -> Response:
        record = await app.get(request.path_params["task_id"], owner=user.owner)
        path = demo.exports / f"{record.id}.csv"
        if record.name != "export" or record.status is not Status.SUCCEEDED or not path.exists():
            return demo.not_found(request)
        return FileResponse(
            path,
            media_type="text/csv",
            filename=tasks.export_file_name(record.payload),
            headers={"Cache-Control": "private, no-store"},
        )

    pages.add_route("/", home, methods=["GET"])
    signin.add_pages(pages, demo)
    pages.add_route("/search", demo.members(search), methods=["POST"])
    mytasks.add_pages(pages, demo)
    pages.add_route("/tasks/{task_id}", demo.members(task_page), methods=["GET"])
    pages.add_route("/tasks/{task_id}/outcome", demo.members(outcome), methods=["GET"])
    pages.add_route("/tasks/{task_id}/cancel", demo.members(cancel), methods=["POST"])
    pages.add_route("/tasks/{task_id}/export", demo.members(export), methods=["POST"])
    pages.add_route("/tasks/{task_id}/waiting", demo.members(waiting_note), methods=["GET"])
    pages.add_route("/exports/{task_id}.csv", demo.members(download), methods=["GET"])
    tokens.add_pages(pages, demo)
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

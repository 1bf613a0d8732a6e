"""The demo's admin pages: the library's dashboard (:mod:`errands.web.dashboard`) at
``/admin``, mounted as any application would mount it, with the demo's own answers to
its questions: who is an administrator (a signed-in account marked so), how to show an
owner (the user's e-mail address), what the owner filter's text names (an e-mail
address, an owner id or a user number), a task's title, and the demo's 404 page for
everyone else (so that ``/admin`` looks like any other missing page).

Beside the dashboard, ``/admin/schedules`` lists every schedule (``admin_schedules``):
the users' ("Repeat this search") and those declared in code, with their owners, their
times, and a link to the dashboard's page of the task each last created. It is the
demo's own page, behind the same check and the same 404 page.

``/metrics`` (Prometheus, ``errands.metrics``) is behind it too (``admin_metrics``):
the figures tell how busy the site is and which tasks fail, which is no one else's
business. A scraper sends an administrator's API token (``Authorization: Bearer …``);
a signed-in administrator's browser may look too. Everyone else gets the 404 page.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import ANY_OWNER, Errands
from ..web.dashboard import Dashboard, UnknownOwner, dashboard
from . import store
from .schedules import listing
from .store import User
from .tasks import task_title

#: Every method: a non-administrator gets the 404 page whatever the method, as on the
#: dashboard's paths (a 405 would tell that something is there).
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class Site(Protocol):
    """What the admin pages use of the demo site (``demo.web.Demo``)."""

    errands: Errands

    def not_found(self, request: Request) -> Response: ...

    async def signed_in(self, request: Request) -> User | None: ...

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> Response: ...


def admin_dashboard(demo: Site) -> Dashboard:
    """The dashboard; the demo serves it with ``site.router.routes.extend(
    admin_dashboard(demo).routes("/admin"))``."""
    app = demo.errands

    async def is_admin(request: Request) -> bool:
        user = await demo.signed_in(request)  # also kept for the 404 page's header
        return user is not None and user.is_admin

    async def emails(owners: list[str]) -> Mapping[str, str]:
        return await app.db.aread(store.users_by_owner, owners)

    async def owner_for(text: str) -> str:
        """The owner an e-mail address, an owner id or a user number names."""
        if "@" in text:
            user = await app.db.aread(store.user_by_email, text.lower())
            if user is None:
                raise UnknownOwner(f"No user has the e-mail address {text}.")
            return user.owner
        if text.isdigit():
            return f"user:{text}"
        return text

    return dashboard(
        app,
        is_admin=is_admin,
        owner_label=emails,
        owner_filter=owner_for,
        task_title=task_title,
        not_found=demo.not_found,
        home_url="/",
    )


def admin_schedules(demo: Site) -> Route:
    """The page of every schedule, at ``/admin/schedules`` (to be routed before the
    dashboard's mount at ``/admin``)."""
    app = demo.errands

    async def page(request: Request) -> Response:
        user = await demo.signed_in(request)
        if user is None or not user.is_admin:
            return demo.not_found(request)
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse(
                "Method Not Allowed", status_code=405, headers={"Allow": "GET, HEAD"}
            )
        after = request.query_params.get("after") or None
        found, more = await listing(app, ANY_OWNER, after)
        labels = await app.db.aread(store.users_by_owner, sorted({s.owner for s in found}))
        return demo.render(
            request,
            "admin_schedules.html",
            schedules=found,
            more=more,
            after=after,
            labels=labels,
        )

    return Route("/admin/schedules", page, methods=ALL_METHODS)


class AdminOnly:
    """An ASGI app that passes administrators' requests to ``app`` (signed in, or
    with an API token) and answers everyone else with the 404 page."""

    def __init__(self, demo: Site, app: ASGIApp) -> None:
        self.demo = demo
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        user = await self.demo.signed_in(request)  # the session's user, or the token's
        if user is None or not user.is_admin:
            await self.demo.not_found(request)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def admin_metrics(demo: Site, metrics: ASGIApp) -> list[BaseRoute]:
    """``metrics`` at ``/metrics`` (and under it), for administrators only."""
    guarded = AdminOnly(demo, metrics)
    # A Mount alone misses a bare /metrics.
    return [Route("/metrics", guarded), Mount("/metrics", app=guarded)]

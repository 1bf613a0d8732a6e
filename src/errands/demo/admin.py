"""The demo's admin pages: the library's dashboard (:mod:`errands.web.dashboard`) at
``/admin``, mounted as any application would mount it, with the demo's own answers to
its questions: who is an administrator (a signed-in account marked so), how to show an
owner (the user's e-mail address), what the owner filter's text names (an e-mail
address, an owner id or a user number), a task's title, and the demo's 404 page for
everyone else (so that ``/admin`` looks like any other missing page).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from .. import Errands
from ..web.dashboard import Dashboard, UnknownOwner, dashboard
from . import store
from .store import User
from .tasks import task_title


class Site(Protocol):
    """What the admin pages use of the demo site (``demo.web.Demo``)."""

    errands: Errands

    def not_found(self, request: Request) -> Response: ...

    async def signed_in(self, request: Request) -> User | None: ...


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

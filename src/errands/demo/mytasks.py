"""The demo's "My tasks" page: the signed-in user's tasks, newest first, a page at a time,
filtered by status and by kind (``KINDS``), with how many match and how many there are
(``Errands.count``). Its script (``static/tasks-page.js``) keeps the statuses live and
offers the tasks created since the page was loaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Router

from .. import Status
from . import groups
from .store import User

if TYPE_CHECKING:
    from .web import Demo

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


def add_pages(pages: Router, demo: Demo) -> None:
    app = demo.errands

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

    pages.add_route("/tasks", demo.members(my_tasks), methods=["GET"])

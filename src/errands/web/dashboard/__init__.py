"""The admin dashboard: an ASGI app that any Starlette or FastAPI application mounts,
with its own idea of who is an administrator.

It shows every owner's tasks (filtered by status, name and owner, 20 a page), the
counts by status, the queue, throughput and latency over the last hour, the live
workers with what they run, and one task in full (payload, result, error and traceback,
its first outputs, attempts) with Retry and Cancel. It has its own small layout,
stylesheet and script (no CDN), and its links start at wherever it is mounted.

Everyone but an administrator gets a plain 404 on every path, whatever the method (or
the host's own 404 page, through ``not_found``). Its forms are protected against
cross-site requests without the host's sessions: see ``csrf``.

Needs the ``web`` extra (Starlette, Jinja2).
"""

from __future__ import annotations

from ...app import Errands
from .views import (
    AdminCheck,
    Dashboard,
    NotFound,
    OwnerFilter,
    OwnerLabels,
    TaskTitle,
    UnknownOwner,
)


def dashboard(
    app: Errands,
    *,
    is_admin: AdminCheck,
    owner_label: OwnerLabels | None = None,
    owner_filter: OwnerFilter | None = None,
    task_title: TaskTitle | None = None,
    not_found: NotFound | None = None,
    home_url: str | None = None,
) -> Dashboard:
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
    return Dashboard(
        app,
        is_admin=is_admin,
        owner_label=owner_label,
        owner_filter=owner_filter,
        task_title=task_title,
        not_found=not_found,
        home_url=home_url,
    )


__all__ = ["Dashboard", "UnknownOwner", "dashboard"]

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

# The hooks' types come along, for annotating them.
from .views import (  # noqa: F401
    AdminCheck,
    Dashboard,
    NotFound,
    OwnerFilter,
    OwnerLabels,
    TaskTitle,
    UnknownOwner,
)

#: The dashboard of ``app``, an ASGI app to mount: ``dashboard(app, is_admin=...)`` (see
#: :class:`Dashboard` for its options).
dashboard = Dashboard


__all__ = ["Dashboard", "UnknownOwner", "dashboard"]

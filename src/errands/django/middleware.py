"""``OwnerMiddleware``: the signed-in user owns what a request enqueues.

Add it after ``AuthenticationMiddleware``. For a request of a signed-in user, tasks
enqueued while it runs (and ``get_result``) belong to ``str(request.user.pk)``; for an
anonymous one, nothing changes (the ``owner()`` block around the code, else the system
owner). Works under WSGI and ASGI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from .owners import owner


def request_owner(request: Any) -> str | None:
    """``str(request.user.pk)`` of a signed-in user, else None."""
    return _owner_of(getattr(request, "user", None))


def _owner_of(user: Any) -> str | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return str(user.pk)


class OwnerMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self._acall(request)
        who = request_owner(request)
        if who is None:
            return self.get_response(request)
        with owner(who):
            return self.get_response(request)

    async def _acall(self, request: Any) -> Any:
        auser = getattr(request, "auser", None)  # the user, loaded without blocking
        who = _owner_of(await auser()) if auser is not None else request_owner(request)
        if who is None:
            return await self.get_response(request)
        with owner(who):
            response: Awaitable[Any] = self.get_response(request)
            return await response

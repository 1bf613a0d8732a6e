"""Who owns what is enqueued: the signed-in user of the request
(``OwnerMiddleware``), the ``owner()`` block around the call, else the system owner."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from ..app import SYSTEM_OWNER
from ..owners import ANY_OWNER

# SYSTEM_OWNER (errands' own, also the owner of schedules declared in code) owns tasks
# enqueued outside a request with a signed-in user and outside an ``owner()`` block
# (management commands, the shell, tasks started by other tasks' code without one).
# Users' owner ids are ``str(user.pk)``: an integer or UUID primary key never equals
# it, so no user ever sees these tasks.
__all__ = ["SYSTEM_OWNER", "current_owner", "owner", "reading_owner"]

_owner: contextvars.ContextVar[Any] = contextvars.ContextVar("errands_django_owner", default=None)


def current_owner() -> str:
    """The owner of a task enqueued now (``ValueError`` inside ``owner(ANY_OWNER)``:
    a task belongs to someone)."""
    chosen = _owner.get()
    if chosen is ANY_OWNER:
        raise ValueError("tasks cannot be enqueued inside owner(ANY_OWNER)")
    return chosen or SYSTEM_OWNER


def reading_owner() -> Any:
    """The owner ``get_result`` reads as: the current one, or ``ANY_OWNER``."""
    chosen = _owner.get()
    return ANY_OWNER if chosen is ANY_OWNER else current_owner()


@contextlib.contextmanager
def owner(owner_id: Any) -> Iterator[Any]:
    """Make ``owner_id`` the owner of everything enqueued in the block (and the scope
    of ``get_result``): ``with errands.django.owner(str(user.pk)): task.enqueue()``.
    ``owner(errands.ANY_OWNER)`` lets administrative code read every owner's results
    (it cannot enqueue)."""
    if owner_id is not ANY_OWNER and (not isinstance(owner_id, str) or not owner_id):
        raise TypeError("owner() takes a non-empty string (str(user.pk)) or ANY_OWNER")
    token = _owner.set(owner_id)
    try:
        yield owner_id
    finally:
        _owner.reset(token)

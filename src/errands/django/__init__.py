"""errands in a Django project: ``INSTALLED_APPS += ["errands.django"]``.

- ``errands.django.app``: the project's :class:`~errands.Errands` application, on the
  database of ``settings.ERRANDS["DATABASE"]`` (a Django alias, default ``"default"``).
  Register errands' own tasks on it with ``@app.task``.
- ``errands.django.ErrandsBackend``: a Django Tasks backend (``TASKS = {"default":
  {"BACKEND": "errands.django.ErrandsBackend"}}``).
- ``errands.django.owner("42")``: the owner of what is enqueued in the block;
  ``errands.django.middleware.OwnerMiddleware`` makes it the signed-in user for a
  request. Outside both, tasks belong to :data:`SYSTEM_OWNER`.

Names are resolved on first use (``__getattr__``), so ``INSTALLED_APPS`` and the
``TASKS`` setting can name this package before Django's apps are ready.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .owners import SYSTEM_OWNER, current_owner, owner

if TYPE_CHECKING:
    from ..app import Errands
    from .backend import ErrandsBackend, ErrandsTaskContext

    app: Errands

__all__ = [
    "SYSTEM_OWNER",
    "ErrandsBackend",
    "ErrandsTaskContext",
    "app",
    "current_owner",
    "get_app",
    "owner",
]


def get_app() -> Errands:
    """The project's errands application (made on first use, from the settings)."""
    from .conf import get_app as made

    return made()


def __getattr__(name: str) -> Any:
    if name == "app":
        return get_app()
    if name in ("ErrandsBackend", "ErrandsTaskContext"):
        from . import backend

        return getattr(backend, name)
    raise AttributeError(f"module 'errands.django' has no attribute {name!r}")

"""Running a store write in the caller's own transaction (``submit(connection=…)``).

The caller passes a SQLAlchemy ``Connection`` or ``Session``, or their asyncio forms; the
write runs on its connection, and a callback runs when that transaction commits (the
notifications that wake workers and live views: a rolled-back task never existed, so
nobody hears of it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, event


async def run_in_caller(connection: Any, fn: Callable[[Connection], None]) -> Any:
    """Run ``fn`` on the caller's connection or session; the sync object whose commit
    makes the work durable."""
    if is_async_caller(connection):
        # Only callers on SQLAlchemy's asyncio extension (which needs greenlet) get here.
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

        if isinstance(connection, AsyncSession):
            await connection.run_sync(lambda s: fn(s.connection()))
            return connection.sync_session
        if isinstance(connection, AsyncConnection):
            await connection.run_sync(fn)
            return connection.sync_connection
    return run_in_caller_sync(connection, fn)


def is_async_caller(connection: Any) -> bool:
    """A caller's connection that needs ``run_in_caller`` (SQLAlchemy's asyncio forms)."""
    return type(connection).__module__.startswith("sqlalchemy.ext.asyncio")


def run_in_caller_sync(connection: Any, fn: Callable[[Connection], None]) -> Any:
    from sqlalchemy.orm import Session

    if isinstance(connection, Session):
        fn(connection.connection())
        return connection
    if isinstance(connection, Connection):
        fn(connection)
        return connection
    raise TypeError("connection must be a SQLAlchemy Connection, Session or their async forms")


def on_commit(sync_obj: Any, callback: Callable[[], None]) -> None:
    """Call ``callback`` when the caller's transaction commits."""
    from sqlalchemy.orm import Session

    if isinstance(sync_obj, Session):
        event.listen(sync_obj, "after_commit", lambda _s: callback(), once=True)
    else:
        # Connection events fire just before the commit; workers re-check shortly
        # after an empty wake-up, so the hint is not lost.
        event.listen(sync_obj, "commit", lambda _c: callback(), once=True)

"""Running a store write in the caller's own transaction (``submit(connection=…)``).

The caller passes a SQLAlchemy ``Connection`` or ``Session``, their asyncio forms, or a
Django database connection (``django.db.connections[alias]``); the write runs on its
connection, and a callback runs when that transaction commits (the notifications that
wake workers and live views: a rolled-back task never existed, so nobody hears of it).

A Django connection is borrowed, not opened: errands' statements run on the very
DB-API connection Django holds for this thread, through a SQLAlchemy engine whose pool
hands out that connection and never commits, rolls back or closes it. Inside
``transaction.atomic()`` the task commits or rolls back with the view's rows. Outside
one (autocommit), errands makes its statements one transaction of their own. The
notifications go with ``transaction.on_commit``: the task itself is already in the
transaction, so a crash after the commit loses at most a wake-up (workers also poll).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import NullPool

from .codec import json_text


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


def is_django_caller(connection: Any) -> bool:
    """A Django database connection: ``django.db.connections[alias]``, or the
    ``django.db.connection`` proxy of the default one."""
    module = type(connection).__module__
    return module.startswith("django.db.backends.") or module == "django.utils.connection"


def run_in_caller_sync(
    connection: Any, fn: Callable[[Connection], None], *, one_statement: bool = False
) -> Any:
    """``fn`` on the caller's connection; ``one_statement``: ``fn`` runs one statement
    (a Django connection in autocommit then needs no transaction around it)."""
    from sqlalchemy.orm import Session

    if isinstance(connection, Session):
        fn(connection.connection())
        return connection
    if isinstance(connection, Connection):
        fn(connection)
        return connection
    if is_django_caller(connection):
        with borrowed(connection, one_statement=one_statement) as conn:
            fn(conn)
        return connection
    raise TypeError(
        "connection must be a SQLAlchemy Connection, Session or their async forms, "
        "or a Django database connection"
    )


def on_commit(sync_obj: Any, callback: Callable[[], None]) -> None:
    """Call ``callback`` when the caller's transaction commits."""
    from sqlalchemy.orm import Session

    if is_django_caller(sync_obj):
        from django.db import transaction

        transaction.on_commit(callback, using=sync_obj.alias)  # at once in autocommit
    elif isinstance(sync_obj, Session):
        event.listen(sync_obj, "after_commit", lambda _s: callback(), once=True)
    else:
        # Connection events fire just before the commit; workers re-check shortly
        # after an empty wake-up, so the hint is not lost.
        event.listen(sync_obj, "commit", lambda _c: callback(), once=True)


# -- Django's connection, borrowed --------------------------------------------------------
class _Borrowed:
    """Django's DB-API connection as SQLAlchemy's pool sees it: everything passes
    through but ending it (Django owns its transaction and its life), and its cursors
    are the driver's own, as on errands' own connections (not Django's wrappers, which
    rewrite every statement's placeholders)."""

    __slots__ = ("_cursor", "_raw")

    def __init__(self, raw: Any, vendor: str) -> None:
        self._raw = raw
        if vendor == "sqlite":
            import sqlite3

            self._cursor: Callable[[], Any] = lambda: sqlite3.Cursor(raw)
        else:
            import psycopg

            self._cursor = lambda: psycopg.Cursor(raw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def cursor(self) -> Any:
        return self._cursor()

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


_engines: dict[tuple[str, str], Engine] = {}
_engines_lock = threading.Lock()
_lent = threading.local()


def _engine_for(vendor: str, alias: str) -> Engine:
    """One SQLAlchemy engine per Django alias, whose "pool" lends the connection Django
    holds in the calling thread (``_lent.raw`` while it connects)."""
    key = (vendor, alias)
    engine = _engines.get(key)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(key)
            if engine is None:
                url = "sqlite://" if vendor == "sqlite" else "postgresql+psycopg://"
                # (psycopg's type lookup would need the connection itself, not the proxy)
                extra = {} if vendor == "sqlite" else {"use_native_hstore": False}
                engine = create_engine(
                    url,
                    **extra,
                    creator=lambda: _Borrowed(_lent.raw, vendor),
                    poolclass=NullPool,
                    pool_reset_on_return=None,
                    json_serializer=json_text,
                )
                _engines[key] = engine
    return engine


def _sqlalchemy_connection(vendor: str, alias: str, raw: Any) -> Connection:
    """The thread's SQLAlchemy ``Connection`` on Django's ``raw`` connection, made once
    per raw connection (making one costs more than the insert it serves)."""
    held: dict[str, tuple[Any, Connection]] = _lent.__dict__.setdefault("held", {})
    found = held.get(alias)
    if found is not None and found[0] is raw:
        return found[1]
    _lent.raw = raw
    try:
        conn = _engine_for(vendor, alias).connect()
    finally:
        _lent.raw = None
    held[alias] = (raw, conn)
    return conn


@contextlib.contextmanager
def borrowed(django_connection: Any, *, one_statement: bool = False) -> Iterator[Connection]:
    """A SQLAlchemy ``Connection`` on the DB-API connection Django holds for this thread
    and ``django_connection``'s alias, inside one transaction: the caller's
    ``atomic()`` block when there is one, else one of errands' own (committed when the
    block ends, rolled back if it raises) — except for ``one_statement`` on PostgreSQL,
    which runs in Django's autocommit as it is (one round trip)."""
    vendor = django_connection.vendor
    if vendor not in ("sqlite", "postgresql"):
        raise TypeError(f"errands runs on SQLite and PostgreSQL, not on Django's {vendor!r}")
    django_connection.ensure_connection()
    raw = django_connection.connection
    own = not django_connection.in_atomic_block
    if own and one_statement and vendor == "postgresql":
        own = False  # autocommit: the one statement is its own transaction
    elif own:
        django_connection.validate_no_broken_transaction()
    conn = _sqlalchemy_connection(vendor, django_connection.alias, raw)
    try:
        if not own:
            yield conn
            return
        if vendor == "sqlite":
            from .database import _begin_immediate

            _begin_immediate(raw)  # Django's connection is in autocommit mode here
        else:
            raw.autocommit = False
        try:
            yield conn
        except BaseException:
            raw.rollback()
            raise
        else:
            raw.commit()
        finally:
            if vendor == "postgresql":
                raw.autocommit = True
    finally:
        conn.rollback()  # SQLAlchemy's own state only: the proxy's rollback does nothing

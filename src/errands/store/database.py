"""Opening the database: engines, SQLite settings, transactions, migrations.

Every store function is a plain synchronous function that takes a SQLAlchemy
``Connection`` already inside a transaction. :class:`Database` runs them: directly in
the calling thread (the sync facade), or on a small thread pool for async callers, one
thread hop per store call however many statements it runs.

SQLite: WAL journal, ``synchronous=FULL`` by default (every commit survives a power
loss; ``?synchronous=normal`` in the URL trades that for speed, still safe against a
crashed process), a 30 s busy timeout, and write transactions opened with
``BEGIN IMMEDIATE`` so two writers never deadlock upgrading a read lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import random
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.pool import StaticPool

from ..errors import ConfigurationError

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_URL = "sqlite:///errands.db"
VERSION_TABLE = "errands_alembic_version"
_SQLITE_SYNC = {"full": "FULL", "normal": "NORMAL", "off": "OFF", "extra": "EXTRA"}


def resolve_url(url: str | URL | None) -> URL:
    """The database URL: the argument, else ``$ERRANDS_DATABASE_URL``, else the default."""
    raw = url if url is not None else os.environ.get("ERRANDS_DATABASE_URL") or DEFAULT_URL
    try:
        parsed = make_url(raw)
    except Exception as exc:  # sqlalchemy raises ArgumentError with the URL in it
        raise ConfigurationError("the database URL is not valid") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


_WRITE_WAIT = 30.0  # seconds a writer waits for SQLite's write lock before giving up
_PING_AFTER_IDLE = 1.0  # seconds in the pool after which a PostgreSQL connection is pinged


def _begin_immediate(dbapi_conn: Any) -> None:
    """Take SQLite's write lock, polling every few hundred microseconds.

    SQLite's own busy handler sleeps longer and longer (up to 100 ms a try) while the
    lock is taken, so under steady contention a waiting writer can lose the race for a
    second or more. Polling with short randomised sleeps keeps the wait close to the
    time the lock is actually held.
    """
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA busy_timeout=0")
        deadline = time.monotonic() + _WRITE_WAIT
        pause = 0.0001
        while True:
            try:
                cur.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.002)
    finally:
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()


def is_unavailable(exc: BaseException) -> bool:
    """True for a failure of the database itself (down, restarting, connection cut,
    locked): the same call may well succeed later."""
    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def log_failure(logger: logging.Logger, exc: BaseException, message: str, *args: Any) -> None:
    """Log a failed store call: one line when the database is unavailable for a moment
    (the caller retries), the traceback otherwise."""
    if is_unavailable(exc):
        reason = getattr(exc, "orig", None) or exc
        logger.warning(message + " (database unavailable: %s)", *args, reason)
    else:
        logger.error(message, *args, exc_info=exc)


class Database:
    """An engine plus the rules for running store functions on it."""

    def __init__(self, url: str | URL | None = None, *, pool_size: int | None = None) -> None:
        self.url = resolve_url(url)
        self.dialect = self.url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"unsupported database {self.dialect!r} (sqlite or postgresql)"
            )
        self.engine = self._create_engine(pool_size)
        self._pool_size = pool_size
        # PostgreSQL: a second, smaller pool for writes whose loss only repeats work
        # (claims, heartbeats, progress), opened on first use; see _relaxed_engine.
        self._relaxed: Engine | None = None
        self._relaxed_lock = threading.Lock()
        size = pool_size or (4 if self.dialect == "sqlite" else 8)
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="errands-db")
        # SQLite has one writer at a time: async writes of this process go through one
        # thread, in order, instead of contending for the lock (and sleeping in
        # SQLite's busy handler).
        self._write_executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="errands-db-write")
            if self.dialect == "sqlite"
            else self._executor
        )
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    # -- engine -----------------------------------------------------------------------
    @property
    def is_memory(self) -> bool:
        return self.dialect == "sqlite" and self.url.database in (None, "", ":memory:")

    @property
    def sqlite_path(self) -> Path | None:
        if self.dialect != "sqlite" or self.is_memory:
            return None
        return Path(str(self.url.database)).resolve()

    def _create_engine(self, pool_size: int | None) -> Engine:
        if self.dialect != "sqlite":
            return self._create_postgres_engine(pool_size)
        query = dict(self.url.query)
        sync = str(query.pop("synchronous", "full")).lower()
        if sync not in _SQLITE_SYNC:
            raise ConfigurationError("synchronous must be one of full, normal, extra, off")
        url = self.url.set(query=query)
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30.0}}
        if self.is_memory:
            kwargs["poolclass"] = StaticPool
        else:
            kwargs["pool_size"] = pool_size or 4
            kwargs["max_overflow"] = 8
        engine = create_engine(url, **kwargs)
        memory = self.is_memory

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={_SQLITE_SYNC[sync]}")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.close()

        configured = _SQLITE_SYNC[sync]

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            options = conn.get_execution_options()
            if not options.get("errands_write", False):
                conn.exec_driver_sql("BEGIN")
                return
            dbapi_conn: Any = conn.connection.dbapi_connection
            info = conn.connection.info
            # A write that may be lost on power failure (a claim, a heartbeat, progress:
            # losing one only repeats work) skips the fsync; the next durable commit
            # syncs the WAL up to it, so commits still reach the disk in order.
            level = configured if options.get("errands_durable", True) else "NORMAL"
            if configured == "FULL" and info.get("errands_sync", configured) != level:
                dbapi_conn.execute(f"PRAGMA synchronous={level}")
                info["errands_sync"] = level
            _begin_immediate(dbapi_conn)

        return engine

    def libpq_conninfo(self) -> str:
        """The URL as libpq reads it (for connections outside the pool: LISTEN/NOTIFY)."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def _relaxed_engine(self) -> Engine:
        """PostgreSQL's counterpart of SQLite's skipped fsync: connections with
        ``synchronous_commit=off``, for writes whose loss on a server crash only repeats
        work. Their commits return without waiting for the WAL flush; WAL order still
        holds, so the next durable commit (an outcome, a submit) makes them durable too.
        A pool of its own, so no statement is spent switching a connection's setting."""
        if self._relaxed is None:
            with self._relaxed_lock:
                if self._relaxed is None:
                    self._relaxed = self._create_postgres_engine(
                        max(2, (self._pool_size or 8) // 2),
                        options="-c synchronous_commit=off",
                    )
        return self._relaxed

    def _create_postgres_engine(self, pool_size: int | None, options: str | None = None) -> Engine:
        """PostgreSQL: a pool of ``pool_size`` (default 8) connections plus 4 overflow.

        Every round trip counts (about 0.1–0.2 ms each here), so: reads run in
        autocommit mode (no BEGIN/COMMIT around a lone SELECT; at READ COMMITTED a
        transaction would not give several SELECTs one snapshot anyway), and a
        connection is pinged only when it sat idle in the pool for over a second — a
        busy one has just proved it is alive. A connection that dies in use (a server
        restart) invalidates the whole pool: the operation fails once (reads are retried
        at once), and the next checkouts open fresh connections.
        """
        if options and isinstance(self.url.query.get("options"), str):
            options = f"{self.url.query['options']} {options}"  # keep the URL's own
        engine = create_engine(
            self.url,
            pool_size=pool_size or 8,
            max_overflow=4,
            connect_args={"options": options} if options else {},
        )

        @event.listens_for(engine, "checkin")
        def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
            record.info["errands_idle_since"] = time.monotonic()

        @event.listens_for(engine, "checkout")
        def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
            idle_since = record.info.get("errands_idle_since")
            if idle_since is None or time.monotonic() - idle_since < _PING_AFTER_IDLE:
                return
            try:
                dbapi_conn.execute("SELECT 1")
                dbapi_conn.rollback()
            except Exception as exc:
                raise DisconnectionError("a pooled connection is dead") from exc

        return engine

    # -- running store functions ------------------------------------------------------
    @contextlib.contextmanager
    def transaction(
        self, *, write: bool = True, durable: bool = True, autocommit: bool = False
    ) -> Iterator[Connection]:
        """A transaction on a pooled connection. ``durable=False`` marks a write whose
        loss on a power failure only repeats work (SQLite then skips its fsync).
        ``autocommit=True`` marks a write that is one statement, or statements that may
        commit one by one: PostgreSQL then runs them without BEGIN/COMMIT round trips
        (SQLite, whose transactions cost no round trip, ignores it)."""
        self.ensure_schema()
        relaxed = write and not durable and self.dialect == "postgresql"
        with (self._relaxed_engine() if relaxed else self.engine).connect() as conn:
            if write:
                conn.execution_options(errands_write=True, errands_durable=durable)
            if self.dialect == "postgresql" and (autocommit or not write):
                conn.execution_options(isolation_level="AUTOCOMMIT")
            with conn.begin():
                yield conn

    def read(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        try:
            with self.transaction(write=False) as conn:
                return fn(conn, *args, **kwargs)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        # The connection died under the read (the server restarted): the pool has
        # been invalidated; a read is safe to repeat once on a fresh connection.
        with self.transaction(write=False) as conn:
            return fn(conn, *args, **kwargs)

    def write(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        durable: bool = True,
        autocommit: bool = False,
        **kwargs: Any,
    ) -> T:
        with self.transaction(write=True, durable=durable, autocommit=autocommit) as conn:
            return fn(conn, *args, **kwargs)

    async def aread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self.read(fn, *args, **kwargs))

    async def awrite(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        durable: bool = True,
        autocommit: bool = False,
        then: Callable[[T], object] | None = None,
        **kwargs: Any,
    ) -> T:
        """``write`` on the write thread(s). ``then(result)`` runs on the same thread once
        the transaction has committed (for work that would block the event loop, such
        as sending notifications)."""

        def run() -> T:
            result = self.write(fn, *args, durable=durable, autocommit=autocommit, **kwargs)
            if then is not None:
                then(result)
            return result

        return await asyncio.get_running_loop().run_in_executor(self._write_executor, run)

    def close(self) -> None:
        self._write_executor.shutdown(wait=True)
        self._executor.shutdown(wait=True)
        self.engine.dispose()
        if self._relaxed is not None:
            self._relaxed.dispose()

    # -- schema -----------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Make sure the schema is at the newest migration.

        SQLite databases migrate themselves on first use (under a file lock, so two
        processes starting together migrate once). Other databases are migrated with
        ``errands migrate``; here they are only checked.
        """
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            from . import migrations

            if self.dialect == "sqlite":
                with self._migration_lock():
                    migrations.upgrade(self.engine)
            elif not migrations.is_current(self.engine):
                raise ConfigurationError(
                    "the errands schema is not up to date: run `errands migrate`"
                )
            self._schema_ready = True

    def migrate(self) -> None:
        """Apply every pending migration (``errands migrate``)."""
        from . import migrations

        with self._migration_lock():
            migrations.upgrade(self.engine)
        self._schema_ready = True

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        path = self.sqlite_path
        if path is None:
            yield
            return
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:16]
        lock_path = Path(tempfile.gettempdir()) / f"errands-migrate-{digest}.lock"
        with open(lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

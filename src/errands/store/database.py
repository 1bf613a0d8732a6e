"""Opening the database: engines, SQLite settings, transactions, migrations.

Every store function is a plain synchronous function that takes a SQLAlchemy
``Connection`` already inside a transaction. :class:`Database` runs them: directly in
the calling thread (the sync facade), or on a small thread pool for async callers, one
thread hop per store call however many statements it runs.

SQLite: WAL journal, ``synchronous=FULL`` by default (every commit survives a power
loss; ``?synchronous=normal`` in the URL trades that for speed, still safe against a
crashed process), a 30 s busy timeout, and write transactions opened with
``BEGIN IMMEDIATE`` so two writers never deadlock upgrading a read lock.

Database failures leave here as errands errors (:func:`database_errors`): a database
that cannot serve now as :class:`~errands.errors.DatabaseUnavailable`, one out of space
as :class:`~errands.errors.StorageFull`, the driver's error as ``__cause__``.
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
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import StaticPool

from ..errors import ConfigurationError, DatabaseUnavailable, StorageFull
from .codec import json_text
from .driver import Driver
from .postgres import PostgresDriver
from .sqlite import SQLiteDriver

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
_IDLE_IN_TRANSACTION_MS = 10_000  # see _create_postgres_engine
#: The isolation level of PostgreSQL writes that need a transaction (the pools'
#: connections are otherwise in autocommit mode; see ``_create_postgres_engine``).
TRANSACTIONAL = "READ COMMITTED"


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
                contended = "locked" in str(exc) or "busy" in str(exc)
                if not contended or time.monotonic() > deadline:
                    raise
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.002)
    finally:
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()


# -- database failures as errands errors ------------------------------------------------
_LOCKED = "the database is busy with another writer; try again shortly"
_LOST = "the connection to the database was lost; try again shortly"
_UNREACHABLE = "the database cannot be reached; try again shortly"
_RESTARTING = "the database server is restarting; try again shortly"

_SQLITE_FULL = 13
#: SQLite's primary result codes of a database that cannot serve now, and what to say
#: (None: DatabaseUnavailable's own message). The rest — SQLITE_ERROR (a bad
#: statement), CORRUPT, CONSTRAINT, … — are not the database being away.
_SQLITE_UNAVAILABLE: dict[int, str | None] = {
    5: _LOCKED,  # BUSY: the write lock was still held after _WRITE_WAIT
    6: _LOCKED,  # LOCKED
    15: _LOCKED,  # PROTOCOL: lost a locking race in WAL mode
    14: _UNREACHABLE,  # CANTOPEN
    26: _UNREACHABLE,  # NOTADB: the URL names a file that is not a database
    7: None,  # NOMEM
    8: None,  # READONLY: a read-only file or file system
    10: None,  # IOERR
}

_PG_DISK_FULL = "53100"
#: PostgreSQL SQLSTATEs and SQLSTATE classes (two characters) of a server that cannot
#: serve now. Others (syntax, constraints, class 54 "program limit exceeded": a request
#: too large) are not the database being away.
_PG_UNAVAILABLE: dict[str, str | None] = {
    "08": _UNREACHABLE,  # connection exception
    "57": None,  # operator intervention: a statement cancelled, the database dropped
    "57P01": _RESTARTING,  # admin_shutdown (also what pg_terminate_backend sends)
    "57P02": _RESTARTING,  # crash_shutdown
    "57P03": _RESTARTING,  # cannot_connect_now: starting up
    "58": None,  # system error: I/O
    "53200": None,  # out_of_memory
    "53300": None,  # too_many_connections
    "55P03": _LOCKED,  # lock_not_available
    "40001": None,  # serialization_failure: the transaction may simply be run again
    "40P01": None,  # deadlock_detected: likewise
    "25006": None,  # read_only_sql_transaction: a standby, during a failover
}


def _sqlite_error(error: sqlite3.Error) -> DatabaseUnavailable | StorageFull | None:
    code = getattr(error, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return None
    primary = code & 0xFF
    if primary == _SQLITE_FULL:
        return StorageFull()
    if primary in _SQLITE_UNAVAILABLE:
        return DatabaseUnavailable(_SQLITE_UNAVAILABLE[primary])
    return None


def database_error(exc: BaseException) -> DatabaseUnavailable | StorageFull | None:
    """The errands error that a driver error amounts to, or None when it is not the
    database being away or full (a bad statement, a constraint, a bug: those stay as
    they are). Takes SQLAlchemy's errors and the drivers' own (the hot-path statements
    run on the DB-API cursor)."""
    if isinstance(exc, DisconnectionError | PoolTimeout):
        return DatabaseUnavailable(_LOST if isinstance(exc, DisconnectionError) else None)
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(orig, sqlite3.Error):
        return _sqlite_error(orig)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate == _PG_DISK_FULL:
        return StorageFull()
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return DatabaseUnavailable(_LOST)
    if isinstance(sqlstate, str) and sqlstate:
        key = next((k for k in (sqlstate, sqlstate[:2]) if k in _PG_UNAVAILABLE), None)
        return None if key is None else DatabaseUnavailable(_PG_UNAVAILABLE[key])
    # A DB-API OperationalError, whichever driver raised it (each has its own), with no
    # SQLSTATE: the client could not connect, or lost the connection.
    if any(cls.__name__ == "OperationalError" for cls in type(orig).__mro__):
        text = str(orig)
        lost = "lost" in text or "closed" in text
        return DatabaseUnavailable(_LOST if lost else _UNREACHABLE)
    return None


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """A context manager (or decorator) that raises :func:`database_error`'s errands
    error, from the driver's, in place of a driver error that is the database being
    away or full; everything else passes unchanged."""
    try:
        yield
    except BaseException as exc:
        if (error := database_error(exc)) is None:
            raise
        raise error from exc


def is_unavailable(exc: BaseException) -> bool:
    """True for a failure of the database itself (down, restarting, connection cut,
    locked, full): the same call may well succeed later. Takes the errands errors and
    the driver errors that become them."""
    return isinstance(exc, DatabaseUnavailable | StorageFull) or database_error(exc) is not None


def driver_reason(exc: BaseException) -> str:
    """The driver's words for a database failure, on one line. For logs and the
    command line only: they may name hosts, files and statements."""
    if isinstance(exc, DatabaseUnavailable | StorageFull) and exc.__cause__ is not None:
        exc = exc.__cause__
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split()) or type(orig).__name__


def log_failure(logger: logging.Logger, exc: BaseException, message: str, *args: Any) -> None:
    """Log a failed store call: one line when the database is unavailable or full for
    a moment (the caller retries), the traceback otherwise."""
    error = exc if isinstance(exc, DatabaseUnavailable | StorageFull) else database_error(exc)
    if error is None:
        logger.error(message, *args, exc_info=exc)
        return
    state = "full" if isinstance(error, StorageFull) else "unavailable"
    logger.warning(message + f" (database {state}: %s)", *args, driver_reason(exc))


class Database:
    """An engine plus the rules for running store functions on it."""

    def __init__(self, url: str | URL | None = None, *, pool_size: int | None = None) -> None:
        self.url = resolve_url(url)
        self.dialect = self.url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"unsupported database {self.dialect!r} (sqlite or postgresql)"
            )
        #: The store operations on this database (``store/driver.py``).
        self.driver: Driver = SQLiteDriver() if self.dialect == "sqlite" else PostgresDriver()
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
        configured = _SQLITE_SYNC.get(str(query.pop("synchronous", "full")).lower())
        if configured is None:
            raise ConfigurationError("synchronous must be one of full, normal, extra, off")
        memory = self.is_memory
        pool: dict[str, Any] = (
            {"poolclass": StaticPool}
            if memory
            else {"pool_size": pool_size or 4, "max_overflow": 8}
        )
        engine = create_engine(
            self.url.set(query=query),
            connect_args={"check_same_thread": False, "timeout": 30.0},
            json_serializer=json_text,
            **pool,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={configured}")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.close()

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
        A pool of its own, so no statement is spent switching a connection's setting.

        Its statements are few and always the same (claims, heartbeats, progress), each
        a lookup by key or down one index whatever the values: they are planned once
        per connection (``plan_cache_mode=force_generic_plan``; left to itself,
        PostgreSQL planned the claim afresh on every run, 0.5 ms of its 1.5 ms)."""
        if self._relaxed is None:
            with self._relaxed_lock:
                if self._relaxed is None:
                    self._relaxed = self._create_postgres_engine(
                        max(2, (self._pool_size or 8) // 2),
                        options="-c synchronous_commit=off -c plan_cache_mode=force_generic_plan",
                    )
        return self._relaxed

    def _create_postgres_engine(self, pool_size: int | None, options: str | None = None) -> Engine:
        """PostgreSQL: a pool of ``pool_size`` (default 8) connections plus 4 overflow.

        Every round trip counts (about 0.1–0.2 ms each here), so: connections are in
        autocommit mode unless a write asks for a transaction (no BEGIN/COMMIT around a
        lone SELECT, nor around a write that is one statement; at READ COMMITTED a
        transaction would not give several SELECTs one snapshot anyway). Autocommit is
        the pool's default, not a setting switched at every checkout and back at every
        checkin (about 25 µs a use, in Python). A connection is pinged only when it sat
        idle in the pool for over a second — a busy one has just proved it is alive. A
        connection that dies in use (a server restart) invalidates the whole pool: the
        operation fails once (reads are retried at once), and the next checkouts open
        fresh connections.
        """
        # A transaction of errands' own never waits on its client for long; one that
        # does belongs to a process that was paused or hung mid-transaction, and its row
        # locks would keep the reaper (which passes over locked rows) from recovering
        # the tasks it ran. The server ends such a transaction after 10 s.
        options = (
            f"-c idle_in_transaction_session_timeout={_IDLE_IN_TRANSACTION_MS} {options or ''}"
        )
        if isinstance(self.url.query.get("options"), str):
            options = f"{self.url.query['options']} {options}"  # keep the URL's own
        engine = create_engine(
            self.url,
            pool_size=pool_size or 8,
            max_overflow=4,
            connect_args={"options": options.strip()},
            json_serializer=json_text,
            isolation_level="AUTOCOMMIT",
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
        if self.dialect != "postgresql":
            with self.engine.connect() as conn:
                if write:  # read by the SQLite engine's "begin" event
                    conn.execution_options(errands_write=True, errands_durable=durable)
                with conn.begin():
                    yield conn
            return
        relaxed = write and not durable
        with (self._relaxed_engine() if relaxed else self.engine).connect() as conn:
            if write and not autocommit:
                conn.execution_options(isolation_level=TRANSACTIONAL)
                with conn.begin():
                    yield conn
            else:  # the pool's autocommit: each statement commits as it completes
                yield conn

    def read(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(conn, *args, **kwargs)`` in a read transaction. Raises
        :class:`DatabaseUnavailable` or :class:`StorageFull` for a database that cannot
        serve it (see :func:`database_error`)."""
        with database_errors():
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
        """``fn(conn, *args, **kwargs)`` in a write transaction (nothing is written if
        it raises). Database failures as in :meth:`read`; a write is not repeated."""
        with (
            database_errors(),
            self.transaction(write=True, durable=durable, autocommit=autocommit) as conn,
        ):
            return fn(conn, *args, **kwargs)

    async def aread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self.read(fn, *args, **kwargs))

    async def awrite(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        then: Callable[[T], object] | None = None,
        **kwargs: Any,
    ) -> T:
        """``write`` (with its keywords: ``durable``, ``autocommit``) on the write
        thread(s). ``then(result)`` runs on the same thread once the transaction has
        committed (for work that would block the event loop, such as sending
        notifications)."""

        def run() -> T:
            result = self.write(fn, *args, **kwargs)
            if then is not None:
                then(result)
            return result

        return await asyncio.get_running_loop().run_in_executor(self._write_executor, run)

    async def arun(
        self, fn: Callable[..., T], /, *args: Any, write: bool = False, **kwargs: Any
    ) -> T:
        """Run ``fn`` — a plain function that calls ``read``/``write`` itself — on the
        database's threads: the write thread(s) when it writes (on SQLite, writes of this
        process go through one thread, in order), else the readers' pool."""
        executor = self._write_executor if write else self._executor
        return await asyncio.get_running_loop().run_in_executor(
            executor, lambda: fn(*args, **kwargs)
        )

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
        with self._schema_lock, database_errors():
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

        with self._migration_lock(), database_errors():
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

"""The ``Errands`` facade: task registry, submit / get / list / cancel / wait, workers.

The async methods are the core; ``app.sync`` offers the same methods to synchronous
code. Both run the same store functions (``errands.store``), the async ones on a small
thread pool, the sync ones in the calling thread.

Every method an end user's request can reach takes ``owner``. Pass the user's id; a
task of another owner raises :class:`TaskNotFound` exactly as a missing id does.
Administrative code (the CLI, admin pages) passes :data:`ANY_OWNER` instead.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar, overload

from pydantic import BaseModel
from sqlalchemy import Connection, event
from sqlalchemy.engine import URL

from .admin import Admin
from .blobs import DEFAULT_THRESHOLD, Blobs, BlobStore, LocalBlobStore, default_store
from .engines import Engine, SqlEngine
from .errors import (
    ConfigurationError,
    IdempotencyConflict,
    InvalidTransition,
    PayloadTooLarge,
    TaskNotFound,
    WaitTimeout,
)
from .events import Notifier, notifier_for
from .ids import is_task_id, new_task_id
from .observers import Observers
from .records import BlobRef, Change, OutputPage, Page, Progress, Status, TaskRecord
from .registry import (
    Backoff,
    Executor,
    Registry,
    TaskDefinition,
    check_running_cap,
    make_definition,
)
from .runtime import Runtime
from .store.database import Database, database_errors
from .store.values import NewTask
from .worker import Worker, WorkerSettings

F = TypeVar("F", bound=Callable[..., Any])


class _AnyOwner:
    def __repr__(self) -> str:
        return "ANY_OWNER"


#: Pass as ``owner=`` from administrative code to act on every owner's tasks.
ANY_OWNER: Any = _AnyOwner()

DEFAULT_MAX_PAYLOAD = 256 * 1024


def owner_filter(owner: object) -> str | None:
    """The owner to put in a query: a user's id, or None for :data:`ANY_OWNER`."""
    if owner is ANY_OWNER:
        return None
    if not isinstance(owner, str) or not owner:
        raise ValueError("owner must be a non-empty string (or ANY_OWNER for admin code)")
    if "\x00" in owner:
        raise ValueError("owner must not contain NUL characters")
    return owner


def task_scope(task_id: object, owner: object) -> str | None:
    """The owner filter of an owner-scoped call on ``task_id``; ``TaskNotFound`` for an id
    no task can have (of any type), as for a task that does not exist."""
    who = owner_filter(owner)
    if not isinstance(task_id, str) or not is_task_id(task_id):
        raise TaskNotFound()
    return who


def _now() -> float:
    return time.time()


def _as_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Errands:
    """An errands application: a database, an engine and the registered tasks.

    ``Errands("sqlite:///errands.db")``; with no URL, ``$ERRANDS_DATABASE_URL`` or
    ``sqlite:///errands.db``. Nothing connects until the first operation.
    """

    def __init__(
        self,
        database_url: str | URL | None = None,
        *,
        engine: str | Engine = "sql",
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        default_retention: timedelta | None = timedelta(days=7),
        pool_size: int | None = None,
        max_running_per_owner: int | None = None,
        blob_store: BlobStore | str | os.PathLike[str] | None = None,
        blob_threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        check_running_cap(max_running_per_owner)
        if isinstance(blob_threshold, bool) or not isinstance(blob_threshold, int):
            raise ConfigurationError("blob_threshold must be a number of bytes")
        db = Database(database_url, pool_size=pool_size)
        if engine == "sql":
            engine = SqlEngine()
        elif isinstance(engine, str):
            raise ConfigurationError(
                f"unknown engine {engine!r}: 'sql', or an engine object "
                "(errands.engines.celery.CeleryEngine)"
            )
        if blob_store is None:
            store: BlobStore = default_store(db.sqlite_path)
        elif isinstance(blob_store, str | os.PathLike):
            store = LocalBlobStore(blob_store)
        else:
            store = blob_store
        #: What the worker, the live views, the admin views and the engine share.
        self.runtime = Runtime(
            db=db,
            registry=Registry(),
            notifier=notifier_for(db),
            # Results and output items larger than ``blob_threshold`` bytes of JSON are
            # kept in ``blob_store`` (a ``BlobStore``, or a directory), not in the rows.
            blobs=Blobs(store, blob_threshold),
            observers=Observers(),
            publisher=engine,
            default_retention=default_retention,
            max_running_per_owner=max_running_per_owner,
        )
        self.engine: Engine = engine
        engine.attach(self.runtime)
        self.max_payload_bytes = max_payload_bytes
        self.watchers = Watchers(self)
        self.sync = SyncErrands(self)
        #: Views across every owner, for administrators (see ``errands.admin``).
        self.admin = Admin(self.runtime)

    # The runtime's parts, under the names the app has always had.
    @property
    def db(self) -> Database:
        return self.runtime.db

    @property
    def registry(self) -> Registry:
        return self.runtime.registry

    @property
    def notifier(self) -> Notifier:
        return self.runtime.notifier

    @property
    def blobs(self) -> Blobs:
        return self.runtime.blobs

    @property
    def observers(self) -> Observers:
        """Callbacks on lifecycle events in this process (see ``errands.observers``)."""
        return self.runtime.observers

    @property
    def default_retention(self) -> timedelta | None:
        return self.runtime.default_retention

    @property
    def max_running_per_owner(self) -> int | None:
        """How many of one owner's tasks of one name may run at once, for tasks that set
        no ``max_running_per_owner`` of their own (None: no limit)."""
        return self.runtime.max_running_per_owner

    # -- registering tasks -----------------------------------------------------------
    @overload
    def task(self, fn: F, /) -> TaskDefinition: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        max_attempts: int = 3,
        timeout: float | None = None,
        priority: int = 0,
        backoff: Backoff = 1.0,
        backoff_max: float = 300.0,
        executor: Executor | None = None,
        retention: timedelta | float | None = None,
        payload: type[BaseModel] | None = None,
        unique: bool = False,
        max_running_per_owner: int | None = None,
    ) -> Callable[[F], TaskDefinition]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        max_attempts: int = 3,
        timeout: float | None = None,
        priority: int = 0,
        backoff: Backoff = 1.0,
        backoff_max: float = 300.0,
        executor: Executor | None = None,
        retention: timedelta | float | None = None,
        payload: type[BaseModel] | None = None,
        unique: bool = False,
        max_running_per_owner: int | None = None,
    ) -> Any:
        """Register ``fn(ctx, payload)`` as a task.

        - ``max_attempts``: runs in all, counting retries (default 3).
        - ``timeout``: seconds per attempt; a timed-out attempt fails (and is retried
          while attempts remain).
        - ``priority``: higher runs first.
        - ``backoff``: base seconds of the exponential retry delay (with jitter), or a
          function ``attempt -> seconds``; ``backoff_max`` caps it.
        - ``executor``: ``"async"`` (coroutine functions, the default for them),
          ``"thread"`` (plain functions, their default) or ``"process"`` (CPU-bound
          plain functions, each attempt in a worker child process).
        - ``retention``: how long a finished record is kept (``timedelta`` or seconds;
          ``math.inf`` keeps it forever); default: the app's ``default_retention``.
        - ``payload``: the pydantic model of the payload; by default the annotation of
          the function's second parameter (a plain ``dict`` accepts any JSON object).
        - ``unique``: while a task of this name with an equal payload is queued or
          running for the same owner, submitting another returns that one instead.
        - ``max_running_per_owner``: at most this many tasks of this name run at once
          for one owner (the others wait their turn); default: the app's
          ``max_running_per_owner`` (None there: no limit).
        """

        def register(f: Callable[..., Any]) -> TaskDefinition:
            definition = make_definition(
                f,
                name=name,
                max_attempts=max_attempts,
                timeout=timeout,
                priority=priority,
                backoff=backoff,
                backoff_max=backoff_max,
                executor=executor,
                retention=retention,
                payload=payload,
                unique=unique,
                max_running_per_owner=max_running_per_owner,
            )
            self.registry.add(definition)
            return definition

        return register(fn) if fn is not None else register

    def expiry(self, name: str, now: float) -> datetime | None:
        """When a record of task ``name`` finished at ``now`` may be purged (None: never)."""
        return self.runtime.expiry(name, now)

    def running_caps(self, names: Sequence[str]) -> dict[str, int]:
        """Task name → how many of one owner's tasks of that name may run at once, for
        those of ``names`` that are limited."""
        return self.runtime.running_caps(names)

    # -- submit ----------------------------------------------------------------------
    def _prepare(
        self,
        name: str,
        payload: Any,
        owner: str,
        priority: int | None,
        run_at: datetime | timedelta | None,
        idempotency_key: str | None = None,
    ) -> tuple[TaskRecord, NewTask]:
        """Check a submit and build the record it creates, and what the store inserts."""
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str)
            or not 1 <= len(idempotency_key) <= 255
            or "\x00" in idempotency_key
        ):
            raise ValueError("idempotency_key must be a string of 1 to 255 characters")
        if not isinstance(owner, str) or not owner:
            raise ValueError("owner must be a non-empty string")
        owner_filter(owner)  # and without NUL characters
        if len(owner) > 255:
            raise ValueError("owner must be at most 255 characters")
        definition = self.registry.get(name)
        _, stored, size = definition.parse(payload)
        if size > self.max_payload_bytes:
            raise PayloadTooLarge(size, self.max_payload_bytes)
        now = _now()
        if run_at is None:
            start = now
        elif isinstance(run_at, timedelta):
            start = now + run_at.total_seconds()
        elif isinstance(run_at, datetime):
            if run_at.tzinfo is None:
                raise ValueError("run_at must be timezone-aware")
            start = run_at.timestamp()
        else:
            raise TypeError("run_at must be a datetime or a timedelta")
        prio = definition.priority if priority is None else int(priority)
        digest = None
        if idempotency_key is not None or definition.unique:
            digest = hashlib.sha256(
                json.dumps([name, stored], sort_keys=True, separators=(",", ":")).encode()
            ).hexdigest()
        task = NewTask(
            id=new_task_id(now),
            owner=owner,
            name=name,
            payload=stored,
            max_attempts=definition.max_attempts,
            priority=prio,
            run_at=start,
            created_at=now,
            idempotency_key=idempotency_key,
            request_hash=digest if idempotency_key is not None else None,
            unique_key=digest if definition.unique else None,
        )
        stamp = _as_datetime(now)
        record = TaskRecord(
            id=task.id,
            owner=owner,
            name=name,
            payload=stored,
            status=Status.QUEUED,
            progress=Progress(),
            result=None,
            error=None,
            attempts=0,
            max_attempts=definition.max_attempts,
            priority=prio,
            run_at=_as_datetime(start),
            cancel_requested=False,
            version=1,
            created_at=stamp,
            updated_at=stamp,
            started_at=None,
            finished_at=None,
            expires_at=None,
        )
        return record, task

    def _prepare_many(
        self,
        name: str,
        payloads: Iterable[Any],
        owner: str,
        priority: int | None,
        run_at: datetime | timedelta | None,
    ) -> tuple[builtins.list[TaskRecord], builtins.list[NewTask]]:
        """Every payload checked before anything is written: one bad one, none is."""
        if isinstance(payloads, (str, bytes, dict)):
            raise TypeError("payloads must be a list (or another iterable) of payloads")
        prepared = [self._prepare(name, p, owner, priority, run_at) for p in payloads]
        return [p[0] for p in prepared], [p[1] for p in prepared]

    @database_errors()  # also on a caller's connection (``connection=``)
    def _create(
        self, conn: Connection, tasks: Sequence[NewTask]
    ) -> builtins.list[TaskRecord | None]:
        """Insert the records and queue their work. Per task: None if it was inserted, or
        the record that already holds its idempotency or unique key."""
        found: builtins.list[TaskRecord | None] = []
        for task, held in zip(tasks, self.db.driver.task_create(conn, tasks), strict=True):
            if held is not None and task.idempotency_key and held[1] != task.request_hash:
                raise IdempotencyConflict()
            found.append(None if held is None else held[0])
        return found

    def _submitted(self, records: Sequence[TaskRecord]) -> None:
        if not records:
            return
        for record in records:
            self.observers.emit("submitted", record.id, record.name, record.status, None)
        with self.notifier.batch():  # both hints in one round trip
            self.engine.queued([(r.id, r.run_at.timestamp()) for r in records])
            self.notifier.publish_changes([Change.of(r) for r in records])

    async def submit(
        self,
        name: str,
        payload: Any = None,
        *,
        owner: str,
        priority: int | None = None,
        run_at: datetime | timedelta | None = None,
        connection: Any = None,
        idempotency_key: str | None = None,
    ) -> TaskRecord:
        """Create a task record for ``owner`` and queue it; returns the record.

        With ``idempotency_key=``: if this owner already has a record submitted under
        the key (for as long as that record exists), nothing is created and that record
        is returned — or :class:`IdempotencyConflict` raised when it was a different
        request (another name or payload). For a task declared ``unique=True``, an equal
        queued or running task of the owner is returned the same way.

        With ``connection=`` (a SQLAlchemy ``Connection``, ``Session``,
        ``AsyncConnection`` or ``AsyncSession`` on the same database) the record and
        its job are written in the caller's transaction: rolled back, nothing exists;
        committed, it runs. A database failure of errands' statements there raises
        :class:`DatabaseUnavailable` or :class:`StorageFull` too (roll back); the
        caller's own statements and its commit raise the driver's errors.
        """
        record, task = self._prepare(name, payload, owner, priority, run_at, idempotency_key)
        return (await self._write_new([record], [task], connection))[0]

    async def submit_many(
        self,
        name: str,
        payloads: Iterable[Any],
        *,
        owner: str,
        priority: int | None = None,
        run_at: datetime | timedelta | None = None,
        connection: Any = None,
    ) -> builtins.list[TaskRecord]:
        """Create one task of ``name`` per payload, all in one transaction; returns the
        records in the payloads' order. Every payload is validated first: if one is
        refused, nothing is written. ``connection=`` as for :meth:`submit`."""
        records, tasks = self._prepare_many(name, payloads, owner, priority, run_at)
        return await self._write_new(records, tasks, connection)

    async def _write_new(
        self,
        records: Sequence[TaskRecord],
        tasks: Sequence[NewTask],
        connection: Any,
    ) -> builtins.list[TaskRecord]:
        """Write new records (or find the ones holding their keys); the records."""
        if connection is None:
            found = await self.db.awrite(
                self._create,
                tasks,
                # One record is one statement on PostgreSQL: no BEGIN/COMMIT round trips.
                autocommit=_single(tasks),
                # Notifies from the write thread, without blocking the event loop.
                then=lambda found: self._submitted(_created(records, found)),
            )
            return _chosen(records, found)
        self.db.ensure_schema()
        results: builtins.list[TaskRecord | None] = []
        sync_obj = await _run_in_caller(
            connection, lambda conn: results.extend(self._create(conn, tasks))
        )
        _on_commit(sync_obj, partial(self._submitted, _created(records, results)))
        return _chosen(records, results)

    # -- reading -----------------------------------------------------------------------
    async def get(self, task_id: str, *, owner: str) -> TaskRecord:
        """The task's record; :class:`TaskNotFound` if there is none for this owner."""
        who = task_scope(task_id, owner)
        record = await self.db.aread(self.db.driver.task_get, task_id, who)
        if record is None:
            raise TaskNotFound()
        return await self._loaded(record)

    async def _loaded(self, record: TaskRecord) -> TaskRecord:
        """The record with its result loaded from the blob store if it is kept there
        (outside the database's transaction, in a thread: it may be megabytes)."""
        if isinstance(record.result, BlobRef):
            return await asyncio.to_thread(self.blobs.record, record)
        return record

    async def get_version(self, task_id: str, *, owner: str) -> int:
        """The task's version alone (cheap: for conditional reads and polling)."""
        who = task_scope(task_id, owner)
        version = await self.db.aread(self.db.driver.task_version, task_id, who)
        if version is None:
            raise TaskNotFound()
        return version

    async def get_many(self, task_ids: Sequence[str], *, owner: str) -> builtins.list[TaskRecord]:
        """The records among ``task_ids`` that exist for this owner (others are left out)."""
        who = owner_filter(owner)
        ids = [t for t in task_ids if isinstance(t, str) and is_task_id(t)]
        if not ids:
            return []
        records = await self.db.aread(self.db.driver.task_get_many, ids, who)
        return [await self._loaded(r) for r in records]

    async def list(
        self,
        *,
        owner: str,
        status: Status | str | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """The owner's tasks, newest first, ``limit`` (1–500) at a time."""
        args = _list_args(owner, status, name, limit, cursor)
        items, next_cursor = await self.db.aread(self.db.driver.task_list, **args)
        return Page([await self._loaded(r) for r in items], next_cursor)

    async def outputs(
        self, task_id: str, *, owner: str, after: int = 0, limit: int = 1000
    ) -> builtins.list[tuple[int, Any]]:
        """Items the task's current attempt emitted with sequence number greater than
        ``after`` (items of earlier attempts are not part of its output)."""
        return (await self.output_page(task_id, owner=owner, after=after, limit=limit)).items

    async def output_page(
        self, task_id: str, *, owner: str, after: int = 0, limit: int = 1000
    ) -> OutputPage:
        """``outputs`` with the current attempt's output floor (see ``OutputPage``)."""
        who = task_scope(task_id, owner)
        found = await self.db.aread(
            self.db.driver.output_page, task_id, who, after=after, limit=limit
        )
        if found is None:
            raise TaskNotFound()
        floor, items = found
        if any(isinstance(data, BlobRef) for _, data in items):
            items = await asyncio.to_thread(self.blobs.items, items)
        return OutputPage(floor, items)

    # -- changing --------------------------------------------------------------------
    def _cancel_op(
        self, conn: Connection, task_id: str, who: str | None
    ) -> tuple[TaskRecord | None, bool, bool]:
        now = _now()
        return self.db.driver.task_cancel(
            conn, task_id, who, _as_datetime(now), partial(self.expiry, now=now)
        )

    def _cancelled(self, record: TaskRecord | None, ask_worker: bool, ended: bool) -> TaskRecord:
        if record is None:
            raise TaskNotFound()
        if ended:  # a queued task: no worker will report it
            self.observers.emit("finished", record.id, record.name, record.status, None)
        if ask_worker:
            self.engine.request_cancel([record.id])
        self.notifier.publish_changes([Change.of(record)])
        return record

    async def cancel(self, task_id: str, *, owner: str) -> TaskRecord:
        """Cancel a task: a queued one at once, a running one as soon as its worker
        hears of it. A finished task is returned unchanged."""
        who = task_scope(task_id, owner)
        return self._cancelled(*await self.db.awrite(self._cancel_op, task_id, who))

    async def delete(self, task_id: str, *, owner: str) -> None:
        """Delete a finished task and its output (cancel it first if it is active)."""
        who = task_scope(task_id, owner)
        if not await self.db.awrite(self.db.driver.task_delete_finished, task_id, who):
            record = await self.get(task_id, owner=owner)
            raise _not_finished(record)
        await asyncio.to_thread(self.blobs.store.delete_tasks, [task_id])

    async def wait(
        self, task_id: str, *, owner: str, timeout: float | None = None, poll: float = 1.0
    ) -> TaskRecord:
        """Wait until the task is finished and return its record.

        Woken by change notifications; ``poll`` seconds is the fallback check interval.
        Raises :class:`WaitTimeout` (with ``.record``) after ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake() -> None:
            with _suppress_closed_loop():
                loop.call_soon_threadsafe(changed.set)

        deadline = None if timeout is None else loop.time() + timeout
        with self.watchers.watch(task_id, wake):
            while True:
                changed.clear()
                record = await self.get(task_id, owner=owner)
                if record.done:
                    return record
                wait_for = poll
                if deadline is not None:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise WaitTimeout(record)
                    wait_for = min(poll, remaining)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), wait_for)

    async def purge(self, *, batch: int = 500, limit: int | None = None) -> int:
        """Delete expired finished records, their outputs and blobs, ``batch`` rows per
        transaction (so no long lock stalls the workers). Returns how many went."""
        return await asyncio.to_thread(self.sync.purge, batch=batch, limit=limit)

    async def retry(self, task_id: str, *, owner: str) -> TaskRecord:
        """Submit a failed or cancelled task again, as a new task of the same owner,
        name, payload and priority; the new record."""
        old = await self.get(task_id, owner=owner)
        _check_retryable(old)
        return await self.submit(old.name, old.payload, owner=old.owner, priority=old.priority)

    # -- workers -----------------------------------------------------------------------
    def worker(self, **settings: Any) -> Worker:
        """A worker for this app; ``await worker.run()``. See :class:`WorkerSettings`."""
        return self.engine.worker(self.runtime, WorkerSettings(**settings))

    def run_worker(self, **settings: Any) -> None:
        """Run a worker in this thread until it is stopped (or drained, with burst)."""
        asyncio.run(self.worker(**settings).run())

    def migrate(self) -> None:
        """Bring the database schema to the newest migration."""
        self.db.migrate()

    def close(self) -> None:
        self.runtime.close()
        self.engine.close()
        self.notifier.close()
        self.db.close()


def _list_args(
    owner: object, status: Status | str | None, name: str | None, limit: int, cursor: str | None
) -> dict[str, Any]:
    """Checked keyword arguments of the driver's ``task_list``."""
    if not 1 <= limit <= 500:
        raise ValueError("limit must be between 1 and 500")
    if cursor is not None and not is_task_id(cursor):
        raise ValueError("invalid cursor")
    if name is not None and "\x00" in name:
        raise ValueError("name must not contain NUL characters")
    return {
        "owner": owner_filter(owner),
        "status": Status(status) if status is not None else None,
        "name": name,
        "limit": limit,
        "cursor": cursor,
    }


def _check_retryable(record: TaskRecord) -> None:
    if record.status not in (Status.FAILED, Status.CANCELLED):
        raise InvalidTransition(
            f"only a failed or cancelled task can be retried; this one is {record.status.value}"
        )


def _not_finished(record: TaskRecord) -> Exception:
    return InvalidTransition(f"the task is {record.status.value}; cancel it before deleting it")


class _suppress_closed_loop:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is RuntimeError  # the waiting loop has closed


def _single(tasks: Sequence[NewTask]) -> bool:
    """One record without keys: one statement on PostgreSQL (run in autocommit)."""
    return len(tasks) == 1 and not tasks[0].keyed


def _created(
    records: Sequence[TaskRecord], found: Sequence[TaskRecord | None]
) -> builtins.list[TaskRecord]:
    """The records that were inserted (not found under their key)."""
    return [r for r, f in zip(records, found, strict=True) if f is None]


def _chosen(
    records: Sequence[TaskRecord], found: Sequence[TaskRecord | None]
) -> builtins.list[TaskRecord]:
    """Per submitted record, the one the caller gets: the record holding its key, if any."""
    return [f or r for r, f in zip(records, found, strict=True)]


async def _run_in_caller(connection: Any, fn: Callable[[Connection], None]) -> Any:
    """Run ``fn`` on the caller's connection or session; return the sync object whose
    commit means the work is durable."""
    if type(connection).__module__.startswith("sqlalchemy.ext.asyncio"):
        # Only callers on SQLAlchemy's asyncio extension (which needs greenlet) get here.
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

        if isinstance(connection, AsyncSession):
            await connection.run_sync(lambda s: fn(s.connection()))
            return connection.sync_session
        if isinstance(connection, AsyncConnection):
            await connection.run_sync(fn)
            return connection.sync_connection
    return run_in_caller_sync(connection, fn)


def run_in_caller_sync(connection: Any, fn: Callable[[Connection], None]) -> Any:
    from sqlalchemy.orm import Session

    if isinstance(connection, Session):
        fn(connection.connection())
        return connection
    if isinstance(connection, Connection):
        fn(connection)
        return connection
    raise TypeError("connection must be a SQLAlchemy Connection, Session or their async forms")


def _on_commit(sync_obj: Any, callback: Callable[[], None]) -> None:
    """Call ``callback`` when the caller's transaction commits."""
    from sqlalchemy.orm import Session

    if isinstance(sync_obj, Session):
        event.listen(sync_obj, "after_commit", lambda _s: callback(), once=True)
    else:
        # Connection events fire just before the commit; workers re-check shortly
        # after an empty wake-up, so the hint is not lost.
        event.listen(sync_obj, "commit", lambda _c: callback(), once=True)


class Watchers:
    """Routes change notifications to whoever waits on a task, in this process."""

    def __init__(self, app: Errands) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._by_task: dict[str, set[Callable[[], None]]] = {}
        self._subscription: Any = None

    def watch(self, task_id: str, callback: Callable[[], None]) -> _Watch:
        with self._lock:
            if self._subscription is None:
                self._subscription = self._app.notifier.subscribe_changes(self._on_changes)
            self._by_task.setdefault(task_id, set()).add(callback)
        return _Watch(self, task_id, callback)

    def _unwatch(self, task_id: str, callback: Callable[[], None]) -> None:
        with self._lock:
            callbacks = self._by_task.get(task_id)
            if callbacks is not None:
                callbacks.discard(callback)
                if not callbacks:
                    del self._by_task[task_id]

    def _on_changes(self, changes: Sequence[Change]) -> None:
        with self._lock:
            hits = [cb for c in changes for cb in self._by_task.get(c.task_id, ())]
        for cb in hits:
            cb()


class _Watch:
    def __init__(self, watchers: Watchers, task_id: str, callback: Callable[[], None]) -> None:
        self._watchers, self._task_id, self._callback = watchers, task_id, callback

    def __enter__(self) -> _Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._watchers._unwatch(self._task_id, self._callback)


class SyncErrands:
    """The same operations for synchronous code: ``app.sync.submit(...)``."""

    def __init__(self, app: Errands) -> None:
        self._app = app

    def submit(
        self,
        name: str,
        payload: Any = None,
        *,
        owner: str,
        priority: int | None = None,
        run_at: datetime | timedelta | None = None,
        connection: Any = None,
        idempotency_key: str | None = None,
    ) -> TaskRecord:
        app = self._app
        record, task = app._prepare(name, payload, owner, priority, run_at, idempotency_key)
        return self._write_new([record], [task], connection)[0]

    def submit_many(
        self,
        name: str,
        payloads: Iterable[Any],
        *,
        owner: str,
        priority: int | None = None,
        run_at: datetime | timedelta | None = None,
        connection: Any = None,
    ) -> builtins.list[TaskRecord]:
        records, tasks = self._app._prepare_many(name, payloads, owner, priority, run_at)
        return self._write_new(records, tasks, connection)

    def _write_new(
        self,
        records: Sequence[TaskRecord],
        tasks: Sequence[NewTask],
        connection: Any,
    ) -> builtins.list[TaskRecord]:
        app = self._app
        if connection is None:
            found = app.db.write(app._create, tasks, autocommit=_single(tasks))
            app._submitted(_created(records, found))
            return _chosen(records, found)
        app.db.ensure_schema()
        results: builtins.list[TaskRecord | None] = []
        sync_obj = run_in_caller_sync(
            connection, lambda conn: results.extend(app._create(conn, tasks))
        )
        _on_commit(sync_obj, partial(app._submitted, _created(records, results)))
        return _chosen(records, results)

    def get(self, task_id: str, *, owner: str) -> TaskRecord:
        who = task_scope(task_id, owner)
        record = self._app.db.read(self._app.db.driver.task_get, task_id, who)
        if record is None:
            raise TaskNotFound()
        return self._app.blobs.record(record)

    def list(
        self,
        *,
        owner: str,
        status: Status | str | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        args = _list_args(owner, status, name, limit, cursor)
        items, next_cursor = self._app.db.read(self._app.db.driver.task_list, **args)
        return Page([self._app.blobs.record(r) for r in items], next_cursor)

    def outputs(
        self, task_id: str, *, owner: str, after: int = 0, limit: int = 1000
    ) -> builtins.list[tuple[int, Any]]:
        return self.output_page(task_id, owner=owner, after=after, limit=limit).items

    def output_page(
        self, task_id: str, *, owner: str, after: int = 0, limit: int = 1000
    ) -> OutputPage:
        who = task_scope(task_id, owner)
        found = self._app.db.read(
            self._app.db.driver.output_page, task_id, who, after=after, limit=limit
        )
        if found is None:
            raise TaskNotFound()
        return OutputPage(found[0], self._app.blobs.items(found[1]))

    def cancel(self, task_id: str, *, owner: str) -> TaskRecord:
        app = self._app
        who = task_scope(task_id, owner)
        return app._cancelled(*app.db.write(app._cancel_op, task_id, who))

    def delete(self, task_id: str, *, owner: str) -> None:
        who = task_scope(task_id, owner)
        if not self._app.db.write(self._app.db.driver.task_delete_finished, task_id, who):
            raise _not_finished(self.get(task_id, owner=owner))
        self._app.blobs.store.delete_tasks([task_id])

    def wait(
        self, task_id: str, *, owner: str, timeout: float | None = None, poll: float = 1.0
    ) -> TaskRecord:
        changed = threading.Event()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._app.watchers.watch(task_id, changed.set):
            while True:
                changed.clear()
                record = self.get(task_id, owner=owner)
                if record.done:
                    return record
                wait_for = poll
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise WaitTimeout(record)
                    wait_for = min(poll, remaining)
                changed.wait(wait_for)

    def purge(self, *, batch: int = 500, limit: int | None = None) -> int:
        return self._app.runtime.purge(now=_now(), batch=batch, limit=limit)

    def retry(self, task_id: str, *, owner: str) -> TaskRecord:
        old = self.get(task_id, owner=owner)
        _check_retryable(old)
        return self.submit(old.name, old.payload, owner=old.owner, priority=old.priority)

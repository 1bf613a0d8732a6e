"""The ``Errands`` facade: task registry, submit / get / list / cancel / wait, workers.

The async methods are the core API; ``app.sync`` offers the same methods to synchronous
code. Both delegate to the same operations (``errands.operations``): ``app.sync`` runs
them in the calling thread, the async methods on the database's threads.

Every method an end user's request can reach takes ``owner``. Pass the user's id; a
task of another owner raises :class:`TaskNotFound` exactly as a missing id does.
Administrative code (the CLI, admin pages) passes :data:`ANY_OWNER` instead.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar, overload

from pydantic import BaseModel
from sqlalchemy.engine import URL

from .admin import Admin
from .blobs import DEFAULT_THRESHOLD, Blobs, BlobStore, LocalBlobStore, default_store
from .engines import Engine, SqlEngine
from .errors import ConfigurationError, WaitTimeout
from .events import Notifier, notifier_for
from .observers import Observers
from .operations import (
    ANY_OWNER,
    Operations,
    chosen,
    count_args,
    list_args,
    owner_filter,
    task_scope,
)
from .owners import owner_of
from .records import Change, OutputPage, Page, Status, TaskRecord
from .registry import (
    Backoff,
    DeclaredSchedule,
    Executor,
    Registry,
    TaskDefinition,
    check_running_cap,
    make_definition,
)
from .runtime import Runtime
from .schedules.service import (
    DEFAULT_MAX_PER_OWNER,
    DEFAULT_MIN_INTERVAL,
    ScheduleLimits,
    ScheduleOperations,
    Schedules,
    SyncSchedules,
)
from .schedules.timing import timing
from .store.callers import is_async_caller, on_commit, run_in_caller
from .store.database import Database
from .store.values import NewTask
from .submission import prepare_group, prepare_many
from .watchers import Watchers
from .worker import Worker, WorkerSettings

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["ANY_OWNER", "Errands", "SyncErrands", "owner_filter", "task_scope"]


DEFAULT_MAX_PAYLOAD = 256 * 1024
#: The owner of schedules declared in code unless they name one.
SYSTEM_OWNER = "system"


def _schedule_limits(min_interval: timedelta | float, max_per_owner: int | None) -> ScheduleLimits:
    seconds = min_interval.total_seconds() if isinstance(min_interval, timedelta) else min_interval
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ConfigurationError("min_schedule_interval must be a timedelta or seconds, >= 0")
    if max_per_owner is not None and (
        isinstance(max_per_owner, bool) or not isinstance(max_per_owner, int) or max_per_owner < 1
    ):
        raise ConfigurationError("max_schedules_per_owner must be a positive integer or None")
    return ScheduleLimits(float(seconds), max_per_owner)


def _slice(record: TaskRecord, poll: float, deadline: float | None, now: float) -> float:
    """How long a ``wait`` sleeps next: ``poll``, cut at the deadline; ``WaitTimeout``
    once it has passed."""
    if deadline is None:
        return poll
    if deadline <= now:
        raise WaitTimeout(record)
    return min(poll, deadline - now)


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
        min_schedule_interval: timedelta | float = timedelta(seconds=DEFAULT_MIN_INTERVAL),
        max_schedules_per_owner: int | None = DEFAULT_MAX_PER_OWNER,
    ) -> None:
        check_running_cap(max_running_per_owner)
        limits = _schedule_limits(min_schedule_interval, max_schedules_per_owner)
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
        self._ops = Operations(self.runtime, engine)
        schedule_ops = ScheduleOperations(self.runtime, limits, max_payload_bytes)
        #: Users' schedules (owner-scoped, like tasks): create, list, get, pause,
        #: resume, delete. See :meth:`schedule` for schedules declared in code.
        self.schedules = Schedules(schedule_ops)
        self.watchers = Watchers(self.runtime.notifier)
        self.sync = SyncErrands(self, SyncSchedules(schedule_ops))
        #: Views across every owner, for administrators (see ``errands.admin``).
        self.admin = Admin(self.runtime)

    # The runtime's parts, under the names the app has always had (read through to the
    # runtime: it is their one home).
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

    def task(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
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
            definition = make_definition(f, **options)  # the options of the overload above
            self.registry.add(definition)
            return definition

        return register(fn) if fn is not None else register

    def schedule(
        self,
        name: str,
        payload: Any = None,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        owner: str = SYSTEM_OWNER,
        timezone: str = "UTC",
        key: str | None = None,
    ) -> DeclaredSchedule:
        """Declare, beside the task, a schedule that creates a task of ``name`` with
        ``payload`` on every tick of ``cron`` (five fields, read in ``timezone``) or
        every ``every`` (a ``timedelta`` or seconds), owned by ``owner``.

        Workers write the declared schedules to the database when they start (and
        every few seconds): a schedule removed from the code stops once no worker
        runs code that declares it, a changed one takes effect once every live worker
        declares it so (during a deploy the old definition stays). ``key`` names the
        schedule (default: the task's name); give one to each schedule of one task.
        Not subject to the limits on users' schedules."""
        definition = self.registry.get(name)
        when = timing(cron, every, timezone)
        _, stored, _ = definition.parse(payload)
        declared = DeclaredSchedule(
            key=name if key is None else key,
            name=name,
            payload=stored,
            owner=owner_of(owner),
            cron=when.cron,
            every=when.every,
            timezone=when.timezone,
        )
        if not isinstance(declared.key, str) or not 1 <= len(declared.key) <= 255:
            raise ConfigurationError("a schedule's key must be a string of 1 to 255 characters")
        self.registry.declare(declared)
        return declared

    def running_caps(self, names: Sequence[str]) -> dict[str, int]:
        """Task name → how many of one owner's tasks of that name may run at once, for
        those of ``names`` that are limited."""
        return self.runtime.running_caps(names)

    # -- submit ----------------------------------------------------------------------
    def _tasks(self, name: str, payloads: Iterable[Any], **options: Any) -> builtins.list[NewTask]:
        """The checked new tasks of a submit (nothing is written if one is refused)."""
        return prepare_many(self.registry, self.max_payload_bytes, name, payloads, **options)

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
        tasks = self._tasks(
            name,
            [payload],
            owner=owner,
            priority=priority,
            run_at=run_at,
            idempotency_key=idempotency_key,
        )
        return (await self._submit(tasks, connection))[0]

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
        tasks = self._tasks(name, payloads, owner=owner, priority=priority, run_at=run_at)
        return await self._submit(tasks, connection)

    def _group(
        self, name: str, payloads: Iterable[Any], owner: str, then: str | None, priority: int | None
    ) -> tuple[NewTask, builtins.list[NewTask], NewTask | None]:
        return prepare_group(
            self.registry,
            self.max_payload_bytes,
            name,
            payloads,
            owner=owner,
            then=then,
            priority=priority,
        )

    async def submit_group(
        self,
        name: str,
        payloads: Iterable[Any],
        *,
        owner: str,
        then: str | None = None,
        priority: int | None = None,
    ) -> TaskRecord:
        """Run one task of ``name`` per payload as one *group*; returns the group's own
        record, which is watched like any task (``get``, ``wait``, ``cancel``, the HTTP
        resource and its live events).

        The group is ``running`` while its parts run; its progress counts the parts that
        succeeded plus each running part's share done (it never goes back); its output
        holds every part's items as ``{"part", "task_id", "item"}``. It succeeds when
        every part has succeeded and then the ``then`` task (if any), which gets
        ``{"results": [...]}``, the parts' results in the payloads' order; the group's
        result is ``then``'s, else that list. A part that fails (after its retries) or
        is cancelled fails the group and cancels the other parts; cancelling the group
        cancels every part. Every payload is checked first: if one is refused, nothing
        is written. All of it is one transaction."""
        group, parts, follow = self._group(name, payloads, owner, then, priority)
        return await self.db.arun(self._ops.submit_group, group, parts, follow, write=True)

    async def parts(
        self, group_id: str, *, owner: str, after: int = -1, limit: int = 100
    ) -> builtins.list[TaskRecord]:
        """A group's parts in order (its ``then`` task last), ``limit`` (1–500) at a time
        after the place ``after`` (a part's ``group_index``); ``TaskNotFound`` when there
        is no such group for this owner."""
        return await self.db.arun(self._ops.parts, group_id, owner, after, limit)

    async def _submit(self, tasks: Sequence[NewTask], connection: Any) -> builtins.list[TaskRecord]:
        ops = self._ops
        if connection is None:
            return await self.db.arun(ops.submit, tasks, write=True)
        if not is_async_caller(connection):
            return ops.submit(tasks, connection)
        self.db.ensure_schema()
        results: builtins.list[TaskRecord | None] = []
        sync_obj = await run_in_caller(connection, lambda c: results.extend(ops.create(c, tasks)))
        records = chosen(tasks, results)
        on_commit(sync_obj, partial(ops.submitted, records, results))
        return records

    # -- reading -----------------------------------------------------------------------
    async def get(self, task_id: str, *, owner: str) -> TaskRecord:
        """The task's record; :class:`TaskNotFound` if there is none for this owner."""
        return await self.db.arun(self._ops.get, task_id, owner)

    async def get_version(self, task_id: str, *, owner: str) -> int:
        """The task's version alone (cheap: for conditional reads and polling)."""
        return await self.db.arun(self._ops.get_version, task_id, owner)

    async def get_many(self, task_ids: Sequence[str], *, owner: str) -> builtins.list[TaskRecord]:
        """The records among ``task_ids`` that exist for this owner (others are left out)."""
        return await self.db.arun(self._ops.get_many, task_ids, owner)

    async def list(
        self,
        *,
        owner: str,
        status: Status | str | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        is_group: bool | None = None,
    ) -> Page:
        """The owner's tasks, newest first, ``limit`` (1–500) at a time; only those of
        ``status``, of ``name``, and (``is_group``) only groups' own records (True) or
        all but them (False)."""
        args = list_args(owner, status, name, limit, cursor, is_group)
        return await self.db.arun(self._ops.list, args)

    async def count(
        self,
        *,
        owner: str,
        status: Status | str | None = None,
        name: str | None = None,
        is_group: bool | None = None,
    ) -> int:
        """How many tasks ``list`` pages through with the same filters (only the
        owner's: someone else's are never counted)."""
        args = count_args(owner, status, name, is_group)
        return await self.db.arun(self._ops.count, args)

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
        return await self.db.arun(self._ops.output_page, task_id, owner, after, limit)

    # -- changing --------------------------------------------------------------------
    async def cancel(self, task_id: str, *, owner: str) -> TaskRecord:
        """Cancel a task: a queued one at once, a running one as soon as its worker
        hears of it. A finished task is returned unchanged."""
        return await self.db.arun(self._ops.cancel, task_id, owner, write=True)

    async def delete(self, task_id: str, *, owner: str) -> None:
        """Delete a finished task and its output (cancel it first if it is active)."""
        await self.db.arun(self._ops.delete, task_id, owner, write=True)

    async def retry(self, task_id: str, *, owner: str) -> TaskRecord:
        """Submit a failed or cancelled task again, as a new task of the same owner,
        name, payload and priority; the new record."""
        old = await self.db.arun(self._ops.retryable, task_id, owner)
        return await self.submit(old.name, old.payload, owner=old.owner, priority=old.priority)

    async def wait(
        self, task_id: str, *, owner: str, timeout: float | None = None, poll: float = 1.0
    ) -> TaskRecord:
        """Wait until the task is finished and return its record.

        Woken by the change notification that says the task ended (the changes
        before it are not read: they would only cost a read while the task runs);
        ``poll`` seconds is the fallback check interval. Raises :class:`WaitTimeout`
        (with ``.record``) after ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake(change: Change) -> None:
            if change.status.done:
                with contextlib.suppress(RuntimeError):  # the waiting loop has closed
                    loop.call_soon_threadsafe(changed.set)

        deadline = None if timeout is None else loop.time() + timeout
        with self.watchers.watch(task_id, wake):
            while True:
                changed.clear()
                record = await self.get(task_id, owner=owner)
                if record.done:
                    return record
                wait_for = _slice(record, poll, deadline, loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), wait_for)

    async def purge(self, *, batch: int = 500, limit: int | None = None) -> int:
        """Delete expired finished records, their outputs and blobs, ``batch`` rows per
        transaction (so no long lock stalls the workers). Returns how many went."""
        return await asyncio.to_thread(self._ops.purge, batch, limit)

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


class SyncErrands:
    """The same operations for synchronous code: ``app.sync.submit(...)``."""

    def __init__(self, app: Errands, schedules: SyncSchedules) -> None:
        self._app = app
        self._ops = app._ops
        #: Users' schedules, as ``app.schedules`` for synchronous code.
        self.schedules = schedules

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
        tasks = self._app._tasks(
            name,
            [payload],
            owner=owner,
            priority=priority,
            run_at=run_at,
            idempotency_key=idempotency_key,
        )
        return self._ops.submit(tasks, connection)[0]

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
        tasks = self._app._tasks(name, payloads, owner=owner, priority=priority, run_at=run_at)
        return self._ops.submit(tasks, connection)

    def submit_group(
        self,
        name: str,
        payloads: Iterable[Any],
        *,
        owner: str,
        then: str | None = None,
        priority: int | None = None,
    ) -> TaskRecord:
        group, parts, follow = self._app._group(name, payloads, owner, then, priority)
        return self._ops.submit_group(group, parts, follow)

    def parts(
        self, group_id: str, *, owner: str, after: int = -1, limit: int = 100
    ) -> builtins.list[TaskRecord]:
        return self._ops.parts(group_id, owner, after, limit)

    def get(self, task_id: str, *, owner: str) -> TaskRecord:
        return self._ops.get(task_id, owner)

    def get_version(self, task_id: str, *, owner: str) -> int:
        return self._ops.get_version(task_id, owner)

    def get_many(self, task_ids: Sequence[str], *, owner: str) -> builtins.list[TaskRecord]:
        return self._ops.get_many(task_ids, owner)

    def list(
        self,
        *,
        owner: str,
        status: Status | str | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        is_group: bool | None = None,
    ) -> Page:
        return self._ops.list(list_args(owner, status, name, limit, cursor, is_group))

    def count(
        self,
        *,
        owner: str,
        status: Status | str | None = None,
        name: str | None = None,
        is_group: bool | None = None,
    ) -> int:
        return self._ops.count(count_args(owner, status, name, is_group))

    def outputs(
        self, task_id: str, *, owner: str, after: int = 0, limit: int = 1000
    ) -> builtins.list[tuple[int, Any]]:
        return self._ops.output_page(task_id, owner, after, limit).items

    def output_page(
        self, task_id: str, *, owner: str, after: int = 0, limit: int = 1000
    ) -> OutputPage:
        return self._ops.output_page(task_id, owner, after, limit)

    def cancel(self, task_id: str, *, owner: str) -> TaskRecord:
        return self._ops.cancel(task_id, owner)

    def delete(self, task_id: str, *, owner: str) -> None:
        self._ops.delete(task_id, owner)

    def retry(self, task_id: str, *, owner: str) -> TaskRecord:
        old = self._ops.retryable(task_id, owner)
        return self.submit(old.name, old.payload, owner=old.owner, priority=old.priority)

    def wait(
        self, task_id: str, *, owner: str, timeout: float | None = None, poll: float = 1.0
    ) -> TaskRecord:
        changed = threading.Event()

        def wake(change: Change) -> None:
            if change.status.done:  # as ``Errands.wait``
                changed.set()

        deadline = None if timeout is None else time.monotonic() + timeout
        with self._app.watchers.watch(task_id, wake):
            while True:
                changed.clear()
                record = self.get(task_id, owner=owner)
                if record.done:
                    return record
                changed.wait(_slice(record, poll, deadline, time.monotonic()))

    def purge(self, *, batch: int = 500, limit: int | None = None) -> int:
        return self._ops.purge(batch, limit)

"""``ErrandsBackend``: Django's tasks framework on errands.

``TASKS = {"default": {"BACKEND": "errands.django.ErrandsBackend"}}``. A function
decorated with Django's ``@task`` is registered as an errands task named by its module
path (``myapp.tasks.count_words``) when its module is imported; ``enqueue`` writes an
errands record on Django's own database connection (inside ``transaction.atomic()``,
with the view's rows), owned by :func:`~errands.django.current_owner`.

The record's payload is ``{"args": [...], "kwargs": {...}}``. A task that takes the
context gets an :class:`ErrandsTaskContext`: Django's ``TaskContext`` plus errands'
``progress()``, ``emit()`` and ``cancelled``.

``get_result`` reads within the current owner (the request's signed-in user, the
``owner()`` block, else the system owner): another owner's task does not exist, as
over HTTP. ``with owner(errands.ANY_OWNER)`` reads every owner's (administrative code).
"""

from __future__ import annotations

import builtins
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from pydantic import BaseModel, ConfigDict, Field

from ..app import Errands
from ..context import TaskContext as Context
from ..errors import TaskNotFound
from ..records import CANCELLED_ERROR, Status, TaskRecord
from ..registry import make_definition
from .owners import current_owner, reading_owner
from .tasks_compat import (
    BaseTaskBackend,
    InvalidTaskError,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
)

#: errands' statuses as Django's (which has no "cancelled": a cancelled task failed,
#: with ``errands.errors.TaskCancelled`` as its error).
STATUSES = {
    Status.QUEUED: TaskResultStatus.READY,
    Status.RUNNING: TaskResultStatus.RUNNING,
    Status.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    Status.FAILED: TaskResultStatus.FAILED,
    Status.CANCELLED: TaskResultStatus.FAILED,
}


#: The Django tasks registered with errands, by name (errands' registry holds the
#: functions that run them).
_TASKS: dict[str, Task] = {}
_LOCK = threading.Lock()


class Call(BaseModel):
    """The payload of a Django task's record: the arguments of its call."""

    model_config = ConfigDict(extra="forbid")

    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrandsTaskContext(TaskContext):  # type: ignore[misc]
    """Django's task context, with errands' handle on the running attempt."""

    errands: Context

    def progress(
        self, current: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Report progress (see :meth:`errands.TaskContext.progress`)."""
        self.errands.progress(current, total, message)

    def emit(self, item: Any) -> None:
        """Append an item to the task's output (see :meth:`errands.TaskContext.emit`)."""
        self.errands.emit(item)

    @property
    def cancelled(self) -> bool:
        return self.errands.cancelled

    def raise_if_cancelled(self) -> None:
        self.errands.raise_if_cancelled()


class ErrandsBackend(BaseTaskBackend):  # type: ignore[misc]
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        # Django makes one backend object per thread: the tasks are the process's.
        self._tasks = _TASKS

    @property
    def app(self) -> Errands:
        from .conf import get_app

        return get_app()

    # -- registering ---------------------------------------------------------------------
    def validate_task(self, task: Task) -> None:
        """Django's checks, then the task's registration with errands (Django calls this
        when ``@task`` makes the task, at import)."""
        super().validate_task(task)
        name = task.module_path
        if name in self._tasks:
            return
        with _LOCK:
            if name in self._tasks:
                return
            registry = self.app.registry
            if name in registry:
                raise InvalidTaskError(f"errands already has a task named {name!r}")
            registry.add(make_definition(_runner(self, task), name=name, payload=Call))
            self._tasks[name] = task

    def task_for(self, name: str) -> Task | None:
        """The Django task registered under ``name``."""
        return self._tasks.get(name)

    # -- enqueue ---------------------------------------------------------------------
    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        from django.db import connections

        from .conf import alias

        record = self.app.sync.submit(
            task.module_path,
            {"args": list(args), "kwargs": dict(kwargs)},
            owner=current_owner(),
            priority=task.priority,
            run_at=task.run_after,
            connection=connections[alias()],
        )
        return self.result_of(record, task)

    async def aenqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        # Django's connections belong to threads: the write runs on the one Django
        # gives sync code of this request (so it is inside the request's atomic blocks).
        return await sync_to_async(self.enqueue, thread_sensitive=True)(task, args, kwargs)

    # -- results ---------------------------------------------------------------------
    def get_result(self, result_id: str) -> TaskResult:
        try:
            record = self.app.sync.get(result_id, owner=reading_owner())
        except TaskNotFound:
            raise TaskResultDoesNotExist(result_id) from None
        task = self._tasks.get(record.name)
        if task is None:  # a task of errands' own (@app.task), not Django's
            raise TaskResultDoesNotExist(result_id)
        return self.result_of(record, task)

    async def aget_result(self, result_id: str) -> TaskResult:
        try:
            record = await self.app.get(result_id, owner=reading_owner())
        except TaskNotFound:
            raise TaskResultDoesNotExist(result_id) from None
        task = self._tasks.get(record.name)
        if task is None:
            raise TaskResultDoesNotExist(result_id)
        return self.result_of(record, task)

    def result_of(self, record: TaskRecord, task: Task) -> TaskResult:
        """The record as Django's ``TaskResult`` of ``task``."""
        payload = record.payload if isinstance(record.payload, dict) else {}
        errors = []
        if record.status in (Status.FAILED, Status.CANCELLED):
            error = record.error or (CANCELLED_ERROR if record.status is Status.CANCELLED else None)
            kind = error.type if error is not None else "TaskFailed"
            detail = record.error_detail or (f"{kind}: {error.message}" if error else kind)
            errors.append(TaskError(exception_class_path=_class_path(kind), traceback=detail))
        result = TaskResult(
            task=task,
            id=record.id,
            status=STATUSES[record.status],
            enqueued_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            last_attempted_at=record.started_at,
            args=list(payload.get("args", [])),
            kwargs=dict(payload.get("kwargs", {})),
            backend=self.alias,
            errors=errors,
            # errands counts attempts; Django counts the workers that ran them.
            worker_ids=["errands"] * record.attempts,
        )
        if record.status is Status.SUCCEEDED:
            object.__setattr__(result, "_return_value", record.result)
        return result


def _class_path(kind: str) -> str:
    """An exception class's import path from errands' error type (a class name)."""
    if isinstance(getattr(builtins, kind, None), type):
        return f"builtins.{kind}"
    from .. import errors

    if isinstance(getattr(errors, kind, None), type):
        return f"errands.errors.{kind}"
    return "errands.errors.TaskFailed"


def _runner(backend: ErrandsBackend, task: Task) -> Any:
    """The errands task function that runs Django's ``task``: as the task's owner (what
    it enqueues is theirs too), with a context when it takes one."""
    from .owners import owner

    def context(ctx: Context) -> ErrandsTaskContext:
        now: datetime | None = None
        result = TaskResult(
            task=task,
            id=ctx.task_id,
            status=TaskResultStatus.RUNNING,
            enqueued_at=now,
            started_at=now,
            finished_at=None,
            last_attempted_at=now,
            args=[],
            kwargs={},
            backend=backend.alias,
            errors=[],
            worker_ids=["errands"] * ctx.attempt,
        )
        return ErrandsTaskContext(task_result=result, errands=ctx)

    if task.takes_context:
        if _is_async(task):

            async def run_async_ctx(ctx: Context, payload: Call) -> Any:
                with owner(ctx.owner):
                    return await task.func(context(ctx), *payload.args, **payload.kwargs)

            return run_async_ctx

        def run_ctx(ctx: Context, payload: Call) -> Any:
            with owner(ctx.owner), _django_connections():
                return task.func(context(ctx), *payload.args, **payload.kwargs)

        return run_ctx
    if _is_async(task):

        async def run_async(ctx: Context, payload: Call) -> Any:
            with owner(ctx.owner):
                return await task.func(*payload.args, **payload.kwargs)

        return run_async

    def run(ctx: Context, payload: Call) -> Any:
        with owner(ctx.owner), _django_connections():
            return task.func(*payload.args, **payload.kwargs)

    return run


@contextlib.contextmanager
def _django_connections() -> Iterator[None]:
    """Around a task on a worker thread, what Django does around a request: drop the
    thread's database connections that are broken or past ``CONN_MAX_AGE`` (a server
    restart would otherwise leave the thread a dead one)."""
    from django.db import close_old_connections

    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


def _is_async(task: Task) -> bool:
    import inspect

    return inspect.iscoroutinefunction(task.func)

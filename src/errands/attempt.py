"""Running one attempt: start it, stop it, and say how it ended.

A ``Runner`` runs each attempt the way its task asks: coroutine functions on the
worker's event loop, plain functions in a thread of their own (so an abandoned thread
never blocks a slot), ``executor="process"`` functions in a child process
(``errands.process``). It stops an attempt by cancelling the coroutine, flagging the
thread (``ctx.cancelled``; a thread cannot be stopped from outside, so it is abandoned
after ``cancel_grace``, or at once when its lease is gone) or killing the process. When
the attempt is over it hands the worker an ``Outcome`` — or None when there is nothing
to write: the attempt is handed back (``StopReason.hands_back``) or its lease is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydantic import ValidationError

from .blobs import Blobs
from .context import TaskContext
from .errors import ErrandsError, Retry, TaskCancelled, TaskFailed, TaskTimeout
from .process import ProcessPool, RemoteError
from .records import CANCELLED_ERROR, Status, storable_json, storable_text
from .registry import TaskDefinition, compute_backoff
from .store.values import Claimed, Outcome, OutputItem

log = logging.getLogger("errands.worker")


class StopReason(enum.Enum):
    """Why an attempt is being stopped before it returned."""

    #: Its owner asked: it ends ``cancelled``.
    CANCEL = "cancel"
    #: It ran past its timeout: it fails (and is retried while attempts remain).
    TIMEOUT = "timeout"
    #: The worker is stopping: it is handed back, to run again from the start.
    SHUTDOWN = "shutdown"
    #: Its lease could not be renewed for most of a lease period: handed back too (if
    #: the lease is still this worker's when the database answers).
    FENCED = "fenced"
    #: Its lease is gone (another attempt may run): nothing more is written for it.
    LEASE_LOST = "lease lost"

    @property
    def hands_back(self) -> bool:
        return self in (StopReason.SHUTDOWN, StopReason.FENCED)

    @property
    def rank(self) -> int:
        """A later reason replaces an earlier one only if it ranks higher (a cancel and
        a shutdown rank lowest)."""
        return _RANK.get(self, 0)


_RANK = {StopReason.TIMEOUT: 1, StopReason.FENCED: 2, StopReason.LEASE_LOST: 3}

#: An output item not written yet, with its bytes for the blob store (None once stored
#: there, or for an item that goes in its row).
Unwritten = tuple[OutputItem, bytes | None]


@dataclass(eq=False)
class Attempt:
    """One attempt in progress in this worker."""

    job: Claimed
    definition: TaskDefinition
    ctx: TaskContext
    future: asyncio.Future[Any] | None = None
    #: Why the attempt is being stopped, once it is.
    stop_reason: StopReason | None = None
    settled: bool = False
    timer: asyncio.TimerHandle | None = None
    next_seq: int = 0
    #: Items taken from the context and not written yet.
    unflushed: list[Unwritten] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    #: When (monotonic) the statement that last granted or renewed the lease was sent:
    #: the lease runs at least ``lease_seconds`` from then.
    lease_at: float = field(default_factory=time.monotonic)

    @property
    def task_id(self) -> str:
        return self.job.task_id

    @property
    def floor(self) -> int:
        """The attempt's output floor: its fencing token (see ``store/driver.py``)."""
        return self.job.output_floor

    def take_outputs(self, blobs: Blobs) -> list[Unwritten]:
        """The items emitted since the last call (and any not written yet); an item too
        large for a row carries its blob key (``ref``) and bytes."""
        task_id = self.job.task_id
        for data in self.ctx._take_outputs():
            self.next_seq += 1
            big = blobs.encode(data)
            # A blob is named by the attempt too: a stale attempt's blob never replaces
            # one of the attempt that holds the lease (the rows would be refused; the
            # files are written first).
            ref = None if big is None else f"{task_id}/output-{self.next_seq}-{self.floor}"
            item = OutputItem(task_id, self.next_seq, data if big is None else None, ref)
            self.unflushed.append((item, big))
        out, self.unflushed = self.unflushed, []
        return out


#: Called once per attempt, when it is over: its outcome, or None (see the module
#: docstring).
Settle = Callable[[Attempt, Outcome | None], None]


class Runner:
    """Starts and stops the attempts of one worker (see the module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        blobs: Blobs,
        settle: Settle,
        *,
        cancel_grace: float,
        processes: int,
    ) -> None:
        self._loop = loop
        self._blobs = blobs
        self._settle = settle
        self._cancel_grace = cancel_grace
        self._process_slots = processes
        self._processes: ProcessPool | None = None

    def start(self, attempt: Attempt) -> None:
        job, definition, ctx = attempt.job, attempt.definition, attempt.ctx
        if job.cancel_requested:
            attempt.stop_reason = StopReason.CANCEL
            self._end(attempt, cancelled(attempt))
            return
        try:
            payload = definition.load(job.payload)
        except ValidationError:
            invalid = TaskFailed("the stored payload is no longer valid")
            self._end(attempt, failure(attempt, invalid, retry=False))
            return
        if definition.executor == "async":
            attempt.future = self._loop.create_task(definition.fn(ctx, payload))
        elif definition.executor == "thread":
            attempt.future = self._run_thread(definition, ctx, payload)
        else:
            if self._processes is None:
                self._processes = ProcessPool(self._loop, self._process_slots)
            attempt.future = self._processes.run(definition.fn, ctx, job.payload)
        attempt.future.add_done_callback(partial(self._on_done, attempt))
        if definition.timeout is not None:
            attempt.timer = self._loop.call_later(
                definition.timeout, self.stop, attempt, StopReason.TIMEOUT
            )

    def stop(self, attempt: Attempt, reason: StopReason) -> None:
        """Stop an attempt: cancel a coroutine, flag (then abandon) a thread, kill a
        process. It ends as stopped, however its function returns."""
        if attempt.settled or attempt.future is None:
            return
        if attempt.stop_reason is None or reason.rank > attempt.stop_reason.rank:
            attempt.stop_reason = reason
        attempt.ctx._request_cancel()
        kind = attempt.definition.executor
        if kind == "async":
            attempt.future.cancel()
            self._loop.call_later(self._cancel_grace, self.abandon, attempt)
        elif kind == "thread":
            if reason in (StopReason.TIMEOUT, StopReason.LEASE_LOST, StopReason.FENCED):
                # The thread runs on until it looks at ctx.cancelled; whatever it does
                # from now on is not written.
                self.abandon(attempt)
            else:
                self._loop.call_later(self._cancel_grace, self.abandon, attempt)
        elif self._processes is not None:
            self._processes.kill(attempt.task_id)

    def abandon(self, attempt: Attempt) -> None:
        """End a stopped attempt now, without waiting for its function any longer."""
        if not attempt.settled:
            self._end(attempt, stopped(attempt))

    def close(self) -> None:
        if self._processes is not None:
            self._processes.close()

    # -- how an attempt ended --------------------------------------------------------------
    def _end(self, attempt: Attempt, outcome: Outcome | None) -> None:
        if attempt.timer is not None:
            attempt.timer.cancel()
        self._settle(attempt, outcome)

    def _on_done(self, attempt: Attempt, future: asyncio.Future[Any]) -> None:
        if attempt.settled:
            return
        # Read even when it is not used, so asyncio does not report it as lost.
        exc = None if future.cancelled() else future.exception()
        if attempt.stop_reason is not None:  # told to stop: it ends as stopped
            outcome = stopped(attempt)
        elif future.cancelled() or (exc is not None and _was_cancelled(exc)):
            attempt.stop_reason = StopReason.CANCEL
            outcome = cancelled(attempt)
        elif exc is None:
            outcome = self._succeeded(attempt, future.result())
        else:
            outcome = failure(attempt, exc)
        self._end(attempt, outcome)

    def _succeeded(self, attempt: Attempt, value: Any) -> Outcome:
        try:
            result = storable_json(value)
        except Exception:
            failed = TaskFailed("the task's result is not JSON-serializable")
            return failure(attempt, failed, retry=False)
        outcome = Outcome(attempt.task_id, Status.SUCCEEDED, result=result, floor=attempt.floor)
        big = self._blobs.encode(result)
        if big is not None:  # kept in the blob store; the row holds its key
            outcome.result = None
            outcome.result_ref = f"{attempt.task_id}/result-{attempt.job.attempt}-{attempt.floor}"
            outcome.blob = big
        return outcome

    # -- executors ---------------------------------------------------------------------
    def _run_thread(
        self, definition: TaskDefinition, ctx: TaskContext, payload: Any
    ) -> asyncio.Future[Any]:
        loop = self._loop
        future: asyncio.Future[Any] = loop.create_future()

        def deliver(exc: BaseException | None, result: Any) -> None:
            if not future.done():
                if exc is None:
                    future.set_result(result)
                else:
                    future.set_exception(exc)

        def target() -> None:
            try:
                reply: tuple[BaseException | None, Any] = (None, definition.fn(ctx, payload))
            except BaseException as exc:
                reply = (exc, None)
            with contextlib.suppress(RuntimeError):  # the loop is gone: result ignored
                loop.call_soon_threadsafe(deliver, *reply)

        threading.Thread(target=target, name=f"errands-task-{ctx.task_id[:8]}", daemon=True).start()
        return future


# -- outcomes -------------------------------------------------------------------------------
def _was_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, RemoteError):
        return exc.kind == "cancelled"
    return isinstance(exc, TaskCancelled | asyncio.CancelledError)


def stopped(attempt: Attempt) -> Outcome | None:
    """How a stopped attempt ends: None when it is handed back or its lease is gone."""
    reason = attempt.stop_reason
    if reason is StopReason.LEASE_LOST or (reason is not None and reason.hands_back):
        return None
    if reason is StopReason.TIMEOUT:
        timeout = attempt.definition.timeout
        return failure(
            attempt, TaskTimeout(f"the task ran longer than its timeout of {timeout:g} s")
        )
    return cancelled(attempt)


def cancelled(attempt: Attempt) -> Outcome:
    return Outcome(
        attempt.task_id,
        Status.CANCELLED,
        error_type=CANCELLED_ERROR.type,
        error_message=CANCELLED_ERROR.message,
        floor=attempt.floor,
    )


def failure(attempt: Attempt, exc: BaseException, *, retry: bool = True) -> Outcome:
    """A failed attempt: retried while attempts remain (after the backoff, or the delay
    ``Retry`` asked for) unless ``retry`` is False or the task said so
    (``TaskFailed(retry=False)``); else the task fails."""
    job, definition = attempt.job, attempt.definition
    etype, message, detail = safe_error(exc)
    if isinstance(exc, RemoteError | TaskFailed):
        retry = retry and exc.retry
    retry_at = None
    if retry and job.attempt < job.max_attempts:
        delay = retry_delay(exc)
        if delay is None:
            delay = compute_backoff(definition.backoff, job.attempt, definition.backoff_max)
        retry_at = time.time() + delay
    else:
        if isinstance(exc, Retry) or (isinstance(exc, RemoteError) and exc.kind == "retry"):
            message = "the task asked to be retried, but its attempts are spent"
        log.warning("task %s (%s) failed: %s", job.task_id, job.name, etype)
    return Outcome(
        job.task_id,
        Status.FAILED if retry_at is None else Status.QUEUED,
        error_type=etype,
        error_message=message,
        error_detail=detail,
        retry_at=retry_at,
        floor=attempt.floor,
    )


def safe_error(exc: BaseException) -> tuple[str, str, str]:
    """(type, message, detail): the message is fit for the task's owner (only errands'
    own errors and ``TaskFailed`` carry their text; anything else is reported by type
    alone), the detail is the traceback, for administrators."""
    if isinstance(exc, RemoteError):
        message = exc.message if exc.safe else "the task failed unexpectedly"
        etype, detail = exc.type_name, exc.detail
    else:
        detail = "".join(traceback.format_exception(exc))
        etype = type(exc).__name__
        message = exc.message if isinstance(exc, ErrandsError) else "the task failed unexpectedly"
    return storable_text(etype), storable_text(message), storable_text(detail)


def retry_delay(exc: BaseException) -> float | None:
    """The delay a task asked for with ``raise Retry(delay=...)``, if any."""
    if isinstance(exc, Retry):
        return exc.delay
    if isinstance(exc, RemoteError) and exc.kind == "retry":
        return exc.retry_delay
    return None

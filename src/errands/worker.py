"""The worker: claims jobs with a lease, runs them, and records how they ended.

One asyncio loop per worker process. Coroutine tasks run on the loop, plain functions
in threads (one per attempt, so an abandoned thread never blocks a slot), and
``executor="process"`` tasks in child processes (see ``errands.process``).

Writes are batched without waiting: outcomes that finish while a write is in flight
go together in the next transaction (group commit), so a burst of short tasks costs a
few transactions, and a lone task is written at once. Progress is written at most once
per ``progress_interval`` per task, plus once with the outcome.

Lifecycle of an attempt: claim (record ``running``, lease held) → heartbeat renews the
lease and picks up cancel requests → outcome (``succeeded`` / ``failed`` /
``cancelled``, or ``queued`` again for a retry) written only while the lease is held.
If the worker dies, the lease expires and any worker's reaper requeues the task (or
fails it when its attempts are spent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import to_jsonable_python
from sqlalchemy import Connection

from .context import TaskContext
from .errors import ErrandsError, Retry, TaskCancelled, TaskFailed
from .records import Status
from .registry import TaskDefinition, compute_backoff
from .store import queue
from .store.queue import Change, Claimed, Outcome

if TYPE_CHECKING:
    from .app import Errands
    from .process import ProcessPool

log = logging.getLogger("errands.worker")


@dataclass
class WorkerSettings:
    #: Attempts run at once by this worker.
    concurrency: int = 8
    #: Run until no job is due and none is running, then return.
    burst: bool = False
    #: How long a claimed job stays leased without a heartbeat.
    lease_seconds: float = 30.0
    #: Seconds between heartbeats (lease renewal, cancel checks); default lease / 3.
    heartbeat_interval: float | None = None
    #: Fallback check for new work when no notification arrives.
    poll_interval: float = 1.0
    #: Minimum seconds between two progress writes of one task.
    progress_interval: float = 0.25
    #: On SIGTERM/SIGINT, how long running attempts may take to finish before they
    #: are stopped and handed back to the queue.
    shutdown_timeout: float = 30.0
    #: How long a plain function that ignores ``ctx.cancelled`` may go on before its
    #: attempt is recorded as cancelled anyway (its thread is abandoned).
    cancel_grace: float = 1.0
    #: Seconds between reaper passes (expired leases); default: the heartbeat interval.
    reap_interval: float | None = None
    #: Seconds between purges of expired records (0 disables).
    purge_interval: float = 300.0
    #: Task names to run; default: every registered task.
    names: Sequence[str] | None = None
    #: Stop gracefully on SIGTERM/SIGINT (needs the main thread).
    handle_signals: bool = True
    #: Import path of the app (``module:attr``), for process tasks' child processes.
    app_path: str | None = None
    worker_id: str | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if self.heartbeat_interval is None:
            self.heartbeat_interval = self.lease_seconds / 3
        if not 0 < self.heartbeat_interval < self.lease_seconds:
            raise ValueError("heartbeat_interval must be positive and shorter than the lease")
        if self.reap_interval is None:
            self.reap_interval = self.heartbeat_interval


@dataclass(eq=False)
class Execution:
    """One attempt in progress in this worker."""

    job: Claimed
    definition: TaskDefinition
    ctx: TaskContext
    future: asyncio.Future[Any] | None = None
    #: Why the attempt is being stopped: "cancel", "timeout", "lease", "shutdown".
    stop_reason: str | None = None
    settled: bool = False
    timer: asyncio.TimerHandle | None = None
    next_seq: int = 0
    unflushed: list[dict[str, Any]] = field(default_factory=list)

    def take_outputs(self) -> list[dict[str, Any]]:
        for item in self.ctx._take_outputs():
            self.next_seq += 1
            self.unflushed.append({"task_id": self.job.task_id, "seq": self.next_seq, "data": item})
        out, self.unflushed = self.unflushed, []
        return out


def _safe_error(exc: BaseException) -> tuple[str, str, str]:
    """(type, message, detail): the message is fit for the task's owner (only errands'
    own errors and ``TaskFailed`` carry their text; anything else is reported by type
    alone), the detail is the traceback, for administrators."""
    from .process import RemoteError

    if isinstance(exc, RemoteError):
        message = exc.message if exc.safe else "the task failed unexpectedly"
        return exc.type_name, message, exc.detail
    detail = "".join(traceback.format_exception(exc))
    if isinstance(exc, ErrandsError):
        return type(exc).__name__, exc.message, detail
    return type(exc).__name__, "the task failed unexpectedly", detail


def _retry_delay(exc: BaseException) -> float | None:
    """The delay a task asked for with ``raise Retry(delay=...)``, if any."""
    from .process import RemoteError

    if isinstance(exc, Retry):
        return exc.delay
    if isinstance(exc, RemoteError) and exc.type_name == "Retry":
        return exc.retry_delay
    return None


class Worker:
    def __init__(self, app: Errands, settings: WorkerSettings) -> None:
        self.app = app
        self.settings = settings
        self.id = settings.worker_id or (
            f"{socket.gethostname()[:30]}:{os.getpid()}:{os.urandom(3).hex()}"
        )
        self.names = list(settings.names or app.registry.names())
        for name in self.names:
            app.registry.get(name)  # UnknownTask early
        self._running: dict[str, Execution] = {}
        self._outcomes: list[tuple[Execution, Outcome]] = []
        self._releases: list[Execution] = []
        self._writing: set[str] = set()
        self._stopping = False
        self._forced = False
        self._processes: ProcessPool | None = None
        #: Attempts started since the worker began (for tests and stats).
        self.started = 0

    # -- public ------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop gracefully; a second call stops at once (attempts are handed back)."""
        if self._stopping:
            self._forced = True
        self._stopping = True
        with contextlib.suppress(AttributeError, RuntimeError):
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._outcome_ready = asyncio.Event()
        # Held while outcomes are written, so the final write at shutdown waits for one
        # in flight (cancelling the complete loop could otherwise drop its write).
        self._write_lock = asyncio.Lock()
        self._beat_now = asyncio.Event()
        await self._loop.run_in_executor(None, self.app.db.ensure_schema)
        subscription = self.app.notifier.listen_worker(self._on_jobs_hint, self._on_cancel_hint)
        handled = self._install_signals()
        background = [
            asyncio.create_task(self._complete_loop(), name="errands-complete"),
            asyncio.create_task(self._heartbeat_loop(), name="errands-heartbeat"),
            asyncio.create_task(self._flush_loop(), name="errands-flush"),
        ]
        log.info("worker %s started: %s", self.id, ", ".join(self.names))
        try:
            await self._claim_loop()
        finally:
            try:
                await self._shutdown()
            finally:
                for t in background:
                    t.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                subscription.close()
                for sig in handled:
                    self._loop.remove_signal_handler(sig)
                if self._processes is not None:
                    self._processes.close()
                log.info("worker %s stopped", self.id)

    # -- claiming ----------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        s = self.settings
        recheck = False
        while not self._stopping:
            free = s.concurrency - len(self._running)
            if free > 0:
                self._wake.clear()
                hinted, self._hinted = getattr(self, "_hinted", False), False
                claimed = await self.app.db.awrite(
                    queue.claim,
                    self.id,
                    names=self.names,
                    limit=free,
                    now=time.time(),
                    lease_seconds=s.lease_seconds,
                )
                for job in claimed:
                    self._start(job)
                if claimed:
                    continue
                if s.burst and not self._running and not self._writing:
                    # (an outcome still being written may be a retry that is due)
                    return
                if hinted and not recheck:
                    # The hint may have come just before its transaction committed.
                    recheck = True
                    await self._sleep_or_wake(0.02)
                    continue
                recheck = False
                due = await self.app.db.aread(queue.next_run_at, self.names)
                timeout = s.poll_interval
                if due is not None:
                    timeout = max(0.0, min(timeout, due - time.time()))
                await self._sleep_or_wake(timeout)
            else:
                # Every slot is busy: a job hint must not make this loop spin without
                # yielding (a set ``_wake`` returns at once); a settled attempt sets it
                # again after this.
                self._wake.clear()
                await self._sleep_or_wake(s.poll_interval)

    async def _sleep_or_wake(self, timeout: float) -> None:
        if timeout <= 0 or self._wake.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _on_jobs_hint(self) -> None:  # listener thread
        def hint() -> None:
            self._hinted = True
            self._wake.set()

        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(hint)

    def _on_cancel_hint(self, task_ids: Sequence[str]) -> None:  # listener thread
        # A hint only triggers a heartbeat, which reads the cancel flags from the database.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._beat_now.set)

    # -- running -----------------------------------------------------------------------
    def _start(self, job: Claimed) -> None:
        definition = self.app.registry.get(job.name)
        ctx = TaskContext(
            task_id=job.task_id,
            owner=job.owner,
            name=job.name,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
        )
        exe = Execution(job, definition, ctx, next_seq=job.last_seq)
        self._running[job.task_id] = exe
        self.started += 1
        if job.cancel_requested:
            exe.stop_reason = "cancel"
            self._settle(exe, self._cancelled(exe))
            return
        try:
            payload = definition.load(job.payload)
        except ValidationError:
            self._settle(
                exe,
                self._failure(
                    exe, TaskFailed("the stored payload is no longer valid"), retry=False
                ),
            )
            return
        loop = self._loop
        if definition.executor == "async":
            exe.future = loop.create_task(definition.fn(ctx, payload))
        elif definition.executor == "thread":
            exe.future = self._run_thread(definition, ctx, payload)
        else:
            exe.future = self._process_pool().run(exe, job.payload)
        exe.future.add_done_callback(partial(self._on_done, exe))
        if definition.timeout is not None:
            exe.timer = loop.call_later(definition.timeout, self._stop_attempt, exe, "timeout")

    def _run_thread(
        self, definition: TaskDefinition, ctx: TaskContext, payload: Any
    ) -> asyncio.Future[Any]:
        loop = self._loop
        future: asyncio.Future[Any] = loop.create_future()

        def deliver(ok: bool, value: Any) -> None:
            if future.done():
                return
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        def target() -> None:
            try:
                result = definition.fn(ctx, payload)
            except BaseException as exc:
                ok, value = False, exc
            else:
                ok, value = True, result
            with contextlib.suppress(RuntimeError):  # the loop is gone: result ignored
                loop.call_soon_threadsafe(deliver, ok, value)

        threading.Thread(target=target, name=f"errands-task-{ctx.task_id[:8]}", daemon=True).start()
        return future

    def _process_pool(self) -> ProcessPool:
        if self._processes is None:
            from .process import ProcessPool

            self._processes = ProcessPool(
                self._loop, self.settings.concurrency, self.settings.app_path
            )
        return self._processes

    def _stop_attempt(self, exe: Execution, reason: str) -> None:
        """Stop an attempt: cancel a coroutine, flag (then abandon) a thread, kill a process."""
        if exe.settled or exe.future is None:
            return
        if exe.stop_reason is None or reason in ("timeout", "lease"):
            exe.stop_reason = reason
        exe.ctx._request_cancel()
        kind = exe.definition.executor
        if kind == "async":
            exe.future.cancel()
            self._loop.call_later(self.settings.cancel_grace, self._force_settle, exe)
        elif kind == "thread":
            if reason in ("timeout", "lease"):
                self._force_settle(exe)
            else:
                self._loop.call_later(self.settings.cancel_grace, self._force_settle, exe)
        else:
            assert self._processes is not None
            self._processes.kill(exe)

    def _force_settle(self, exe: Execution) -> None:
        if not exe.settled:
            self._settle(exe, self._stopped_outcome(exe))

    def _on_done(self, exe: Execution, future: asyncio.Future[Any]) -> None:
        if exe.settled:
            return
        if exe.stop_reason is not None:
            # Once an attempt was told to stop, it ends as stopped however it returns.
            self._settle(exe, self._stopped_outcome(exe))
            return
        if future.cancelled():
            exe.stop_reason = "cancel"
            self._settle(exe, self._cancelled(exe))
            return
        exc = future.exception()
        if exc is None:
            try:
                result = to_jsonable_python(future.result())
            except Exception:
                failed = TaskFailed("the task's result is not JSON-serializable")
                self._settle(exe, self._failure(exe, failed, retry=False))
                return
            self._settle(exe, Outcome(exe.job.task_id, Status.SUCCEEDED, result=result))
        elif isinstance(exc, TaskCancelled | asyncio.CancelledError) or (
            getattr(exc, "type_name", None) == "TaskCancelled"
        ):
            exe.stop_reason = "cancel"
            self._settle(exe, self._cancelled(exe))
        else:
            self._settle(exe, self._failure(exe, exc))

    def _stopped_outcome(self, exe: Execution) -> Outcome | None:
        reason = exe.stop_reason
        if reason == "lease":
            return None  # the task belongs to another worker now
        if reason == "shutdown":
            self._releases.append(exe)
            return None
        if reason == "timeout":
            timeout = exe.definition.timeout
            from .errors import TaskTimeout

            return self._failure(
                exe, TaskTimeout(f"the task ran longer than its timeout of {timeout:g} s")
            )
        return self._cancelled(exe)

    def _cancelled(self, exe: Execution) -> Outcome:
        return Outcome(
            exe.job.task_id,
            Status.CANCELLED,
            error_type="Cancelled",
            error_message="the task was cancelled",
        )

    def _failure(self, exe: Execution, exc: BaseException, *, retry: bool = True) -> Outcome:
        job, definition = exe.job, exe.definition
        etype, message, detail = _safe_error(exc)
        if retry and job.attempt < job.max_attempts:
            delay = _retry_delay(exc)
            if delay is None:
                delay = compute_backoff(definition.backoff, job.attempt, definition.backoff_max)
            return Outcome(
                job.task_id,
                Status.QUEUED,
                error_type=etype,
                error_message=message,
                error_detail=detail,
                retry_at=time.time() + delay,
            )
        if etype == "Retry":
            message = "the task asked to be retried, but its attempts are spent"
        log.warning("task %s (%s) failed: %s", job.task_id, job.name, etype)
        return Outcome(
            job.task_id, Status.FAILED, error_type=etype, error_message=message, error_detail=detail
        )

    def _settle(self, exe: Execution, outcome: Outcome | None) -> None:
        exe.settled = True
        if exe.timer is not None:
            exe.timer.cancel()
        self._running.pop(exe.job.task_id, None)
        if outcome is not None:
            outcome.progress = exe.ctx._final_progress()
            if outcome.status.done:
                outcome.expires_at = self.app.expiry(exe.job.name, time.time())
            self._writing.add(exe.job.task_id)
            self._outcomes.append((exe, outcome))
            self._outcome_ready.set()
        elif exe in self._releases:
            self._outcome_ready.set()
        self._wake.set()

    # -- writing -----------------------------------------------------------------------
    def _finish_txn(
        self,
        conn: Connection,
        batch: list[tuple[Execution, Outcome]],
        outputs: list[dict[str, Any]],
        releases: list[str],
    ) -> list[Change]:
        now = time.time()
        queue.flush(conn, self.id, progress=[], outputs=outputs, now=now)
        changed = queue.finish(conn, self.id, [o for _, o in batch], now=now)
        if releases:
            changed += queue.release(conn, self.id, releases, now=now)
        return changed

    async def _complete_loop(self) -> None:
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            await self._write_outcomes()

    async def _write_outcomes(self) -> None:
        async with self._write_lock:
            await self._write_outcomes_locked()

    async def _write_outcomes_locked(self) -> None:
        batch, self._outcomes = self._outcomes, []
        releases, self._releases = self._releases, []
        if not batch and not releases:
            return
        outputs = [item for exe, _ in batch for item in exe.take_outputs()]
        release_ids = [exe.job.task_id for exe in releases]
        try:
            changed = await self.app.db.awrite(self._finish_txn, batch, outputs, release_ids)
        except Exception:
            log.exception("worker %s: writing %d outcomes failed; retrying", self.id, len(batch))
            for exe, _ in batch:
                exe.unflushed[:0] = [o for o in outputs if o["task_id"] == exe.job.task_id]
            self._outcomes[:0] = batch
            self._releases[:0] = releases
            await asyncio.sleep(0.5)
            self._outcome_ready.set()
            return
        for exe, _ in batch:
            self._writing.discard(exe.job.task_id)
        self._publish(changed)
        if releases:
            self.app.engine.after_commit(release_ids)

    def _publish(self, changed: Sequence[Change]) -> None:
        if changed:
            self.app.notifier.publish_changes(changed)

    async def _flush_loop(self) -> None:
        interval = self.settings.progress_interval
        while True:
            await asyncio.sleep(interval)
            progress: list[dict[str, Any]] = []
            outputs: list[dict[str, Any]] = []
            for exe in list(self._running.values()):
                p = exe.ctx._take_progress()
                if p is not None:
                    progress.append(
                        {
                            "task_id": exe.job.task_id,
                            "current": p[0],
                            "total": p[1],
                            "message": p[2],
                        }
                    )
                outputs.extend(exe.take_outputs())
            if not progress and not outputs:
                continue
            try:
                changed = await self.app.db.awrite(
                    queue.flush, self.id, progress=progress, outputs=outputs, now=time.time()
                )
            except Exception:
                log.exception("worker %s: writing progress failed", self.id)
                for item in outputs:
                    exe_ = self._running.get(item["task_id"])
                    if exe_ is not None:
                        exe_.unflushed.append(item)
                continue
            self._publish(changed)

    async def _heartbeat_loop(self) -> None:
        s = self.settings
        assert s.heartbeat_interval is not None and s.reap_interval is not None
        next_reap = time.monotonic()
        next_purge = time.monotonic() + s.purge_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), s.heartbeat_interval)
            self._beat_now.clear()
            try:
                await self._heartbeat()
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + s.reap_interval
                    await self._reap()
                if s.purge_interval and time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + s.purge_interval
                    await self.app.purge(batch=500, limit=10_000)
            except Exception:
                log.exception("worker %s: heartbeat failed", self.id)

    async def _heartbeat(self) -> None:
        ids = list(self._running) + [i for i in self._writing if i not in self._running]
        if not ids:
            return
        held, cancel = await self.app.db.awrite(
            queue.heartbeat, self.id, ids, lease_until=time.time() + self.settings.lease_seconds
        )
        asked = set(ids)
        for task_id, exe in list(self._running.items()):
            if task_id not in asked:
                continue  # claimed while this heartbeat was in flight: its lease is fresh
            if task_id not in held:
                log.warning("worker %s lost the lease of task %s", self.id, task_id)
                self._stop_attempt(exe, "lease")
            elif task_id in cancel:
                self._stop_attempt(exe, "cancel")

    async def _reap(self) -> None:
        now = time.time()
        changed = await self.app.db.awrite(
            queue.reap, now=now, expiry_for=partial(self.app.expiry, now=now)
        )
        if changed:
            log.warning("reaper recovered %d task(s) whose worker stopped", len(changed))
            self._publish(changed)
            if any(c.status is Status.QUEUED for c in changed):
                self.app.engine.after_commit([c.task_id for c in changed])

    # -- stopping ----------------------------------------------------------------------
    def _install_signals(self) -> list[int]:
        if (
            not self.settings.handle_signals
            or threading.current_thread() is not threading.main_thread()
        ):
            return []
        handled: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._loop.add_signal_handler(sig, self.stop)
                handled.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
        return handled

    async def _shutdown(self) -> None:
        self._stopping = True
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while self._running and not self._forced and time.monotonic() < deadline:
            self._wake.clear()
            await self._sleep_or_wake(min(0.1, deadline - time.monotonic()))
        for exe in list(self._running.values()):
            self._stop_attempt(exe, "shutdown")
            if exe.definition.executor != "async":
                self._force_settle(exe)
        until = time.monotonic() + 2 * self.settings.cancel_grace
        while self._running and time.monotonic() < until:
            self._wake.clear()
            await self._sleep_or_wake(until - time.monotonic())
        for exe in list(self._running.values()):
            self._force_settle(exe)
        await self._write_outcomes()

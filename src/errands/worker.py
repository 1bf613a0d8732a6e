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
Every write of an attempt is fenced by its lease (see ``store/driver.py``): a refused
write changes nothing, and the worker stops that attempt at once (a coroutine is
cancelled, a thread sees ``ctx.cancelled``, a process is killed). An attempt whose
lease could not be renewed for most of a lease period (the database is away, or this
process was paused) is stopped before the lease runs out, and handed back when the
database answers again: two live runs of one task overlap only when a worker was paused
past its lease, and then the stale run's writes are refused.

If the worker dies, any worker's reaper requeues the task (or fails it when its
attempts are spent): at once when the dead worker ran on the same host (its process is
gone, see ``errands.liveness``), else when its lease expires. The reaper runs when a
worker starts and every ``reap_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import Connection

from . import liveness
from .context import TaskContext
from .errors import ErrandsError, Retry, TaskCancelled, TaskFailed, TaskTimeout
from .records import CANCELLED_ERROR, Change, Status, storable_json, storable_text
from .registry import TaskDefinition, compute_backoff
from .store.database import is_unavailable, log_failure
from .store.values import Claimed, Outcome, OutputItem, Report

if TYPE_CHECKING:
    from .blobs import Blobs
    from .process import ProcessPool
    from .runtime import Runtime

log = logging.getLogger("errands.worker")


@dataclass
class WorkerSettings:
    #: Attempts run at once by this worker.
    concurrency: int = 16
    #: Run until no job is due and none is running, then return.
    burst: bool = False
    #: How long a claimed job stays leased without a heartbeat. A task whose worker
    #: died on another host runs again once its lease expires.
    lease_seconds: float = 15.0
    #: Seconds between heartbeats (lease renewal, cancel checks); default lease / 3,
    #: at most lease / 2.
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
    #: Seconds between reaper passes (expired leases, dead workers on this host);
    #: default: the heartbeat interval, at most 2 s.
    reap_interval: float | None = None
    #: Seconds between purges of expired records (0 disables).
    purge_interval: float = 300.0
    #: Task names to run; default: every registered task.
    names: Sequence[str] | None = None
    #: Stop gracefully on SIGTERM/SIGINT (needs the main thread).
    handle_signals: bool = True
    worker_id: str | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if self.heartbeat_interval is None:
            self.heartbeat_interval = self.lease_seconds / 3
        if not 0 < self.heartbeat_interval <= self.lease_seconds / 2:
            raise ValueError(
                "heartbeat_interval must be positive and at most half the lease "
                "(a lease must outlive a missed heartbeat)"
            )
        if self.reap_interval is None:
            self.reap_interval = min(self.heartbeat_interval, 2.0)
        if self.reap_interval <= 0:
            raise ValueError("reap_interval must be positive")

    @property
    def fence_after(self) -> float:
        """Seconds without a renewed lease after which an attempt is stopped (and
        handed back): well before the lease expires and another worker may take it."""
        assert self.heartbeat_interval is not None
        return self.lease_seconds - max(self.heartbeat_interval, self.lease_seconds / 3)


class Stop(enum.Enum):
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


#: A later reason replaces an earlier one only if it ranks higher here.
_STOP_RANK = {Stop.CANCEL: 0, Stop.SHUTDOWN: 0, Stop.TIMEOUT: 1, Stop.FENCED: 2, Stop.LEASE_LOST: 3}


#: An output item not written yet, with its bytes for the blob store (see ``Execution``).
Unwritten = tuple[OutputItem, bytes | None]


@dataclass(eq=False)
class Execution:
    """One attempt in progress in this worker."""

    job: Claimed
    definition: TaskDefinition
    ctx: TaskContext
    future: asyncio.Future[Any] | None = None
    #: Why the attempt is being stopped, once it is.
    stop_reason: Stop | None = None
    settled: bool = False
    timer: asyncio.TimerHandle | None = None
    next_seq: int = 0
    #: Items taken from the context and not written yet, each with its JSON bytes when
    #: it goes to the blob store (None once stored there, or for an item in the row).
    unflushed: list[Unwritten] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    #: When (monotonic) the statement that last granted or renewed the lease was sent:
    #: the lease runs at least ``lease_seconds`` from then.
    lease_at: float = field(default_factory=time.monotonic)

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
            if big is None:
                self.unflushed.append((OutputItem(task_id, self.next_seq, data), None))
            else:
                # Named by the attempt too: a stale attempt's blob never replaces one of
                # the attempt that holds the lease (the rows would be refused; the files
                # are written first).
                ref = f"{task_id}/output-{self.next_seq}-{self.floor}"
                self.unflushed.append((OutputItem(task_id, self.next_seq, None, ref), big))
        out, self.unflushed = self.unflushed, []
        return out


def _safe_error(exc: BaseException) -> tuple[str, str, str]:
    """(type, message, detail): the message is fit for the task's owner (only errands'
    own errors and ``TaskFailed`` carry their text; anything else is reported by type
    alone), the detail is the traceback, for administrators."""
    from .process import RemoteError

    if isinstance(exc, RemoteError):
        message = exc.message if exc.safe else "the task failed unexpectedly"
        etype, detail = exc.type_name, exc.detail
    else:
        detail = "".join(traceback.format_exception(exc))
        etype = type(exc).__name__
        message = exc.message if isinstance(exc, ErrandsError) else "the task failed unexpectedly"
    return storable_text(etype), storable_text(message), storable_text(detail)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _retry_delay(exc: BaseException) -> float | None:
    """The delay a task asked for with ``raise Retry(delay=...)``, if any."""
    from .process import RemoteError

    if isinstance(exc, Retry):
        return exc.delay
    if isinstance(exc, RemoteError) and exc.type_name == "Retry":
        return exc.retry_delay
    return None


class Worker:
    def __init__(self, runtime: Runtime, settings: WorkerSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.hostname = socket.gethostname()[:255]
        self.id = settings.worker_id or (
            f"{self.hostname[:30]}:{os.getpid()}:{os.urandom(3).hex()}"
        )
        self.names = list(settings.names or runtime.registry.names())
        #: Task name → how many of one owner's tasks of it may run at once.
        self.caps = runtime.running_caps(self.names)
        for name in self.names:
            runtime.registry.get(name)  # UnknownTask early
        self._running: dict[str, Execution] = {}
        self._outcomes: list[tuple[Execution, Outcome]] = []
        self._releases: list[Execution] = []
        self._writing: set[str] = set()
        self._stopping = False
        self._forced = False
        self._processes: ProcessPool | None = None
        #: When the earliest waiting job is due (from the last claim that came up short).
        self._due: float | None = None
        #: The progress flush in flight: the tasks whose items it carries, and a future
        #: done when it is over. An outcome of one of them waits for it: written first,
        #: the outcome would make the flush's items be refused, and they would be lost.
        self._flushing: tuple[set[str], asyncio.Future[None]] | None = None
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
        self._beat_now = asyncio.Event()
        self._maybe_work = True  # a claim could find something
        self._hinted = False
        await self._loop.run_in_executor(None, self.runtime.db.ensure_schema)
        await self.runtime.db.awrite(
            self.runtime.db.driver.worker_register,
            {
                "id": self.id,
                "hostname": self.hostname,
                "pid": os.getpid(),
                "process_key": liveness.process_key(),
                "names": self.names,
                "concurrency": self.settings.concurrency,
                "started_at": _utc(time.time()),
                "seen_at": _utc(time.time()),
            },
            durable=False,
        )
        subscription = self.runtime.notifier.listen_worker(self._on_jobs_hint, self._on_cancel_hint)
        handled = self._install_signals()
        background = [
            asyncio.create_task(self._heartbeat_loop(), name="errands-heartbeat"),
            asyncio.create_task(self._fence_loop(), name="errands-fence"),
            asyncio.create_task(self._maintenance_loop(), name="errands-maintenance"),
            asyncio.create_task(self._flush_loop(), name="errands-flush"),
        ]
        log.info("worker %s started: %s", self.id, ", ".join(self.names))
        try:
            await self._pump()
        finally:
            self._stopping = True
            for exe in list(self._running.values()):  # only after an error in the pump
                self._stop_attempt(exe, Stop.SHUTDOWN)
                self._force_settle(exe)
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            subscription.close()
            for sig in handled:
                self._loop.remove_signal_handler(sig)
            if self._processes is not None:
                self._processes.close()
            try:
                await self.runtime.db.awrite(
                    self.runtime.db.driver.worker_unregister, self.id, durable=False
                )
            except Exception:
                log.exception("worker %s: could not remove itself from the registry", self.id)
            log.info("worker %s stopped", self.id)

    # -- the pump: one transaction per round ---------------------------------------------
    async def _pump(self) -> None:
        """Write what ended and claim what fits, in one transaction per round.

        A round runs when outcomes wait to be written or slots are free and a claim
        could find work (after a notification, a poll interval, a due time, or a claim
        that filled every slot). Whatever ends while a round is in flight goes in the
        next one (group commit). On stop, claiming ends, running attempts get
        ``shutdown_timeout`` to finish (then are stopped and handed back), and the pump
        returns once everything is written.
        """
        s = self.settings
        shutdown_at: float | None = None
        recheck = False
        while True:
            if self._stopping and shutdown_at is None:
                shutdown_at = time.monotonic() + (0 if self._forced else s.shutdown_timeout)
            if (
                shutdown_at is not None
                and self._running
                and (self._forced or time.monotonic() >= shutdown_at)
            ):
                self._stop_running()
            free = 0 if self._stopping else s.concurrency - len(self._running)
            limit = self._wanted(free)
            if not (self._outcomes or self._releases or limit):
                if not self._running and (self._stopping or (s.burst and not self._maybe_work)):
                    return
                self._wake.clear()
                timeout = s.poll_interval
                if shutdown_at is not None:
                    if time.monotonic() < shutdown_at:  # else: wait for attempts to settle
                        timeout = min(timeout, shutdown_at - time.monotonic())
                elif self._due is not None:
                    timeout = max(0.0, min(timeout, self._due - time.time()))
                if not await self._sleep_or_wake(timeout) and not self._stopping:
                    self._maybe_work = True  # poll interval or due time reached
                continue
            hinted, self._hinted = self._hinted, False
            claimed, requeued, sent = await self._round(limit)
            if limit:
                if not claimed and hinted and not recheck:
                    # The hint may have come just before its transaction committed.
                    recheck = True
                    self._loop.call_later(0.02, self._poke)
                else:
                    recheck = False
                self._maybe_work = len(claimed) == limit
            if requeued:
                self._maybe_work = True  # a retry or a handed-back job may be due now
            for job in claimed:
                self._start(job, sent)

    # -- what a round claims (an engine's worker may override these three) --------------
    def _wanted(self, free: int) -> int:
        """How many jobs the next round should claim (0: claim nothing)."""
        return free if self._maybe_work else 0

    def _claim(
        self, conn: Connection, limit: int, now: float
    ) -> tuple[list[Claimed], float | None]:
        """Claim up to ``limit`` jobs (in the round's transaction): the jobs, and when
        the next waiting job is due if fewer were found (see the driver's ``job_claim``)."""
        return self.runtime.db.driver.job_claim(
            conn,
            self.id,
            names=self.names,
            limit=limit,
            now=now,
            lease_seconds=self.settings.lease_seconds,
            caps=self.caps,
        )

    def _attempt_over(self, task_id: str) -> None:
        """An attempt ended: its outcome is written, or there is none to write (its lease
        was lost, or it is being handed back)."""

    def _claims_lost(self) -> None:
        """The round's transaction failed: nothing it claimed was claimed."""

    def _poke(self) -> None:
        self._maybe_work = True
        self._wake.set()

    def _stop_running(self) -> None:
        for exe in list(self._running.values()):
            if exe.stop_reason is not Stop.SHUTDOWN:
                self._stop_attempt(exe, Stop.SHUTDOWN)
                if exe.definition.executor != "async":
                    self._force_settle(exe)

    async def _round(self, limit: int) -> tuple[list[Claimed], bool, float]:
        """One round: the outcomes and hand-backs that wait, and a claim of up to
        ``limit`` jobs. Returns the jobs claimed, whether any job was queued again, and
        when (monotonic) the round's statement was sent (the claims' leases run from
        then)."""
        batch, self._outcomes = self._outcomes, []
        releases, self._releases = self._releases, []
        flushing = self._flushing
        if flushing is not None and any(exe.job.task_id in flushing[0] for exe, _ in batch):
            await asyncio.shield(flushing[1])  # its items come before the outcome's
        outputs = [item for exe, _ in batch for item in exe.take_outputs(self.runtime.blobs)]
        release_ids = [exe.job.task_id for exe in releases]
        sent = time.monotonic()
        try:
            await self._store_blobs([o for _, o in batch], outputs)
            sent = time.monotonic()
            _, claimed, due = await self.runtime.db.awrite(
                self._round_txn,
                batch,
                outputs,
                releases,
                limit,
                durable=bool(batch or releases),  # a lost claim is only run again
                # A round that only claims is one statement on PostgreSQL: no BEGIN/COMMIT.
                # (Capped claims take turns under a lock held until commit.)
                autocommit=not (batch or releases or outputs or (limit and self.caps)),
                then=lambda result: self._publish(result[0]),  # from the write thread
            )
        except Exception as exc:
            if batch and not is_unavailable(exc):
                # Not the database being away: something in the batch itself (a value
                # the database refuses). Write each outcome alone, so one bad outcome
                # cannot hold the others (and their workers' leases) hostage.
                log.error("worker %s: writing outcomes failed", self.id, exc_info=exc)
                batch = [await self._write_alone(exe, outcome, outputs) for exe, outcome in batch]
                self._releases[:0] = releases
                self._claims_lost()
                return [], any(o.status is Status.QUEUED for _, o in batch), sent
            log_failure(log, exc, "worker %s: a write failed; retrying", self.id)
            for exe, _ in batch:
                exe.unflushed[:0] = [o for o in outputs if o[0].task_id == exe.job.task_id]
            self._outcomes[:0] = batch
            self._releases[:0] = releases
            self._claims_lost()
            await asyncio.sleep(0.5)
            return [], False, sent
        self._finished(batch)
        if limit:
            self._due = due
        again = [(task_id, time.time()) for task_id in release_ids]
        again += [(o.task_id, o.retry_at or 0.0) for _, o in batch if o.status is Status.QUEUED]
        if again:
            self.runtime.publisher.queued(again)
        requeued = bool(again)
        return claimed, requeued, sent

    async def _write_alone(
        self, exe: Execution, outcome: Outcome, outputs: list[Unwritten]
    ) -> tuple[Execution, Outcome]:
        """Write one attempt's outcome (and its outputs) in its own transaction. If the
        database refuses it, the task fails with ``OutcomeNotStored`` instead; if even
        that cannot be written, its lease runs out and the reaper takes over."""
        task_id = exe.job.task_id
        mine = [o for o in outputs if o[0].task_id == task_id]
        try:
            await self._store_blobs([outcome], mine)
            changed, _, _ = await self.runtime.db.awrite(
                self._round_txn, [(exe, outcome)], mine, [], 0
            )
        except Exception as exc:
            log.error(
                "worker %s: the outcome of task %s was refused", self.id, task_id, exc_info=exc
            )
            outcome = Outcome(
                task_id,
                Status.FAILED,
                error_type="OutcomeNotStored",
                error_message="the task's outcome could not be stored",
                error_detail=storable_text(f"{type(exc).__name__}: {exc}"),
                expires_at=outcome.expires_at,
                floor=exe.floor,
            )
            try:
                changed, _, _ = await self.runtime.db.awrite(
                    self._round_txn, [(exe, outcome)], [], [], 0
                )
            except Exception as again:
                log_failure(log, again, "worker %s: failing task %s failed too", self.id, task_id)
                self._writing.discard(task_id)
                self._over(exe)
                return exe, outcome
        self._finished([(exe, outcome)])
        self._publish(changed)
        return exe, outcome

    async def _store_blobs(self, outcomes: Sequence[Outcome], outputs: list[Unwritten]) -> None:
        """Write the large results and items among these to the blob store, before the
        rows that refer to them (in a thread: they may be megabytes)."""
        pending = [(o.result_ref, o.blob) for o in outcomes if o.blob is not None and o.result_ref]
        pending += [(item.ref, big) for item, big in outputs if big is not None and item.ref]
        if not pending:
            return
        await asyncio.to_thread(self.runtime.blobs.put_all, pending)
        for o in outcomes:
            o.blob = None
        outputs[:] = [(item, None) for item, _ in outputs]

    def _finished(self, batch: list[tuple[Execution, Outcome]]) -> None:
        for exe, outcome in batch:
            self._writing.discard(exe.job.task_id)
            self._over(exe)
            self.runtime.observers.emit(
                "finished",
                exe.job.task_id,
                exe.job.name,
                outcome.status,
                time.monotonic() - exe.started_at,
            )

    def _over(self, exe: Execution) -> None:
        """``_attempt_over`` — unless a newer attempt of the task runs here now."""
        current = self._running.get(exe.job.task_id)
        if current is None or current is exe:
            self._attempt_over(exe.job.task_id)

    def _round_txn(
        self,
        conn: Connection,
        batch: list[tuple[Execution, Outcome]],
        outputs: list[Unwritten],
        releases: list[Execution],
        limit: int,
    ) -> tuple[list[Change], list[Claimed], float | None]:
        now = time.time()
        driver = self.runtime.db.driver
        changed: list[Change] = []
        if batch:
            outcomes = [o for _, o in batch]
            items = [item for item, _ in outputs]
            changed += driver.attempt_finish(conn, self.id, outcomes, now=now, outputs=items)
            if len(changed) < len(batch):
                written = {c.task_id for c in changed}
                for exe, _ in batch:
                    if exe.job.task_id not in written:
                        log.warning(
                            "worker %s: the outcome of task %s was refused: its lease was lost",
                            self.id,
                            exe.job.task_id,
                        )
        if releases:
            changed += driver.attempt_release(
                conn, self.id, [(exe.job.task_id, exe.floor) for exe in releases], now=now
            )
        claimed, due = self._claim(conn, limit, now) if limit else ([], None)
        return changed, claimed, due

    async def _sleep_or_wake(self, timeout: float) -> bool:
        """Wait for ``_wake`` at most ``timeout`` seconds; True if it was set."""
        if self._wake.is_set():
            return True
        if timeout <= 0:
            await asyncio.sleep(0)  # always yield: callers loop on this
            return self._wake.is_set()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _on_jobs_hint(self) -> None:  # listener thread
        def hint() -> None:
            self._hinted = True
            self._maybe_work = True
            self._wake.set()

        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(hint)

    def _on_cancel_hint(self, task_ids: Sequence[str]) -> None:  # listener thread
        # A hint only triggers a heartbeat, which reads the cancel flags from the database.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._beat_now.set)

    # -- running -----------------------------------------------------------------------
    def _start(self, job: Claimed, leased_at: float) -> None:
        definition = self.runtime.registry.get(job.name)
        ctx = TaskContext(
            task_id=job.task_id,
            owner=job.owner,
            name=job.name,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
        )
        exe = Execution(job, definition, ctx, next_seq=job.output_floor, lease_at=leased_at)
        stale = self._running.get(job.task_id)
        self._running[job.task_id] = exe
        if stale is not None:
            # This worker lost the lease of an attempt it still runs (it was paused past
            # the lease, say) and has just claimed the task again: the old attempt's
            # writes would be refused; stop it before the new one starts.
            log.warning("worker %s lost the lease of task %s", self.id, job.task_id)
            self._stop_attempt(stale, Stop.LEASE_LOST)
            if not stale.settled:
                self._settle(stale, None)
        self.started += 1
        self.runtime.observers.emit("started", job.task_id, job.name, Status.RUNNING, None)
        if job.cancel_requested:
            exe.stop_reason = Stop.CANCEL
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
            exe.future = self._process_pool().run(definition.fn, ctx, job.payload)
        exe.future.add_done_callback(partial(self._on_done, exe))
        if definition.timeout is not None:
            exe.timer = loop.call_later(definition.timeout, self._stop_attempt, exe, Stop.TIMEOUT)

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

            self._processes = ProcessPool(self._loop, self.settings.concurrency)
        return self._processes

    def _stop_attempt(self, exe: Execution, reason: Stop) -> None:
        """Stop an attempt: cancel a coroutine, flag (then abandon) a thread, kill a process."""
        if exe.settled or exe.future is None:
            return
        if exe.stop_reason is None or _STOP_RANK[reason] > _STOP_RANK[exe.stop_reason]:
            exe.stop_reason = reason
        exe.ctx._request_cancel()
        kind = exe.definition.executor
        if kind == "async":
            exe.future.cancel()
            self._loop.call_later(self.settings.cancel_grace, self._force_settle, exe)
        elif kind == "thread":
            if reason in (Stop.TIMEOUT, Stop.LEASE_LOST, Stop.FENCED):
                # The thread runs on until it looks at ctx.cancelled (a thread cannot be
                # stopped from outside); whatever it does now is not written.
                self._force_settle(exe)
            else:
                self._loop.call_later(self.settings.cancel_grace, self._force_settle, exe)
        else:
            assert self._processes is not None
            self._processes.kill(exe.job.task_id)

    def _force_settle(self, exe: Execution) -> None:
        if not exe.settled:
            self._settle(exe, self._stopped_outcome(exe))

    def _on_done(self, exe: Execution, future: asyncio.Future[Any]) -> None:
        if exe.settled:
            return
        if exe.stop_reason is not None:
            # Once an attempt was told to stop, it ends as stopped however it returns
            # (its exception, if any, is read so asyncio does not report it as lost).
            if not future.cancelled():
                future.exception()
            self._settle(exe, self._stopped_outcome(exe))
            return
        if future.cancelled():
            exe.stop_reason = Stop.CANCEL
            self._settle(exe, self._cancelled(exe))
            return
        exc = future.exception()
        if exc is None:
            try:
                result = storable_json(future.result())
            except Exception:
                failed = TaskFailed("the task's result is not JSON-serializable")
                self._settle(exe, self._failure(exe, failed, retry=False))
                return
            outcome = Outcome(exe.job.task_id, Status.SUCCEEDED, result=result, floor=exe.floor)
            big = self.runtime.blobs.encode(result)
            if big is not None:  # kept in the blob store; the row holds its key
                outcome.result = None
                outcome.result_ref = f"{exe.job.task_id}/result-{exe.job.attempt}-{exe.floor}"
                outcome.blob = big
            self._settle(exe, outcome)
        elif isinstance(exc, TaskCancelled | asyncio.CancelledError) or (
            getattr(exc, "type_name", None) == "TaskCancelled"
        ):
            exe.stop_reason = Stop.CANCEL
            self._settle(exe, self._cancelled(exe))
        else:
            self._settle(exe, self._failure(exe, exc))

    def _stopped_outcome(self, exe: Execution) -> Outcome | None:
        reason = exe.stop_reason
        if reason is Stop.LEASE_LOST:
            return None  # the task belongs to another attempt now
        if reason in (Stop.SHUTDOWN, Stop.FENCED):
            self._releases.append(exe)
            return None
        if reason is Stop.TIMEOUT:
            timeout = exe.definition.timeout
            return self._failure(
                exe, TaskTimeout(f"the task ran longer than its timeout of {timeout:g} s")
            )
        return self._cancelled(exe)

    def _cancelled(self, exe: Execution) -> Outcome:
        return Outcome(
            exe.job.task_id,
            Status.CANCELLED,
            error_type=CANCELLED_ERROR.type,
            error_message=CANCELLED_ERROR.message,
            floor=exe.floor,
        )

    def _failure(self, exe: Execution, exc: BaseException, *, retry: bool = True) -> Outcome:
        job, definition = exe.job, exe.definition
        etype, message, detail = _safe_error(exc)
        retry = retry and getattr(exc, "retry", True)  # TaskFailed(retry=False), or remote
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
                floor=exe.floor,
            )
        if etype == "Retry":
            message = "the task asked to be retried, but its attempts are spent"
        log.warning("task %s (%s) failed: %s", job.task_id, job.name, etype)
        return Outcome(
            job.task_id,
            Status.FAILED,
            error_type=etype,
            error_message=message,
            error_detail=detail,
            floor=exe.floor,
        )

    def _settle(self, exe: Execution, outcome: Outcome | None) -> None:
        exe.settled = True
        if exe.timer is not None:
            exe.timer.cancel()
        if self._running.get(exe.job.task_id) is exe:
            del self._running[exe.job.task_id]
        if outcome is not None:
            outcome.progress = exe.ctx._final_progress()
            if outcome.status.done:
                outcome.expires_at = self.runtime.expiry(exe.job.name, time.time())
            self._writing.add(exe.job.task_id)
            self._outcomes.append((exe, outcome))
        elif exe.stop_reason is Stop.LEASE_LOST:
            self._over(exe)
        self._wake.set()

    # -- writing -----------------------------------------------------------------------
    def _publish(self, changed: Sequence[Change]) -> None:
        if changed:
            self.runtime.notifier.publish_changes(changed)

    async def _flush_loop(self) -> None:
        interval = self.settings.progress_interval
        while True:
            await asyncio.sleep(interval)
            reports: list[Report] = []
            outputs: list[Unwritten] = []
            attempts: dict[str, Execution] = {}
            for exe in list(self._running.values()):
                p = exe.ctx._take_progress()
                items = exe.take_outputs(self.runtime.blobs)
                if p is None and not items:
                    continue
                reports.append(Report(exe.job.task_id, exe.floor, p))
                outputs.extend(items)
                attempts[exe.job.task_id] = exe
            if not reports:
                continue
            done: asyncio.Future[None] = self._loop.create_future()
            self._flushing = ({item.task_id for item, _ in outputs}, done)
            try:
                await self._store_blobs([], outputs)
                changed = await self.runtime.db.awrite(
                    self.runtime.db.driver.attempt_report,
                    self.id,
                    reports,
                    [item for item, _ in outputs],
                    now=time.time(),
                    durable=False,  # synced by the outcome's commit, which follows in order
                )
            except Exception as exc:
                log_failure(log, exc, "worker %s: writing progress failed", self.id)
                for unwritten in outputs:  # again with the next flush, or with the outcome
                    attempts[unwritten[0].task_id].unflushed.append(unwritten)
                for report in reports:
                    if report.progress is not None:
                        attempts[report.task_id].ctx._progress_unwritten()
                continue
            finally:
                self._flushing = None
                done.set_result(None)
            self._publish(changed)
            if len(changed) < len(reports):
                written = {c.task_id for c in changed}
                for task_id, exe in attempts.items():
                    if task_id not in written and not exe.settled:
                        log.warning("worker %s lost the lease of task %s", self.id, task_id)
                        self._stop_attempt(exe, Stop.LEASE_LOST)

    async def _heartbeat_loop(self) -> None:
        s = self.settings
        assert s.heartbeat_interval is not None
        wait = s.heartbeat_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), wait)
            self._beat_now.clear()
            try:
                await self._heartbeat()
            except Exception as exc:
                log_failure(log, exc, "worker %s: heartbeat failed", self.id)
                wait = min(s.heartbeat_interval, 1.0)  # try again soon: the leases run out
            else:
                wait = s.heartbeat_interval

    async def _heartbeat(self) -> None:
        ids = list(self._running) + [i for i in self._writing if i not in self._running]
        if not ids:
            await self.runtime.db.awrite(
                self.runtime.db.driver.worker_beat, self.id, _utc(time.time()), durable=False
            )
            return
        asked = {task_id: self._running.get(task_id) for task_id in ids}
        sent = time.monotonic()
        held, cancel = await self.runtime.db.awrite(
            self._beat_txn, ids, time.time() + self.settings.lease_seconds, durable=False
        )
        for task_id, exe in list(self._running.items()):
            if asked.get(task_id) is not exe:
                # Claimed (or claimed again, for a retry) while this heartbeat was in
                # flight: that attempt's lease is fresh, whatever the heartbeat saw.
                continue
            if task_id not in held:
                log.warning("worker %s lost the lease of task %s", self.id, task_id)
                self._stop_attempt(exe, Stop.LEASE_LOST)
                continue
            exe.lease_at = sent
            if task_id in cancel:
                self._stop_attempt(exe, Stop.CANCEL)

    def _beat_txn(
        self, conn: Connection, ids: list[str], lease_until: float
    ) -> tuple[set[str], set[str]]:
        driver = self.runtime.db.driver
        driver.worker_beat(conn, self.id, _utc(time.time()))
        return driver.job_heartbeat(conn, self.id, ids, lease_until=lease_until)

    async def _fence_loop(self) -> None:
        """Stop attempts whose lease this worker could not renew for ``fence_after``
        seconds (the database is away, or this process was paused): before the lease
        expires and another worker may start the task, not after. They are handed back
        once the database answers (if the lease is still this worker's then). Runs on
        its own timer, since a heartbeat may hang as long as the database does."""
        s = self.settings
        assert s.heartbeat_interval is not None
        fence_after = s.fence_after
        while True:
            await asyncio.sleep(min(s.heartbeat_interval / 2, 1.0))
            now = time.monotonic()
            for exe in list(self._running.values()):
                if now - exe.lease_at > fence_after and exe.stop_reason not in (
                    Stop.FENCED,
                    Stop.LEASE_LOST,
                ):
                    log.warning(
                        "worker %s: the lease of task %s was not renewed for %.1f s; "
                        "stopping the attempt before it runs out",
                        self.id,
                        exe.job.task_id,
                        now - exe.lease_at,
                    )
                    self._stop_attempt(exe, Stop.FENCED)

    async def _maintenance_loop(self) -> None:
        """The reaper (at start, then every ``reap_interval``) and the purge of expired
        records (every ``purge_interval``)."""
        s = self.settings
        assert s.reap_interval is not None
        next_purge = time.monotonic() + s.purge_interval
        while True:
            try:
                await self._reap()
            except Exception as exc:
                log_failure(log, exc, "worker %s: the reaper failed", self.id)
            if s.purge_interval and time.monotonic() >= next_purge:
                next_purge = time.monotonic() + s.purge_interval
                try:
                    purge = partial(self.runtime.purge, batch=500, limit=10_000)
                    await asyncio.to_thread(purge, now=time.time())
                except Exception as exc:
                    log_failure(log, exc, "worker %s: purging failed", self.id)
            await asyncio.sleep(s.reap_interval)

    async def _reap(self) -> None:
        now = time.time()
        # A worker's row outlives it only if it was killed; forget it after a while.
        silent = _utc(now - max(60.0, 10 * self.settings.lease_seconds))
        changed, dead = await self.runtime.db.awrite(
            self._reap_txn, now, partial(self.runtime.expiry, now=now), silent
        )
        if dead:
            log.warning("worker %s: worker(s) %s on this host died", self.id, ", ".join(dead))
        if changed:
            log.warning("reaper recovered %d task(s) whose worker stopped", len(changed))
            self._publish(changed)
            back = [(c.task_id, now) for c in changed if c.status is Status.QUEUED]
            if back:
                self.runtime.publisher.queued(back)

    def _reap_txn(
        self,
        conn: Connection,
        now: float,
        expiry_for: Callable[[str], datetime | None],
        silent: datetime,
    ) -> tuple[list[Change], list[str]]:
        """Release the leases of dead workers on this host (their process is gone), then
        recover every job whose lease expired."""
        driver = self.runtime.db.driver
        dead = [
            worker_id
            for worker_id, pid, key in driver.worker_on_host(conn, self.hostname, self.id)
            if liveness.is_dead(pid, key)
        ]
        if dead:
            driver.job_expire_leases(conn, dead)
            driver.worker_forget(conn, dead)
        driver.worker_forget_silent(conn, silent)
        return driver.job_reap(conn, now=now, expiry_for=expiry_for), dead

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

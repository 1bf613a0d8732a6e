"""The worker: claims jobs with a lease, runs them, and records how they ended.

One asyncio loop per worker process. What it claims comes from a ``JobSource``: the SQL
engine's ``QueueSource`` claims due jobs from ``errands_job`` (fair claims, caps, due
times); another engine plugs in its own (the Celery engine claims exactly the jobs its
messages name). Each attempt runs under an ``attempt.Runner``; ``maintenance`` is the
reaper and the purge.

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
gone, see ``errands.liveness``), else when its lease expires.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy import Connection

from . import liveness
from .attempt import Attempt, Runner, StopReason, Unwritten
from .context import TaskContext
from .events.notifier import Hint
from .maintenance import Maintenance
from .peers import Peers
from .records import Change, Status, storable_text
from .runtime import Runtime
from .schedules.ticker import Ticker, declarations
from .store.codec import utc
from .store.database import is_unavailable, log_failure
from .store.values import Carrier, Claimed, Outcome, Report

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


class JobSource:
    """Where a worker's jobs come from: what each round claims, and what it is told of
    them. Subclasses implement ``wanted`` and ``claim``; the rest are hooks. ``bind``
    comes first; the rest run on the worker's event loop."""

    _worker: Worker | None = None

    @property
    def worker(self) -> Worker:
        assert self._worker is not None, "the source is not bound to a worker"
        return self._worker

    def bind(self, worker: Worker) -> None:
        """The worker this source feeds."""
        self._worker = worker

    def wanted(self, free: int) -> int:
        """How many jobs the next round should claim, ``free`` slots being free (0:
        claim nothing; the worker then sleeps until ``wake()``, a poll or a due time)."""
        raise NotImplementedError

    def claim(self, conn: Connection, limit: int, now: float) -> tuple[list[Claimed], float | None]:
        """Claim up to ``limit`` jobs in the round's transaction: the jobs, and when the
        next waiting job is due if fewer were found (None: none waits, or unknown)."""
        raise NotImplementedError

    def claimed(self, jobs: Sequence[Claimed]) -> None:
        """The round committed: these jobs were claimed (and will start now)."""

    def claims_lost(self) -> None:
        """The round's transaction failed: nothing it claimed was claimed."""

    def attempt_over(self, task_id: str) -> None:
        """An attempt ended: its outcome is written, or there is none to write (its
        lease was lost, or it was handed back)."""

    async def start(self) -> None:
        """The worker is running (its loop is ``worker.loop``)."""

    def stopping(self) -> None:
        """The worker was asked to stop (from any thread)."""

    async def close(self) -> None:
        """The worker stopped: release what the source holds."""


class QueueSource(JobSource):
    """The SQL engine's source: due jobs from ``errands_job``, in claim order and within
    the owners' caps. A claim runs when a notification, a poll interval or a due time
    says there may be work, or when the last claim filled every slot."""

    #: A claim could find something.
    maybe_work = True

    def wanted(self, free: int) -> int:
        return free if self.maybe_work else 0

    def claim(self, conn: Connection, limit: int, now: float) -> tuple[list[Claimed], float | None]:
        worker = self.worker
        return worker.runtime.db.driver.job_claim(
            conn,
            worker.id,
            names=worker.names,
            limit=limit,
            now=now,
            lease_seconds=worker.settings.lease_seconds,
            caps=worker.caps,
        )


class Worker:
    def __init__(
        self, runtime: Runtime, settings: WorkerSettings, source: JobSource | None = None
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.hostname = socket.gethostname()[:255]
        self.id = settings.worker_id or f"{self.hostname[:30]}:{os.getpid()}:{os.urandom(3).hex()}"
        self.names = list(settings.names or runtime.registry.names())
        #: Task name → how many of one owner's tasks of it may run at once.
        self.caps = runtime.running_caps(self.names)
        for name in self.names:
            runtime.registry.get(name)  # UnknownTask early
        self.source: JobSource = source if source is not None else QueueSource()
        self.source.bind(self)
        self._running: dict[str, Attempt] = {}
        self._outcomes: list[tuple[Attempt, Outcome]] = []
        self._releases: list[Attempt] = []
        self._writing: set[str] = set()
        self._stopping = False
        self._forced = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._beat_now = asyncio.Event()
        self._hinted = False
        self._pokes = 0  # how many times ``_poke`` ran (see ``_pump``)
        #: The live workers per task name: which of them claims a hinted job.
        self.peers = Peers(self.id)
        #: A hint chose this worker since the last round (see ``_on_hint``).
        self._chosen = False
        self._peers_read_at = 0.0
        #: When the earliest waiting job is due (from the last claim that came up short).
        self._due: float | None = None
        #: The progress flush in flight: the tasks whose items it carries, and a future
        #: done when it is over. An outcome of one of them waits for it: written first,
        #: the outcome would make the flush's items be refused, and they would be lost.
        self._flushing: tuple[set[str], asyncio.Future[None]] | None = None
        #: Attempts started since the worker began (for tests and stats).
        self.started = 0

    # -- public ------------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The worker's event loop (once it runs)."""
        assert self._loop is not None, "the worker is not running"
        return self._loop

    @property
    def stopping(self) -> bool:
        return self._stopping

    def wake(self) -> None:
        """Run a round soon (from any thread): a job source has something to claim."""
        self._call_soon(self._wake.set)

    def stop(self) -> None:
        """Stop gracefully; a second call stops at once (attempts are handed back)."""
        if self._stopping:
            self._forced = True
        self._stopping = True
        self.source.stopping()
        self.wake()

    async def run(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._beat_now = asyncio.Event()
        runtime = self.runtime
        await loop.run_in_executor(None, runtime.db.ensure_schema)
        await runtime.db.awrite(
            runtime.db.driver.worker_register,
            {
                "id": self.id,
                "hostname": self.hostname,
                "pid": os.getpid(),
                "process_key": liveness.process_key(),
                "names": self.names,
                "concurrency": self.settings.concurrency,
                "schedules": declarations(runtime),
                "started_at": utc(time.time()),
                "seen_at": utc(time.time()),
            },
            durable=False,
        )
        s = self.settings
        assert s.reap_interval is not None
        self._runner = Runner(
            loop,
            runtime.blobs,
            self._settle,
            cancel_grace=s.cancel_grace,
            processes=s.concurrency,
        )
        maintenance = Maintenance(
            runtime,
            self.id,
            self.hostname,
            lease_seconds=s.lease_seconds,
            reap_interval=s.reap_interval,
            purge_interval=s.purge_interval,
        )
        subscription = runtime.notifier.listen_worker(self._on_jobs_hint, self._on_cancel_hint)
        handled = self._install_signals()
        background = [
            asyncio.create_task(self._heartbeat_loop(), name="errands-heartbeat"),
            asyncio.create_task(self._fence_loop(), name="errands-fence"),
            asyncio.create_task(maintenance.run(), name="errands-maintenance"),
            asyncio.create_task(self._flush_loop(), name="errands-flush"),
            asyncio.create_task(
                Ticker(
                    runtime,
                    self.id,
                    self.names,
                    poll_interval=s.poll_interval,
                    reconcile_interval=s.heartbeat_interval or s.lease_seconds / 3,
                    alive_within=2 * s.lease_seconds,
                ).run(),
                name="errands-schedules",
            ),
        ]
        log.info("worker %s started: %s", self.id, ", ".join(self.names))
        try:
            await self.source.start()
            await self._pump()
        finally:
            self._stopping = True
            for attempt in list(self._running.values()):  # only after an error in the pump
                self._runner.stop(attempt, StopReason.SHUTDOWN)
                self._runner.abandon(attempt)
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            subscription.close()
            for sig in handled:
                loop.remove_signal_handler(sig)
            self._runner.close()
            await self.source.close()
            try:
                await runtime.db.awrite(runtime.db.driver.worker_unregister, self.id, durable=False)
            except Exception:
                log.exception("worker %s: could not remove itself from the registry", self.id)
            log.info("worker %s stopped", self.id)

    # -- the pump: one transaction per round ---------------------------------------------
    async def _pump(self) -> None:
        """Write what ended and claim what fits, in one transaction per round.

        A round runs when outcomes wait to be written or slots are free and the source
        wants a claim. Whatever ends while a round is in flight goes in the next one
        (group commit). On stop, claiming ends, running attempts get
        ``shutdown_timeout`` to finish (then are stopped and handed back), and the pump
        returns once everything is written.
        """
        s = self.settings
        queue = self.source if isinstance(self.source, QueueSource) else None
        shutdown_at: float | None = None
        recheck = False
        while True:
            if self._stopping and shutdown_at is None:
                shutdown_at = time.monotonic() + (0 if self._forced else s.shutdown_timeout)
            if shutdown_at is not None and (self._forced or time.monotonic() >= shutdown_at):
                for attempt in list(self._running.values()):  # hand them back
                    if attempt.stop_reason is not StopReason.SHUTDOWN:
                        self._runner.stop(attempt, StopReason.SHUTDOWN)
                        if attempt.definition.executor != "async":
                            self._runner.abandon(attempt)
            free = 0 if self._stopping else s.concurrency - len(self._running)
            limit = self.source.wanted(free) if free > 0 else 0
            if not (self._outcomes or self._releases or limit):
                idle = queue is None or not queue.maybe_work
                if not self._running and (self._stopping or (s.burst and idle)):
                    return
                self._wake.clear()
                timeout = s.poll_interval
                if shutdown_at is not None:
                    if time.monotonic() < shutdown_at:  # else: wait for attempts to settle
                        timeout = min(timeout, shutdown_at - time.monotonic())
                elif self._due is not None:
                    timeout = max(0.0, min(timeout, self._due - time.time()))
                woken = await self._sleep_or_wake(timeout)
                if queue is not None and not woken and not self._stopping:
                    queue.maybe_work = True  # poll interval or due time reached
                continue
            hinted, self._hinted = self._hinted, False
            chosen, self._chosen = self._chosen, False
            pokes = self._pokes
            claimed, requeued, sent = await self._round(limit)
            if limit and queue is not None:
                if not claimed and chosen:
                    # Chosen, yet another worker took the job: their lists of live
                    # workers differ (one came or went); read the registry again.
                    self._refresh_peers()
                if not claimed and hinted and not recheck:
                    # The hint may have come just before its transaction committed.
                    recheck = True
                    self.loop.call_later(0.02, self._poke)
                else:
                    recheck = False
                # A poke during the round (a hint that came while the claim was on its
                # way) may name work the claim ran too early to see: it stands.
                queue.maybe_work = len(claimed) == limit or self._pokes != pokes
            if requeued and queue is not None:
                queue.maybe_work = True  # a retry or a handed-back job may be due now
            for job in claimed:
                self._start(job, sent)

    def _poke(self, *, hinted: bool = False) -> None:
        """A claim may find something (``hinted``: a notification said so)."""
        self._hinted = self._hinted or hinted
        self._pokes += 1
        if isinstance(self.source, QueueSource):
            self.source.maybe_work = True
        self._wake.set()

    async def _round(self, limit: int) -> tuple[list[Claimed], bool, float]:
        """One round: the outcomes and hand-backs that wait, and a claim of up to
        ``limit`` jobs. Returns the jobs claimed, whether any job was queued again, and
        when (monotonic) the round's statement was sent (the claims' leases run from
        then)."""
        batch, self._outcomes = self._outcomes, []
        releases, self._releases = self._releases, []
        flushing = self._flushing
        if flushing is not None and any(a.task_id in flushing[0] for a, _ in batch):
            await asyncio.shield(flushing[1])  # its items come before the outcome's
        blobs = self.runtime.blobs
        outputs = [item for attempt, _ in batch for item in attempt.take_outputs(blobs)]
        sent = time.monotonic()
        try:
            await self._store_blobs([o for _, o in batch], outputs)
            sent = time.monotonic()
            claimed, due, claim_error = await self.runtime.db.arun(
                self._write_round, batch, outputs, releases, limit, write=True
            )
        except Exception as exc:
            self._releases[:0] = releases
            self.source.claims_lost()
            if batch and not is_unavailable(exc):
                # Not the database being away: something in the batch itself (a value
                # the database refuses). Write each outcome alone, so one bad outcome
                # cannot hold the others (and their workers' leases) hostage.
                log.error("worker %s: writing outcomes failed", self.id, exc_info=exc)
                batch = [await self._write_alone(a, outcome, outputs) for a, outcome in batch]
                return [], any(o.status is Status.QUEUED for _, o in batch), sent
            log_failure(log, exc, "worker %s: a write failed; retrying", self.id)
            for attempt, _ in batch:
                attempt.unflushed[:0] = [o for o in outputs if o[0].task_id == attempt.task_id]
            self._outcomes[:0] = batch
            await asyncio.sleep(0.5)
            return [], False, sent
        self._finished(batch)
        if claim_error is not None:  # the outcomes were written, the claim was not
            self.source.claims_lost()
            log_failure(log, claim_error, "worker %s: a claim failed; retrying", self.id)
            await asyncio.sleep(0.5)
        elif limit:
            self._due = due
        again = [(attempt.task_id, time.time()) for attempt in releases]
        again += [(o.task_id, o.retry_at or 0.0) for _, o in batch if o.status is Status.QUEUED]
        if again:
            self.runtime.publisher.queued(again)
        self.source.claimed(claimed)
        return claimed, bool(again), sent

    def _queued_by_groups(
        self,
        changed: Sequence[Change],
        batch: list[tuple[Attempt, Outcome]],
        releases: list[Attempt],
    ) -> None:
        """Tell the engine of the tasks a round queued besides its retries and
        hand-backs: groups' ``then`` tasks, queued when their last part succeeded."""
        own = {a.task_id for a, _ in batch} | {a.task_id for a in releases}
        queued = [c.task_id for c in changed if c.status is Status.QUEUED and c.task_id not in own]
        if queued:
            self.runtime.publisher.queued([(task_id, time.time()) for task_id in queued])

    def _write_round(
        self,
        batch: list[tuple[Attempt, Outcome]],
        outputs: list[Unwritten],
        releases: list[Attempt],
        limit: int,
    ) -> tuple[list[Claimed], float | None, Exception | None]:
        """A round's writes, on the database's write thread: the outcomes and
        hand-backs, and the claim. Returns the jobs claimed, the next due time, and the
        claim's error if the claim alone failed (the outcomes were written).

        Where the driver carries notifications (PostgreSQL) and the round only records
        how attempts ended, that is one statement that sends the records' changes
        itself (no BEGIN/COMMIT, no notification round trip); the claim follows as a
        statement of its own, with a relaxed commit. Elsewhere one transaction does
        both (SQLite: one lock, one sync)."""
        db = self.runtime.db
        settles = bool(batch or releases)
        # (A group's part ends in a transaction with its group's update.)
        lone = not (outputs or releases) and all(
            o.status.done and a.job.parent_id is None for a, o in batch
        )
        carrier = None
        if settles and lone and db.driver.carries:
            carrier = self.runtime.notifier.carrier(written=True)
        if carrier is None or not limit:
            changed, claimed, due = db.write(
                self._round_txn,
                batch,
                outputs,
                releases,
                limit,
                carrier,
                durable=settles,  # a lost claim is only run again
                # Statements that may commit one by one on PostgreSQL: no BEGIN/COMMIT.
                # (Capped claims take turns under a lock held until commit.)
                autocommit=(lone or not settles) and not (limit and self.caps),
            )
            self._publish([c for c in changed if carrier is None or not c.status.done])
            self._queued_by_groups(changed, batch, releases)
            return claimed, due, None
        db.write(self._round_txn, batch, outputs, releases, 0, carrier, autocommit=True)
        try:
            _, claimed, due = db.write(
                self._round_txn,
                [],
                [],
                [],
                limit,
                None,
                durable=False,
                autocommit=not self.caps,
            )
        except Exception as exc:
            return [], None, exc
        return claimed, due, None

    async def _write_alone(
        self, attempt: Attempt, outcome: Outcome, outputs: list[Unwritten]
    ) -> tuple[Attempt, Outcome]:
        """Write one attempt's outcome (and its outputs) in its own transaction. If the
        database refuses it, the task fails with ``OutcomeNotStored`` instead; if even
        that cannot be written, its lease runs out and the reaper takes over."""
        task_id = attempt.task_id
        mine = [o for o in outputs if o[0].task_id == task_id]
        db = self.runtime.db
        try:
            await self._store_blobs([outcome], mine)
            changed, _, _ = await db.awrite(
                self._round_txn, [(attempt, outcome)], mine, [], 0, None
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
                floor=attempt.floor,
            )
            try:
                changed, _, _ = await db.awrite(
                    self._round_txn, [(attempt, outcome)], [], [], 0, None
                )
            except Exception as again:
                log_failure(log, again, "worker %s: failing task %s failed too", self.id, task_id)
                self._writing.discard(task_id)
                self._over(attempt)
                return attempt, outcome
        self._finished([(attempt, outcome)])
        self._publish(changed)
        return attempt, outcome

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

    def _finished(self, batch: list[tuple[Attempt, Outcome]]) -> None:
        for attempt, outcome in batch:
            self._writing.discard(attempt.task_id)
            self._over(attempt)
            self.runtime.observers.emit(
                "finished",
                attempt.task_id,
                attempt.job.name,
                outcome.status,
                time.monotonic() - attempt.started_at,
            )

    def _over(self, attempt: Attempt) -> None:
        """The source's ``attempt_over`` — unless a newer attempt of the task runs here."""
        current = self._running.get(attempt.task_id)
        if current is None or current is attempt:
            self.source.attempt_over(attempt.task_id)

    def _round_txn(
        self,
        conn: Connection,
        batch: list[tuple[Attempt, Outcome]],
        outputs: list[Unwritten],
        releases: list[Attempt],
        limit: int,
        carrier: Carrier | None,
    ) -> tuple[list[Change], list[Claimed], float | None]:
        now = time.time()
        driver = self.runtime.db.driver
        changed: list[Change] = []
        if batch:
            outcomes = [o for _, o in batch]
            items = [item for item, _ in outputs]
            parents = {a.task_id: a.job.parent_id for a, _ in batch if a.job.parent_id}
            changed += driver.attempt_finish(
                conn, self.id, outcomes, now=now, outputs=items, carrier=carrier, parents=parents
            )
            written = {c.task_id for c in changed}
            for attempt, _ in batch:
                if attempt.task_id not in written:
                    log.warning(
                        "worker %s: the outcome of task %s was refused: its lease was lost",
                        self.id,
                        attempt.task_id,
                    )
        if releases:
            handed = [(attempt.task_id, attempt.floor) for attempt in releases]
            changed += driver.attempt_release(conn, self.id, handed, now=now)
        claimed, due = self.source.claim(conn, limit, now) if limit else ([], None)
        return changed, claimed, due

    async def _sleep_or_wake(self, timeout: float) -> bool:
        """Wait for ``_wake`` at most ``timeout`` seconds; True if it was set."""
        if timeout > 0 and not self._wake.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return False
        elif not self._wake.is_set():
            await asyncio.sleep(0)  # always yield: callers loop on this
        return self._wake.is_set()

    def _call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the worker's loop (from any thread), if it runs."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(callback)

    def _on_jobs_hint(self, hint: Hint | None) -> None:  # listener thread
        self._call_soon(partial(self._on_hint, hint))

    def _on_hint(self, hint: Hint | None) -> None:
        """New jobs: claim now, unless the hint names a job that falls to another
        worker (see ``errands.peers``)."""
        queue = self.source if isinstance(self.source, QueueSource) else None
        if hint is not None and queue is not None:
            if hint[0] not in self.names:
                return
            if not self.peers.chooses_me(hint):
                queue.maybe_work = True  # the next round claims, if one runs anyway
                return
            full = self._stopping or len(self._running) >= self.settings.concurrency
            if full and len(self.peers.workers(hint[0])) > 1:
                self.runtime.notifier.publish_jobs()  # chosen but full: wake every worker
            self._chosen = True
        self._poke(hinted=True)

    def _refresh_peers(self) -> None:
        """Read the live workers again soon, with a heartbeat now (at most once a
        second: on the heartbeat's own connection, not one more)."""
        now = time.monotonic()
        if now - self._peers_read_at >= 1.0:
            self._peers_read_at = now
            self._beat_now.set()

    def _peers_since(self, now: float | None = None) -> datetime:
        """Workers seen since then are alive (two heartbeats, the last one missed)."""
        assert self.settings.heartbeat_interval is not None
        return utc((now or time.time()) - 2 * self.settings.heartbeat_interval)

    def _on_cancel_hint(self, task_ids: Sequence[str]) -> None:  # listener thread
        # A hint only triggers a heartbeat, which reads the cancel flags from the database.
        self._call_soon(self._beat_now.set)

    # -- running -----------------------------------------------------------------------
    def _start(self, job: Claimed, leased_at: float) -> None:
        late = time.monotonic() - leased_at
        if late > self.settings.fence_after:
            # The fence's rule, at the start: this process was paused between the claim
            # and now, and the lease may have run out; another worker may already run
            # the task. Do not start it (the fence would stop it, but only after the two
            # had overlapped): the lease lapses and the reaper queues the task again.
            log.warning(
                "worker %s: the claim of task %s is %.1f s old; not starting it",
                self.id,
                job.task_id,
                late,
            )
            if job.task_id not in self._running:
                self.source.attempt_over(job.task_id)
            return
        definition = self.runtime.registry.get(job.name)
        ctx = TaskContext(
            task_id=job.task_id,
            owner=job.owner,
            name=job.name,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
        )
        attempt = Attempt(job, definition, ctx, next_seq=job.output_floor, lease_at=leased_at)
        stale = self._running.get(job.task_id)
        self._running[job.task_id] = attempt
        if stale is not None:
            # This worker lost the lease of an attempt it still runs (it was paused past
            # the lease, say) and has just claimed the task again: the old attempt's
            # writes would be refused; stop it before the new one starts.
            self._lease_lost(stale)
            self._runner.abandon(stale)
        self.started += 1
        self.runtime.observers.emit("started", job.task_id, job.name, Status.RUNNING, None)
        self._runner.start(attempt)

    def _settle(self, attempt: Attempt, outcome: Outcome | None) -> None:
        """The runner's report that an attempt is over (see ``attempt.Settle``)."""
        attempt.settled = True
        if self._running.get(attempt.task_id) is attempt:
            del self._running[attempt.task_id]
        if outcome is not None:
            outcome.progress = attempt.ctx._final_progress()
            if outcome.status.done:
                outcome.expires_at = self.runtime.expiry(attempt.job.name, time.time())
            self._writing.add(attempt.task_id)
            self._outcomes.append((attempt, outcome))
        elif attempt.stop_reason is not None and attempt.stop_reason.hands_back:
            self._releases.append(attempt)
        else:  # its lease is gone: nothing to write
            self._over(attempt)
        self._wake.set()

    def _lease_lost(self, attempt: Attempt) -> None:
        log.warning("worker %s lost the lease of task %s", self.id, attempt.task_id)
        self._runner.stop(attempt, StopReason.LEASE_LOST)

    # -- writing -----------------------------------------------------------------------
    def _publish(self, changed: Sequence[Change]) -> None:
        if changed:
            self.runtime.notifier.publish_changes(changed)

    async def _flush_loop(self) -> None:
        interval = self.settings.progress_interval
        blobs = self.runtime.blobs
        while True:
            await asyncio.sleep(interval)
            reports: list[Report] = []
            outputs: list[Unwritten] = []
            attempts: dict[str, Attempt] = {}
            for attempt in list(self._running.values()):
                p = attempt.ctx._take_progress()
                items = attempt.take_outputs(blobs)
                if p is None and not items:
                    continue
                reports.append(Report(attempt.task_id, attempt.floor, p))
                outputs.extend(items)
                attempts[attempt.task_id] = attempt
            if not reports:
                continue
            done: asyncio.Future[None] = self.loop.create_future()
            self._flushing = ({item.task_id for item, _ in outputs}, done)
            try:
                await self._store_blobs([], outputs)
                changed = await self.runtime.db.awrite(
                    self.runtime.db.driver.attempt_report,
                    self.id,
                    reports,
                    [item for item, _ in outputs],
                    now=time.time(),
                    parents={t: a.job.parent_id for t, a in attempts.items() if a.job.parent_id},
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
                for task_id, attempt in attempts.items():
                    if task_id not in written and not attempt.settled:
                        self._lease_lost(attempt)

    async def _heartbeat_loop(self) -> None:
        s = self.settings
        assert s.heartbeat_interval is not None
        wait = 0.0  # the first at once: it reads the live workers (see ``_beat_txn``)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), wait)
            self._beat_now.clear()
            wait = s.heartbeat_interval
            try:
                await self._heartbeat()
            except Exception as exc:
                log_failure(log, exc, "worker %s: heartbeat failed", self.id)
                wait = min(wait, 1.0)  # try again soon: the leases run out

    async def _heartbeat(self) -> None:
        ids = list(self._running) + [i for i in self._writing if i not in self._running]
        db = self.runtime.db
        if not ids:
            await db.awrite(self._beat_txn, [], 0.0, durable=False)
            return
        asked = {task_id: self._running.get(task_id) for task_id in ids}
        sent = time.monotonic()
        held, cancel = await db.awrite(
            self._beat_txn, ids, time.time() + self.settings.lease_seconds, durable=False
        )
        for task_id, attempt in list(self._running.items()):
            if asked.get(task_id) is not attempt:
                # Claimed (or claimed again, for a retry) while this heartbeat was in
                # flight: that attempt's lease is fresh, whatever the heartbeat saw.
                continue
            if task_id not in held:
                self._lease_lost(attempt)
                continue
            attempt.lease_at = sent
            if task_id in cancel:
                self._runner.stop(attempt, StopReason.CANCEL)

    def _beat_txn(
        self, conn: Connection, ids: list[str], lease_until: float
    ) -> tuple[set[str], set[str]]:
        """The heartbeat: this worker seen, its leases renewed (the ones it still
        holds, and those asked to cancel), and the live workers read again (for
        ``errands.peers``), on one connection."""
        driver = self.runtime.db.driver
        now = time.time()
        driver.worker_beat(conn, self.id, utc(now))
        if isinstance(self.source, QueueSource):
            self.peers.update(driver.worker_peers(conn, self._peers_since(now)))
        return driver.job_heartbeat(conn, self.id, ids, lease_until=lease_until)

    async def _fence_loop(self) -> None:
        """Stop attempts whose lease this worker could not renew for ``fence_after``
        seconds (the database is away, or this process was paused): before the lease
        expires and another worker may start the task, not after. They are handed back
        once the database answers (if the lease is still this worker's then). Runs on
        its own timer, since a heartbeat may hang as long as the database does."""
        s = self.settings
        assert s.heartbeat_interval is not None
        fence_after, stopped = s.fence_after, (StopReason.FENCED, StopReason.LEASE_LOST)
        while True:
            await asyncio.sleep(min(s.heartbeat_interval / 2, 1.0))
            now = time.monotonic()
            for attempt in list(self._running.values()):
                late = now - attempt.lease_at
                if late > fence_after and attempt.stop_reason not in stopped:
                    log.warning(
                        "worker %s: the lease of task %s was not renewed for %.1f s; "
                        "stopping the attempt before it runs out",
                        self.id,
                        attempt.task_id,
                        late,
                    )
                    self._runner.stop(attempt, StopReason.FENCED)

    # -- stopping ----------------------------------------------------------------------
    def _install_signals(self) -> list[int]:
        handled: list[int] = []
        if self.settings.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    self.loop.add_signal_handler(sig, self.stop)
                    handled.append(sig)
        return handled


#: Kept for callers that build outcomes for a worker's hooks.
__all__ = ["JobSource", "QueueSource", "Worker", "WorkerSettings"]

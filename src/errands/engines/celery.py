"""The Celery engine: errands tasks run in Celery workers, over RabbitMQ or Redis.

``Errands(url, engine=CeleryEngine("amqp://…" or "redis://…"))`` selects it; everything
above the engine — records, the Python and HTTP APIs, live events — is unchanged.

What stays in the application database: the record, as with every engine, and the
job row, which is both the **transactional outbox** (written in the submit's
transaction, with the record) and the **lease** (which worker runs the job, until
when). What Celery carries: one message per job to run — ``errands.run(task_id)``.

- **Submit.** After the transaction commits, a publisher thread sends the message (with
  an ``eta`` for a delayed task) and marks the job sent (``sent_at``). If the process
  dies between the commit and the publication, the job waits unsent; every errands
  worker of this engine runs a relay that publishes the jobs waiting unsent since they
  became due for more than ``relay_after`` seconds (10 s).
- **Run.** ``errands worker module:app`` starts a Celery worker (thread pool,
  ``--concurrency`` threads, late acknowledgement, prefetch 1) and an errands worker
  in one process. Each message's task id is handed to the errands worker, which leases
  that job only if it is still waiting — so a message delivered twice runs the job
  once — and runs it as the SQL engine does: the same ``TaskContext``, progress,
  outputs, cancellation, timeouts, retries with backoff, heartbeats. The message is
  acknowledged once the outcome is written.
- **Crashes.** A killed worker's unacknowledged messages are delivered again (at once
  on RabbitMQ; after the visibility timeout on Redis); its leases run out and the
  errands reaper of any live worker queues those jobs again (or fails them when their
  attempts are spent), and they are published again. No record stays ``running``.
- **Retries, hand-backs, recoveries** are published again, with their due time.
- **Cancel.** The cooperative flag (heartbeat and notification, as with the SQL
  engine), and a Celery revoke of the task id.
- **Not honoured**: the SQL queue's claim order — priorities, owners' turns and
  ``max_running_per_owner`` — since the broker decides the order. A Celery worker
  started with ``celery worker`` instead of ``errands worker`` has no errands worker to
  hand its messages to: it rejects them back to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from ..errors import ConfigurationError
from ..store.database import log_failure
from ..store.values import Claimed
from ..worker import JobSource, Worker, WorkerSettings

if TYPE_CHECKING:
    from celery import Celery

    from ..runtime import Runtime

log = logging.getLogger("errands.celery")

#: The Celery task name of errands' single message type.
RUN_TASK = "errands.run"
_DONE, _REQUEUE = "done", "requeue"
_STOP = object()


class CeleryEngine:
    """Run errands tasks on Celery. ``broker``: the broker URL (``amqp://…`` for
    RabbitMQ, ``redis://…``); default ``$ERRANDS_CELERY_BROKER``. Or pass your own
    ``celery_app``. ``queue``: the Celery queue errands uses. ``relay_after``: how long
    a due job may wait unpublished before a worker publishes it."""

    name = "celery"
    hinted = False  # jobs are published to the broker

    def __init__(
        self,
        broker: str | None = None,
        *,
        celery_app: Celery | None = None,
        queue: str = "errands",
        relay_after: float = 10.0,
    ) -> None:
        from celery import Celery

        self._own_celery = celery_app is None
        if celery_app is None:
            broker = broker or os.environ.get("ERRANDS_CELERY_BROKER")
            if not broker:
                raise ConfigurationError(
                    "the Celery engine needs a broker URL (or $ERRANDS_CELERY_BROKER)"
                )
            celery_app = Celery("errands", broker=broker, set_as_current=False)
            celery_app.conf.update(
                # The broker given here, even if $CELERY_BROKER_URL names another.
                broker_read_url=broker,
                broker_write_url=broker,
                broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=False,
                task_ignore_result=True,
            )
        if relay_after <= 0:
            raise ConfigurationError("relay_after must be positive")
        self.celery = celery_app
        self.queue = queue
        self.relay_after = relay_after

        def run(task_id: str) -> None:
            """The body of ``errands.run`` in a Celery pool thread: hand the job to this
            process's errands worker and wait until its attempt is over."""
            from celery.exceptions import Reject

            source = self.current
            if source is None:
                raise Reject("no errands worker runs in this process", requeue=True)
            if source.hand(task_id).result() == _REQUEUE:
                raise Reject("the errands worker is stopping", requeue=True)

        self._task = celery_app.task(
            name=RUN_TASK,
            shared=False,  # this app only (a shared task would join every app made later)
            acks_late=True,
            reject_on_worker_lost=True,
            ignore_result=True,
        )(run)
        self._runtime: Runtime | None = None
        #: The source of the errands worker of this process that runs the messages (one
        #: at most).
        self.current: CelerySource | None = None
        self._outbox: SimpleQueue[Any] = SimpleQueue()
        self._publisher: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- the record layer's calls ----------------------------------------------------
    def attach(self, runtime: Runtime) -> None:
        if self._runtime is not None and self._runtime is not runtime:
            raise ConfigurationError("a CeleryEngine serves one Errands app")
        self._runtime = runtime

    def queued(self, jobs: Sequence[tuple[str, float]]) -> None:
        if jobs:
            self._post(("publish", list(jobs)))

    def request_cancel(self, task_ids: Sequence[str]) -> None:
        assert self._runtime is not None
        self._runtime.notifier.publish_cancel(task_ids)  # the cooperative flag, at once
        self._post(("revoke", list(task_ids)))

    def worker(self, runtime: Runtime, settings: WorkerSettings) -> Worker:
        if settings.burst:
            raise ConfigurationError(
                "burst mode drains the SQL queue; a Celery worker runs until it is stopped"
            )
        return Worker(runtime, settings, source=CelerySource(self))

    def close(self) -> None:
        """Publish what is pending (for up to 5 s), then stop the publisher."""
        with self._lock:
            publisher, self._publisher = self._publisher, None
        if publisher is not None:
            self._outbox.put(_STOP)
            publisher.join(5)
        if self._own_celery:
            self.celery.close()  # its broker connections

    # -- publishing ------------------------------------------------------------------
    def _post(self, item: Any) -> None:
        with self._lock:
            if self._publisher is None or not self._publisher.is_alive():
                self._publisher = threading.Thread(
                    target=self._publish_loop, name="errands-celery-publisher", daemon=True
                )
                self._publisher.start()
        self._outbox.put(item)

    def _publish_loop(self) -> None:
        while True:
            items = [self._outbox.get()]
            with contextlib.suppress(Empty):
                while len(items) < 1000:
                    items.append(self._outbox.get_nowait())
            stop = any(i is _STOP for i in items)
            jobs = [j for i in items if i is not _STOP and i[0] == "publish" for j in i[1]]
            revoked = [t for i in items if i is not _STOP and i[0] == "revoke" for t in i[1]]
            if jobs:
                self._publish(jobs)
            if revoked:
                try:
                    self.celery.control.revoke(revoked)
                except Exception as exc:
                    log.warning("errands: revoking %d Celery task(s) failed: %s", len(revoked), exc)
            if stop:
                return

    def _publish(self, jobs: Sequence[tuple[str, float]]) -> None:
        """Send one message per job; mark the ones sent (the relay sends the others)."""
        sent: list[tuple[str, float]] = []
        now = time.time()
        for task_id, due in jobs:
            eta = datetime.fromtimestamp(due, UTC) if due > now + 0.05 else None
            try:
                self._task.apply_async(args=[task_id], task_id=task_id, queue=self.queue, eta=eta)
            except Exception as exc:
                log.warning(
                    "errands: publishing task %s failed (it will be relayed): %s", task_id, exc
                )
                continue
            sent.append((task_id, max(now, due)))
        if sent and self._runtime is not None:
            db = self._runtime.db
            try:
                db.write(db.driver.job_mark_sent, sent, durable=False)
            except Exception as exc:
                log_failure(log, exc, "errands: marking %d job(s) sent failed", len(sent))


class CelerySource(JobSource):
    """The job source of an errands worker fed by a Celery worker in the same process
    (``errands.worker.JobSource``): each round claims exactly the jobs Celery delivered
    (see the module docstring) instead of polling the queue."""

    def __init__(self, engine: CeleryEngine) -> None:
        self.engine = engine
        self._inbox: list[tuple[str, Future[str]]] = []
        self._asked: list[tuple[str, Future[str]]] = []
        self._holding: dict[str, list[Future[str]]] = {}
        self._controller: Any = None
        self._consumer: threading.Thread | None = None
        self._relay: asyncio.Task[None] | None = None
        self._previous_default: Any = None

    # -- from Celery's pool threads -----------------------------------------------------
    def hand(self, task_id: str) -> Future[str]:
        """Run this job if it is still waiting; the future is done when its attempt is
        over (``"done"``), or at once if there is nothing to run, or ``"requeue"``
        when the worker is stopping (the message goes back to the broker)."""
        future: Future[str] = Future()
        try:
            self.worker.loop.call_soon_threadsafe(self._take, task_id, future)
        except (AssertionError, RuntimeError):  # not running (yet, or any more)
            future.set_result(_REQUEUE)
        return future

    def _take(self, task_id: str, future: Future[str]) -> None:
        if self.worker.stopping:
            future.set_result(_REQUEUE)
            return
        self._inbox.append((task_id, future))
        self.worker.wake()

    # -- the job source ------------------------------------------------------------------
    def wanted(self, free: int) -> int:
        if free > 0 and self._inbox and not self._asked:
            self._asked, self._inbox = self._inbox[:free], self._inbox[free:]
        return len(self._asked)

    def claim(self, conn: Connection, limit: int, now: float) -> tuple[list[Claimed], float | None]:
        worker = self.worker
        driver = worker.runtime.db.driver
        ids = list(dict.fromkeys(task_id for task_id, _ in self._asked))
        lease = worker.settings.lease_seconds
        claimed = driver.job_claim_ids(
            conn, worker.id, ids, names=worker.names, now=now, lease_seconds=lease
        )
        if len(claimed) < len(ids):  # the others run elsewhere, ended, or wait oddly:
            got = {job.task_id for job in claimed}  # a job left waiting is relayed again
            driver.job_unmark_sent(conn, [i for i in ids if i not in got])
        return claimed, None

    def claimed(self, jobs: Sequence[Claimed]) -> None:
        asked, self._asked = self._asked, []
        got = {job.task_id for job in jobs}
        for task_id, future in asked:
            if task_id in got:
                self._holding.setdefault(task_id, []).append(future)
            else:  # leased elsewhere, finished, cancelled: this message has nothing to run
                future.set_result(_DONE)

    def claims_lost(self) -> None:
        self._inbox[:0], self._asked = self._asked, []

    def attempt_over(self, task_id: str) -> None:
        for future in self._holding.pop(task_id, ()):
            future.set_result(_DONE)

    # -- running and stopping -------------------------------------------------------------
    def stopping(self) -> None:
        """Ask the Celery worker to stop consuming (a warm shutdown: its pool threads
        still wait for their attempts). Celery's consumer loop checks this flag of its
        own, in its own thread; calling its ``stop()`` from another thread would share
        the broker connection between two threads."""
        from celery.worker import state

        if self._controller is not None:
            state.should_stop = 0

    async def start(self) -> None:
        engine, settings = self.engine, self.worker.settings
        if engine.current is not None:
            raise ConfigurationError("one errands worker per process runs Celery messages")
        engine.current = self
        celery_log = logging.getLogger("celery")
        if celery_log.level == logging.NOTSET:  # two INFO lines per task otherwise
            celery_log.setLevel(logging.WARNING)
        from celery import _state

        # Celery's thread pool finds the task's app as the default app (its threads have
        # no current app of their own): make it this engine's while the worker runs.
        self._previous_default = _state.default_app
        engine.celery.set_default()
        self._controller = engine.celery.WorkController(
            pool_cls="threads",
            concurrency=settings.concurrency,
            queues=[engine.queue],
            prefetch_multiplier=1,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            hostname=f"errands-{os.getpid()}-{os.urandom(3).hex()}@{socket.gethostname()}",
            loglevel="WARNING",
        )
        hub = getattr(self._controller, "hub", None)
        if hub is not None:
            # Celery's consumer loop sees a stop request only between two polls, and
            # with no timer due a poll may wait 10 s: keep one due every 0.1 s.
            hub.call_repeatedly(0.1, _tick)
        self._consumer = threading.Thread(
            target=self._controller.start, name="errands-celery-worker", daemon=True
        )
        self._consumer.start()
        self._relay = asyncio.ensure_future(self._relay_loop())

    async def close(self) -> None:
        if self._relay is not None:
            self._relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay
        for _, future in [*self._asked, *self._inbox]:
            future.set_result(_REQUEUE)
        self._asked, self._inbox = [], []
        for task_id in list(self._holding):
            self.attempt_over(task_id)
        if self._consumer is None:
            return
        self.stopping()
        await asyncio.get_running_loop().run_in_executor(None, self._consumer.join, 30)
        from celery import _state
        from celery.worker import state

        state.should_stop = None  # another worker may run in this process later
        _state.set_default_app(self._previous_default)
        self.engine.current = None

    async def _relay_loop(self) -> None:
        """Publish the jobs whose publication was lost (the outbox relay)."""
        engine, worker = self.engine, self.worker
        db = worker.runtime.db
        every = max(0.2, engine.relay_after / 2)
        while True:
            await asyncio.sleep(every)
            try:
                jobs = await db.aread(db.driver.job_unsent, before=time.time() - engine.relay_after)
            except Exception as exc:
                log_failure(log, exc, "worker %s: reading unsent jobs failed", worker.id)
                continue
            if jobs:
                log.info("worker %s: relaying %d unsent job(s)", worker.id, len(jobs))
                engine.queued(jobs)


def _tick() -> None:
    """A timer that keeps Celery's consumer loop turning (see ``CelerySource.start``)."""

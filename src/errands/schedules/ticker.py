"""A worker's share of the schedules: it fires due ticks, and keeps the schedules
declared in code in step with the code of the workers that are alive.

**Firing.** Every worker that can run a schedule's task fires its due ticks: in one
transaction it takes the due schedules (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so
workers never wait for each other; SQLite: one writer at a time), creates each tick's
task and moves the schedule to its first tick after now — so ticks missed while no
worker ran make one catch-up task, not a burst. The task carries the schedule's id and
the tick's time, and a unique index on those makes one task per tick whatever the
number of workers, their restarts and their clocks (a tick is the time stored in the
schedule's row, never a worker's clock reading). The moving is guarded by the tick too.

**Reconciling code schedules** (``app.schedule``). Each worker registers the schedules
its code declares (key → hash of the definition) in its ``errands_worker`` row. At
start and every ``reconcile_interval`` it compares them with the rows:

- a key no live worker declares is deleted (a schedule removed from the code stops once
  no worker runs the code that declares it);
- a key this worker declares and no row holds is inserted;
- a row whose definition differs from this worker's is rewritten only when every live
  worker declaring the key agrees with this one. While two versions of the code run
  side by side (a deploy), the row keeps the definition it has; it follows the new code
  once the old workers are gone. No two workers ever rewrite each other's definitions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Sequence

from sqlalchemy import Connection

from ..ids import new_task_id
from ..records import Schedule, TaskRecord
from ..registry import DeclaredSchedule
from ..runtime import Runtime
from ..store.codec import json_text, utc
from ..store.database import log_failure
from ..store.values import record_of
from .service import timing_of
from .timing import Timing

#: A declaration to write: key, definition, its hash, and the stored schedule and hash.
_Change = tuple[str, DeclaredSchedule, str, tuple[Schedule, str | None] | None]
log = logging.getLogger("errands.worker")

#: Schedules fired per transaction.
_BATCH = 100


def definition_hash(d: DeclaredSchedule) -> str:
    """A hash of what a code schedule is (not of its state)."""
    text = json.dumps(
        [d.name, d.payload, d.owner, d.cron, d.every, d.timezone],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()


def declarations(runtime: Runtime) -> dict[str, str]:
    """The schedules this process's code declares: key → definition hash (registered
    with the worker)."""
    return {key: definition_hash(d) for key, d in runtime.registry.schedules.items()}


class Ticker:
    def __init__(
        self,
        runtime: Runtime,
        worker_id: str,
        names: Sequence[str],
        *,
        poll_interval: float = 1.0,
        reconcile_interval: float = 15.0,
        alive_within: float = 60.0,
    ) -> None:
        self.runtime = runtime
        self.worker_id = worker_id
        self.names = list(names)
        self.poll_interval = poll_interval
        self.reconcile_interval = reconcile_interval
        #: A worker not seen for this long is not counted among the live ones.
        self.alive_within = alive_within

    async def run(self) -> None:
        """Reconcile, then fire due ticks until cancelled."""
        db = self.runtime.db
        next_reconcile = 0.0
        while True:
            if time.monotonic() >= next_reconcile:
                next_reconcile = time.monotonic() + self.reconcile_interval
                try:
                    await db.arun(self.reconcile, time.time(), write=True)
                except Exception as exc:
                    log_failure(log, exc, "worker %s: reconciling schedules failed", self.worker_id)
            wait = self.poll_interval
            try:
                next_due = await db.arun(self.fire, time.time(), write=True)
            except Exception as exc:
                log_failure(log, exc, "worker %s: firing schedules failed", self.worker_id)
            else:
                if next_due is not None:
                    wait = min(wait, max(0.0, next_due - time.time()))
            await asyncio.sleep(wait)

    # -- firing --------------------------------------------------------------------------
    def fire(self, now: float) -> float | None:
        """Fire the due ticks (on the database's write thread); when the next is due."""
        db = self.runtime.db
        if not self.names:
            return None
        # A write transaction only when a tick is due: on SQLite an empty one still
        # takes the database's write lock.
        next_due: float | None = db.read(db.driver.schedule_next_due, self.names)
        while next_due is not None and next_due <= now:
            created, more = db.write(self._fire_txn, now)
            self.runtime.announce(created)
            if not more:
                next_due = db.read(db.driver.schedule_next_due, self.names)
                break
        return next_due

    def _fire_txn(self, conn: Connection, now: float) -> tuple[list[TaskRecord], bool]:
        driver = self.runtime.db.driver
        due = driver.schedule_due(conn, self.names, now, _BATCH)
        ticks = []
        for schedule, tick in due:
            definition = self.runtime.registry.find(schedule.name)
            assert definition is not None
            following = timing_of(schedule).next_tick(max(now, tick), anchor=tick)
            task = definition.new_task(
                schedule.payload,
                json_text(schedule.payload),
                owner=schedule.owner,
                now=now,
                run_at=now,
                tick=(schedule.id, tick),
            )
            ticks.append((task, tick, following))
        created = (
            [record_of(t) for t in driver.schedule_fire(conn, ticks, utc(now))] if ticks else []
        )
        return created, len(due) == _BATCH

    # -- reconciling ---------------------------------------------------------------------
    def reconcile(self, now: float) -> None:
        """Bring the code schedules in line with the live workers' declarations (on the
        database's write thread). A write transaction only when something differs: on
        SQLite an empty one still takes the database's write lock."""
        db = self.runtime.db
        gone, changed = db.read(self._differences, now)
        if gone or changed:
            db.write(self._reconcile_txn, now)

    def _differences(self, conn: Connection, now: float) -> tuple[list[str], list[_Change]]:
        """The stored code schedules no live worker declares, and this process's
        declarations to write: ``(key, definition, hash, stored or None)``."""
        driver = self.runtime.db.driver
        mine = self.runtime.registry.schedules
        live = driver.worker_declarations(conn, utc(now - self.alive_within))
        hashes: dict[str, set[str]] = {}
        for declared in live:
            for key, digest in declared.items():
                hashes.setdefault(key, set()).add(digest)
        stored = driver.schedule_declared(conn)
        gone = [key for key in stored if key not in hashes and key not in mine]
        changed = []
        for key, d in mine.items():
            digest = definition_hash(d)
            held = stored.get(key)
            if held is not None and (held[1] == digest or hashes.get(key, {digest}) != {digest}):
                continue  # as declared, or live workers disagree: leave it
            changed.append((key, d, digest, held))
        return gone, changed

    def _reconcile_txn(self, conn: Connection, now: float) -> None:
        driver = self.runtime.db.driver
        gone, changed = self._differences(conn, now)
        if driver.schedule_undeclare(conn, gone):
            log.info("worker %s: schedule(s) no longer declared: %s", self.worker_id, gone)
        for key, d, digest, held in changed:
            timing = Timing(d.cron, d.every, d.timezone)
            kept = held[0] if held is not None else None
            stamp = utc(now)
            row: dict[str, object] = {
                "id": new_task_id(now),
                "owner": d.owner,
                "name": d.name,
                "payload": d.payload,
                "cron": d.cron,
                "every_seconds": d.every,
                "timezone": d.timezone,
                "paused": False,
                "next_run_at": timing.first_tick(now),
                "created_at": stamp,
                "updated_at": stamp,
                "code_key": key,
                "definition": digest,
            }
            if kept is not None and (kept.paused or timing_of(kept) == timing):
                del row["next_run_at"]  # paused, or the same ticks: its next tick stays
            driver.schedule_declare(conn, row, None if kept is None else kept.id)
            log.info("worker %s: schedule %r declared", self.worker_id, key)

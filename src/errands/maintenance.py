"""A worker's housekeeping: the reaper and the purge.

The reaper runs when the worker starts and every ``reap_interval`` seconds. It first
looks at the other workers registered on this host: one whose process is gone
(``errands.liveness``) has its leases ended at once. Then it recovers every job whose
lease expired: the task goes back to ``queued`` (its attempt is spent), or ends
``failed`` (``WorkerLost``) when its attempts are spent, or ``cancelled`` if its owner
had asked. Across hosts, a dead worker's tasks come back when their leases expire.

Every ``purge_interval`` seconds it also deletes expired finished records (a bounded
batch, so no worker spends long on it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from datetime import datetime
from functools import partial

from sqlalchemy import Connection

from . import liveness
from .records import Change, Status
from .runtime import Runtime
from .store.codec import utc
from .store.database import log_failure

log = logging.getLogger("errands.worker")


@dataclass(eq=False)
class Maintenance:
    runtime: Runtime
    worker_id: str
    hostname: str
    _: KW_ONLY
    lease_seconds: float
    reap_interval: float
    purge_interval: float

    async def run(self) -> None:
        """Reap at once and every ``reap_interval``; purge every ``purge_interval``."""
        next_purge = time.monotonic() + self.purge_interval
        while True:
            try:
                await self.reap()
            except Exception as exc:
                log_failure(log, exc, "worker %s: the reaper failed", self.worker_id)
            if self.purge_interval and time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self.purge_interval
                try:
                    purge = partial(self.runtime.purge, batch=500, limit=10_000)
                    await asyncio.to_thread(purge, now=time.time())
                except Exception as exc:
                    log_failure(log, exc, "worker %s: purging failed", self.worker_id)
            await asyncio.sleep(self.reap_interval)

    async def reap(self) -> list[Change]:
        now = time.time()
        # A worker's row outlives it only if it was killed; forget it after a while.
        silent = utc(now - max(60.0, 10 * self.lease_seconds))
        changed, dead = await self.runtime.db.awrite(
            self._reap_txn, now, partial(self.runtime.expiry, now=now), silent
        )
        if dead:
            log.warning(
                "worker %s: worker(s) %s on this host died", self.worker_id, ", ".join(dead)
            )
        if changed:
            log.warning("reaper recovered %d task(s) whose worker stopped", len(changed))
            self.runtime.notifier.publish_changes(changed)
            back = [(c.task_id, now) for c in changed if c.status is Status.QUEUED]
            if back:
                self.runtime.publisher.queued(back)
        return changed

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
            for worker_id, pid, key in driver.worker_on_host(conn, self.hostname, self.worker_id)
            if liveness.is_dead(pid, key)
        ]
        if dead:
            driver.job_expire_leases(conn, dead)
            driver.worker_forget(conn, dead)
        driver.worker_forget_silent(conn, silent)
        return driver.job_reap(conn, now=now, expiry_for=expiry_for), dead

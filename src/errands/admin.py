"""Administrative views of an errands app: ``app.admin`` (figures across every owner).

Everything here spans every owner; call it only from code that has checked the caller
is an administrator.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runtime import Runtime


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: str
    hostname: str
    pid: int
    names: list[str]
    concurrency: int
    started_at: datetime
    seen_at: datetime
    #: The tasks it holds: ``{"task_id", "name", "owner"}``.
    running: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Bucket:
    """What finished in one interval."""

    start: datetime
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    #: Median and 95th percentile of run time (start → finish), seconds.
    run_p50: float | None = None
    run_p95: float | None = None
    #: Median time from submit to start, seconds.
    wait_p50: float | None = None

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled


@dataclass(frozen=True, slots=True)
class QueueState:
    #: Jobs waiting for a worker (due now or later).
    waiting: int
    #: Of them, due now.
    due: int
    #: Seconds the oldest due job has waited (None when none is due).
    oldest_age: float | None


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


class Admin:
    def __init__(self, runtime: Runtime) -> None:
        self._db = runtime.db

    async def workers(self, *, within: float | None = None) -> list[WorkerInfo]:
        """Workers seen in the last ``within`` seconds (default: three heartbeats of
        the default settings, 30 s), with what they run."""
        since = datetime.now(UTC) - timedelta(seconds=within or 30.0)
        rows = await self._db.aread(self._db.driver.worker_alive, since)
        return [WorkerInfo(**row) for row in rows]

    async def status_counts(self) -> dict[str, int]:
        return await self._db.aread(self._db.driver.stats_status_counts)

    async def name_status_counts(self) -> list[tuple[str, str, int, int]]:
        """(name, status, records, records that started) — for metrics."""
        return await self._db.aread(self._db.driver.stats_name_status_counts)

    async def queue(self) -> QueueState:
        now = time.time()
        waiting, due, oldest = await self._db.aread(self._db.driver.stats_queue_state, now)
        return QueueState(waiting, due, None if oldest is None else max(0.0, now - oldest))

    async def activity(
        self, *, hours: float = 1.0, bucket_seconds: int = 60, name: str | None = None
    ) -> list[Bucket]:
        """Throughput and latency per ``bucket_seconds`` over the last ``hours``,
        oldest first (every bucket is present, empty or not)."""
        now = datetime.now(UTC)
        span = timedelta(hours=hours)
        first = datetime.fromtimestamp(
            (now - span).timestamp() // bucket_seconds * bucket_seconds, UTC
        )
        rows = await self._db.aread(self._db.driver.stats_finished_since, first)
        count = int((now - first).total_seconds() // bucket_seconds) + 1
        # Per bucket: how many ended in each status; run times; wait times.
        ends = [dict.fromkeys(("succeeded", "failed", "cancelled"), 0) for _ in range(count)]
        runs: list[list[float]] = [[] for _ in range(count)]
        waits: list[list[float]] = [[] for _ in range(count)]
        for row_name, status, created, started, finished in rows:
            if name is not None and row_name != name:
                continue
            index = int((finished - first).total_seconds() // bucket_seconds)
            if not 0 <= index < count or status not in ends[index]:
                continue
            ends[index][status] += 1
            if started is not None:
                runs[index].append((finished - started).total_seconds())
                waits[index].append((started - created).total_seconds())
        return [
            Bucket(
                first + timedelta(seconds=i * bucket_seconds),
                **ends[i],
                run_p50=_quantile(runs[i], 0.5),
                run_p95=_quantile(runs[i], 0.95),
                wait_p50=_quantile(waits[i], 0.5),
            )
            for i in range(count)
        ]

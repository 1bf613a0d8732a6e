"""What the moving parts of an errands app share: the ``Runtime``.

The worker, the live hub, the admin views and the engines need the database, the task
registry, the notifier, the blob store, the lifecycle observers and the app's policies
(how long finished records are kept, how many of one owner's tasks may run at once) —
not the ``Errands`` facade, which is built on top of them. ``Errands`` makes one
``Runtime`` and hands it to each; none of them imports the facade.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from .blobs import Blobs
from .events.notifier import Hint, Notifier
from .observers import Observers
from .records import Change, TaskRecord
from .registry import Registry
from .store.codec import utc
from .store.database import Database


class Publisher(Protocol):
    """What the runtime asks of the execution engine (see ``errands.engines``)."""

    #: Its workers claim from the job table and are woken by the notifier's new-jobs
    #: hint (the SQL engine): ``queued`` only sends that hint, which a write may carry
    #: instead (``Notifier.carrier(jobs=True)``).
    hinted: bool

    def queued(self, jobs: Sequence[tuple[str, float]]) -> None:
        """A committed transaction queued these jobs, or queued them again (a retry, a
        job handed back or recovered): ``(task id, due time in Unix seconds)``. Must not
        block for long: it runs right after the caller's commit."""

    def request_cancel(self, task_ids: Sequence[str]) -> None:
        """The owners asked to cancel these running tasks; reach their workers."""


@dataclass(eq=False)
class Runtime:
    db: Database
    registry: Registry
    notifier: Notifier
    blobs: Blobs
    observers: Observers
    #: The engine that runs the work (it hears of jobs queued and cancel requests).
    publisher: Publisher
    #: How long finished records are kept, for tasks that set no ``retention``.
    default_retention: timedelta | None = timedelta(days=7)
    #: How many of one owner's tasks of one name may run at once, for tasks that set no
    #: ``max_running_per_owner`` of their own (None: no limit).
    max_running_per_owner: int | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def expiry(self, name: str, now: float) -> datetime | None:
        """When a record of task ``name`` finished at ``now`` may be purged (None: never)."""
        keep = self.default_retention
        definition = self.registry.find(name)
        if definition is not None and not definition.default_retention:
            keep = definition.retention
        if keep is None or keep == timedelta.max:
            return None
        return utc(now) + keep

    def running_caps(self, names: Sequence[str]) -> dict[str, int]:
        """Task name → how many of one owner's tasks of that name may run at once, for
        those of ``names`` that are limited."""
        caps: dict[str, int] = {}
        for name in names:
            definition = self.registry.find(name)
            cap = self.max_running_per_owner
            if definition is not None and definition.max_running_per_owner is not None:
                cap = definition.max_running_per_owner
            if cap is not None:
                caps[name] = cap
        return caps

    def purge(self, *, now: float, batch: int = 500, limit: int | None = None) -> int:
        """Delete records expired by ``now``, their outputs and blobs, ``batch`` rows per
        transaction (so no long lock stalls the workers). Returns how many went."""
        total = 0
        while limit is None or total < limit:
            size = batch if limit is None else min(batch, limit - total)
            n, with_blobs = self.db.write(self.db.driver.task_purge_expired, utc(now), size)
            if with_blobs:  # after the records are gone: no reader is left pointing here
                self.blobs.store.delete_tasks(with_blobs)
            total += n
            if n < size:
                break
        return total

    def announce(self, records: Sequence[TaskRecord], *, carried: bool = False) -> None:
        """Tell the observers, the engine and the live views of records a commit
        created. ``carried``: the insert carried the notifications (see
        ``Notifier.carrier``)."""
        if not records:
            return
        for record in records:
            self.observers.emit("submitted", record.id, record.name, record.status, None)
        jobs = [(r.id, r.run_at.timestamp()) for r in records]
        if carried:
            if not self.publisher.hinted:
                self.publisher.queued(jobs)
            return
        with self.notifier.batch():  # both hints in one round trip
            if self.publisher.hinted:
                self.notifier.publish_jobs(hint_of(records))
            else:
                self.publisher.queued(jobs)
            self.notifier.publish_changes([Change.of(r) for r in records])

    def on_close(self, closer: Callable[[], None]) -> None:
        """Call ``closer`` when the app closes (for parts made on demand, like a hub)."""
        self._closers.append(closer)

    def close(self) -> None:
        for closer in reversed(self._closers):
            closer()
        self._closers.clear()


def hint_of(records: Sequence[TaskRecord]) -> Hint | None:
    """The new-jobs hint of a commit that queued ``records``: the one record's task name
    and id when it queued one that is due now (the workers then choose one of them to
    claim it); else None (every worker is woken)."""
    if len(records) != 1 or records[0].run_at.timestamp() > time.time():
        return None
    return (records[0].name, records[0].id)

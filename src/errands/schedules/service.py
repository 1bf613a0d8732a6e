"""Users' schedules: create, list, get, pause, resume, delete — owner-scoped like tasks.

``app.schedules`` (async) and ``app.sync.schedules`` are thin faces of
``ScheduleOperations``, whose methods are plain synchronous calls (the async face runs
them on the database's threads). A schedule of another owner, or an id no schedule can
have, raises ``ScheduleNotFound`` exactly as a missing one does.
"""

from __future__ import annotations

import builtins
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..errors import InvalidSchedule, PayloadTooLarge, ScheduleNotFound, UnknownTask
from ..ids import is_task_id, new_task_id
from ..owners import owner_filter, owner_of
from ..records import Schedule
from ..runtime import Runtime
from ..store.codec import utc
from .timing import Timing, timing

DEFAULT_MIN_INTERVAL = 60.0
DEFAULT_MAX_PER_OWNER = 20


@dataclass(frozen=True)
class ScheduleLimits:
    """What users' schedules may be: no two ticks closer than ``min_interval`` seconds,
    and at most ``max_per_owner`` schedules per owner (None: no limit). Schedules
    declared in code are not limited."""

    min_interval: float = DEFAULT_MIN_INTERVAL
    max_per_owner: int | None = DEFAULT_MAX_PER_OWNER


def timing_of(schedule: Schedule) -> Timing:
    """A stored schedule's timing (checked when it was written)."""
    every = None if schedule.every is None else schedule.every.total_seconds()
    return Timing(schedule.cron, every, schedule.timezone)


def _scope(schedule_id: object, owner: object) -> str | None:
    """The owner filter of a call on ``schedule_id``; ``ScheduleNotFound`` for an id no
    schedule can have, as for one that does not exist."""
    who = owner_filter(owner)
    if not isinstance(schedule_id, str) or not is_task_id(schedule_id):
        raise ScheduleNotFound()
    return who


def _found(schedule: Schedule | None) -> Schedule:
    if schedule is None:
        raise ScheduleNotFound()
    return schedule


class ScheduleOperations:
    def __init__(self, runtime: Runtime, limits: ScheduleLimits, max_payload_bytes: int) -> None:
        self.runtime = runtime
        self.db = runtime.db
        self.limits = limits
        self.max_payload_bytes = max_payload_bytes

    def create(
        self,
        name: str,
        payload: Any,
        *,
        owner: str,
        cron: str | None,
        every: timedelta | float | None,
        timezone: str,
    ) -> Schedule:
        try:
            who = owner_of(owner)
        except ValueError as exc:
            raise InvalidSchedule("owner", str(exc)) from None
        if not isinstance(name, str):
            raise InvalidSchedule("name", "must be a task name")
        try:
            definition = self.runtime.registry.get(name)
        except UnknownTask as exc:
            raise InvalidSchedule("name", str(exc)) from None
        when = timing(cron, every, timezone, min_interval=self.limits.min_interval)
        _, stored, text = definition.parse(payload)  # InvalidPayload names its fields
        if len(text) > self.max_payload_bytes:
            raise PayloadTooLarge(len(text), self.max_payload_bytes)
        now = time.time()
        stamp = utc(now)
        row = {
            "id": new_task_id(now),
            "owner": who,
            "name": name,
            "payload": stored,
            "cron": when.cron,
            "every_seconds": when.every,
            "timezone": when.timezone,
            "paused": False,
            "next_run_at": when.first_tick(now),
            "created_at": stamp,
            "updated_at": stamp,
        }
        limit = self.limits.max_per_owner
        if not self.db.write(self.db.driver.schedule_insert, row, limit):
            raise InvalidSchedule("schedules", f"an owner may have at most {limit} schedules")
        return _found(self.db.read(self.db.driver.schedule_get, row["id"], who))

    def list(self, owner: object, limit: int, cursor: str | None) -> builtins.list[Schedule]:
        who = owner_filter(owner)
        if not 1 <= limit <= 500:
            raise ValueError("limit must be between 1 and 500")
        if cursor is not None and not is_task_id(cursor):
            raise ValueError("invalid cursor")
        return self.db.read(self.db.driver.schedule_list, who, limit, cursor)

    def get(self, schedule_id: str, owner: object) -> Schedule:
        who = _scope(schedule_id, owner)
        return _found(self.db.read(self.db.driver.schedule_get, schedule_id, who))

    def set_paused(self, schedule_id: str, owner: object, paused: bool) -> Schedule:
        """Pause, or resume (the next tick is the first after now: the ticks of the
        pause are not caught up)."""
        who = _scope(schedule_id, owner)
        now = time.time()
        return _found(
            self.db.write(
                self.db.driver.schedule_set_paused,
                schedule_id,
                who,
                paused,
                lambda s: timing_of(s).first_tick(now),
                utc(now),
            )
        )

    def delete(self, schedule_id: str, owner: object) -> None:
        who = _scope(schedule_id, owner)
        if not self.db.write(self.db.driver.schedule_delete, schedule_id, who):
            raise ScheduleNotFound()


class Schedules:
    """Users' schedules, for async code: ``app.schedules``. Every call takes ``owner``
    (the user's id, or ``ANY_OWNER`` from administrative code, except for ``create``)."""

    def __init__(self, ops: ScheduleOperations) -> None:
        self._ops = ops

    async def create(
        self,
        name: str,
        payload: Any = None,
        *,
        owner: str,
        cron: str | None = None,
        every: timedelta | float | None = None,
        timezone: str = "UTC",
    ) -> Schedule:
        """Create a task of ``name`` with ``payload`` for ``owner`` on every tick of
        ``cron`` (five fields, read in ``timezone``) or every ``every``. Refused with
        ``InvalidSchedule`` (naming the field) for a bad cron, interval or time zone, an
        interval shorter than the app's ``min_schedule_interval``, or an owner at the
        app's ``max_schedules_per_owner``; ``InvalidPayload`` for a payload the task's
        model refuses. Nothing is written when it is refused."""
        ops = self._ops
        return await ops.db.arun(
            lambda: ops.create(
                name, payload, owner=owner, cron=cron, every=every, timezone=timezone
            ),
            write=True,
        )

    async def list(
        self, *, owner: str, limit: int = 100, cursor: str | None = None
    ) -> builtins.list[Schedule]:
        """The owner's schedules, oldest first, ``limit`` (1–500) at a time; pass the
        last one's id as ``cursor`` for the next ones."""
        return await self._ops.db.arun(self._ops.list, owner, limit, cursor)

    async def get(self, schedule_id: str, *, owner: str) -> Schedule:
        return await self._ops.db.arun(self._ops.get, schedule_id, owner)

    async def pause(self, schedule_id: str, *, owner: str) -> Schedule:
        return await self._ops.db.arun(self._ops.set_paused, schedule_id, owner, True, write=True)

    async def resume(self, schedule_id: str, *, owner: str) -> Schedule:
        """Resume a paused schedule: its next tick is the first after now."""
        return await self._ops.db.arun(self._ops.set_paused, schedule_id, owner, False, write=True)

    async def delete(self, schedule_id: str, *, owner: str) -> None:
        """Delete the schedule; the tasks it created stay."""
        await self._ops.db.arun(self._ops.delete, schedule_id, owner, write=True)


class SyncSchedules:
    """The same calls for synchronous code: ``app.sync.schedules``."""

    def __init__(self, ops: ScheduleOperations) -> None:
        self._ops = ops

    def create(
        self,
        name: str,
        payload: Any = None,
        *,
        owner: str,
        cron: str | None = None,
        every: timedelta | float | None = None,
        timezone: str = "UTC",
    ) -> Schedule:
        return self._ops.create(
            name, payload, owner=owner, cron=cron, every=every, timezone=timezone
        )

    def list(
        self, *, owner: str, limit: int = 100, cursor: str | None = None
    ) -> builtins.list[Schedule]:
        return self._ops.list(owner, limit, cursor)

    def get(self, schedule_id: str, *, owner: str) -> Schedule:
        return self._ops.get(schedule_id, owner)

    def pause(self, schedule_id: str, *, owner: str) -> Schedule:
        return self._ops.set_paused(schedule_id, owner, True)

    def resume(self, schedule_id: str, *, owner: str) -> Schedule:
        return self._ops.set_paused(schedule_id, owner, False)

    def delete(self, schedule_id: str, *, owner: str) -> None:
        self._ops.delete(schedule_id, owner)

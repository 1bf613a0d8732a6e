"""Schedules: tasks created on the ticks of a cron expression or an interval.

- ``timing``: when ticks fall (cron in a time zone, or an interval);
- ``service``: users' schedules, owner-scoped (``app.schedules``, ``app.sync.schedules``);
- ``ticker``: what workers do — fire due ticks, reconcile schedules declared in code.
"""

from __future__ import annotations

from .service import ScheduleLimits, Schedules, SyncSchedules

__all__ = ["ScheduleLimits", "Schedules", "SyncSchedules"]

"""When a schedule's ticks fall: a cron expression in a time zone, or a fixed interval.

Cron expressions (five fields: minute, hour, day of month, month, day of week; parsed by
croniter) are evaluated on the wall clock of the schedule's time zone, then each wall
time is placed on the timeline:

- a wall time that does not exist (the hour skipped when clocks go forward) runs at the
  same distance past the change: 02:30 on the day Europe/Berlin skips from 02:00 to
  03:00 runs at 03:30 — a daily tick is never skipped;
- a wall time that happens twice (the hour repeated when clocks go back) runs at the
  first one only — a daily tick never runs twice.

Intervals (``every``) are counted in seconds from the schedule's first tick, whatever
the time zone. Ticks are Unix seconds; a tick is identified by its time, so workers
whose clocks differ still agree on it (they read it from the schedule's row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from ..errors import InvalidSchedule

#: How many ticks ahead the shortest gap between two ticks of a cron is looked for.
_GAP_SAMPLES = 50
#: The longest interval (100 years): its ticks stay within what the store keeps.
_LONGEST = 100 * 365.25 * 86400


@dataclass(frozen=True, slots=True)
class Timing:
    """A checked cron expression (``cron``) or interval in seconds (``every``), and the
    time zone cron is read in."""

    cron: str | None
    every: float | None
    timezone: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def first_tick(self, now: float) -> float:
        """The first tick after ``now`` of a new (or resumed) schedule."""
        if self.every is not None:
            return now + self.every
        return self.next_tick(now)

    def next_tick(self, after: float, *, anchor: float | None = None) -> float:
        """The first tick strictly after ``after``. For an interval, ticks are
        ``anchor + k × every`` (``anchor``: a tick of the schedule; by default
        ``after`` itself, the next tick then being one interval on)."""
        if self.every is not None:
            base = after if anchor is None else anchor
            steps = max(1, math.floor((after - base) / self.every) + 1)
            tick = base + steps * self.every
            while tick <= after:  # floating point
                tick += self.every
            return tick
        assert self.cron is not None
        zone = self.zone
        # Wall-clock iteration: croniter walks naive local times; each is then placed
        # on the timeline (fold=0: the earlier of a repeated hour; a skipped wall time
        # lands past the change, at the offset from before it).
        start = datetime.fromtimestamp(after, zone).replace(tzinfo=None)
        # Start an hour early: a wall time in a repeated hour may come before ``after``
        # in wall terms yet after it on the timeline.
        it = croniter(self.cron, start - timedelta(hours=1))
        for _ in range(100_000):
            wall: datetime = it.get_next(datetime)
            tick = wall.replace(tzinfo=zone, fold=0).timestamp()
            if tick > after:
                return tick
        raise InvalidSchedule("cron", "no tick ahead")  # pragma: no cover


def timing(
    cron: str | None,
    every: timedelta | float | None,
    timezone: str,
    *,
    min_interval: float | None = None,
) -> Timing:
    """Check a schedule's timing: exactly one of ``cron`` and ``every``, a known time
    zone, and (for users' schedules, ``min_interval``) no two ticks closer than
    ``min_interval`` seconds. ``InvalidSchedule`` names the field at fault."""
    if not isinstance(timezone, str) or not timezone:
        raise InvalidSchedule("timezone", "must be a time zone name such as 'Europe/Berlin'")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidSchedule("timezone", f"unknown time zone {timezone!r}") from None
    if (cron is None) == (every is None):
        raise InvalidSchedule("cron", "give either cron or every, not both nor neither")
    if every is not None:
        seconds = every.total_seconds() if isinstance(every, timedelta) else every
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise InvalidSchedule("every", "must be a timedelta or a number of seconds")
        if not math.isfinite(seconds) or seconds <= 0:
            raise InvalidSchedule("every", "must be a positive interval")
        if seconds > _LONGEST:
            raise InvalidSchedule("every", "must be at most 100 years")
        if min_interval is not None and seconds < min_interval:
            raise InvalidSchedule("every", f"must be at least {min_interval:g} seconds")
        return Timing(None, float(seconds), timezone)
    if not isinstance(cron, str) or len(cron.split()) != 5 or len(cron) > 255:
        raise InvalidSchedule(
            "cron", "must be a cron expression of five fields, such as '0 8 * * 1'"
        )
    if not croniter.is_valid(cron):
        raise InvalidSchedule("cron", f"not a valid cron expression: {cron!r}")
    result = Timing(" ".join(cron.split()), None, timezone)
    try:
        result.next_tick(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    except (CroniterBadDateError, InvalidSchedule):
        raise InvalidSchedule("cron", f"{cron!r} never happens") from None
    if min_interval is not None:
        gap = _shortest_gap(result)
        if gap < min_interval:
            raise InvalidSchedule(
                "cron", f"ticks {gap:g} seconds apart; at least {min_interval:g} required"
            )
    return result


def _shortest_gap(t: Timing) -> float:
    """The shortest time between two ticks among the next few (from a fixed date, so
    the answer does not depend on today)."""
    tick = t.next_tick(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    gap = math.inf
    for _ in range(_GAP_SAMPLES):
        following = t.next_tick(tick)
        gap = min(gap, following - tick)
        tick = following
    return gap

"""When schedules' ticks fall, computed (not waited for): cron in a time zone across
daylight-saving changes, intervals, and what a schedule's timing may be."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from errands import InvalidSchedule
from errands.schedules.timing import Timing, timing

BERLIN = ZoneInfo("Europe/Berlin")


def ticks(t: Timing, start: datetime, count: int) -> list[datetime]:
    """The ``count`` ticks after ``start``, as Berlin wall-clock datetimes."""
    out: list[datetime] = []
    at = start.timestamp()
    for _ in range(count):
        at = t.next_tick(at)
        out.append(datetime.fromtimestamp(at, BERLIN))
    return out


def test_a_daily_cron_runs_once_a_day_across_both_changes_in_berlin() -> None:
    daily = timing("0 8 * * *", None, "Europe/Berlin")
    # 2026: clocks go forward on Sunday 29 March, back on Sunday 25 October.
    for first in (datetime(2026, 3, 27, 12, tzinfo=UTC), datetime(2026, 10, 23, 12, tzinfo=UTC)):
        seen = ticks(daily, first, 5)
        assert [(d.date(), d.hour, d.minute) for d in seen] == [
            ((first + timedelta(days=k)).date(), 8, 0) for k in range(1, 6)
        ]


def test_a_tick_in_the_skipped_hour_runs_after_the_change_not_never() -> None:
    t = timing("30 2 * * *", None, "Europe/Berlin")
    seen = ticks(t, datetime(2026, 3, 27, 12, tzinfo=UTC), 4)
    # 28 March 02:30 CET; 29 March 02:30 does not exist: 03:30 CEST (01:30 UTC); then
    # 02:30 CEST on the following days.
    assert [(d.day, d.hour, d.minute) for d in seen] == [
        (28, 2, 30),
        (29, 3, 30),
        (30, 2, 30),
        (31, 2, 30),
    ]
    assert seen[1].astimezone(UTC).hour == 1
    # Real time between them (aware datetimes of one zone subtract as wall times).
    gaps = {seen[i + 1].timestamp() - seen[i].timestamp() for i in range(3)}
    assert gaps == {23 * 3600.0, 24 * 3600.0}


def test_a_tick_in_the_repeated_hour_runs_once() -> None:
    t = timing("30 2 * * *", None, "Europe/Berlin")
    seen = ticks(t, datetime(2026, 10, 23, 12, tzinfo=UTC), 4)
    assert [(d.day, d.hour, d.minute) for d in seen] == [
        (24, 2, 30),
        (25, 2, 30),
        (26, 2, 30),
        (27, 2, 30),
    ]
    # The first 02:30 of 25 October (CEST, 00:30 UTC), and only that one.
    assert seen[1].astimezone(UTC).hour == 0
    # Asking from inside the repeated hour (its second pass) gives the next day.
    second_pass = datetime(2026, 10, 25, 2, 45, tzinfo=BERLIN, fold=1).timestamp()
    following = datetime.fromtimestamp(t.next_tick(second_pass), BERLIN)
    assert (following.day, following.hour, following.minute) == (26, 2, 30)


def test_a_weekly_cron_in_the_schedules_zone() -> None:
    monday_8 = timing("0 8 * * 1", None, "America/New_York")
    start = datetime(2026, 3, 1, tzinfo=UTC).timestamp()  # New York changes on 8 March
    at = monday_8.next_tick(start)
    for _ in range(4):
        local = datetime.fromtimestamp(at, ZoneInfo("America/New_York"))
        assert (local.weekday(), local.hour, local.minute) == (0, 8, 0)
        at = monday_8.next_tick(at)


def test_intervals_keep_step_from_their_anchor() -> None:
    every = timing(None, timedelta(seconds=10), "UTC")
    assert every.next_tick(100.0, anchor=100.0) == 110.0
    # Far behind (missed ticks): the first tick after now, on the same step.
    assert every.next_tick(1_000.5, anchor=100.0) == 1_010.0
    assert every.next_tick(1_010.0, anchor=100.0) == 1_020.0
    assert every.first_tick(5.0) == 15.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "not a cron"}, "cron"),
        ({"cron": "* * * * * *"}, "cron"),  # six fields: seconds are not offered
        ({"cron": "*/5 * * * *", "min_interval": 600}, "cron"),
        ({"every": 0}, "every"),
        ({"every": -5}, "every"),
        ({"every": float("nan")}, "every"),
        ({"every": "10"}, "every"),
        ({"every": 1e300}, "every"),
        ({"cron": "0 0 30 2 *"}, "cron"),  # 30 February
        ({"every": timedelta(seconds=30), "min_interval": 60}, "every"),
        ({"cron": "0 8 * * *", "every": 60}, "cron"),
        ({}, "cron"),
        ({"cron": "0 8 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "0 8 * * *", "timezone": ""}, "timezone"),
        ({"cron": "0 8 * * *", "timezone": "../etc/passwd"}, "timezone"),
    ],
)
def test_bad_timing_is_refused_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    args = {"cron": None, "every": None, "timezone": "UTC"} | kwargs
    min_interval = args.pop("min_interval", None)
    with pytest.raises(InvalidSchedule) as caught:
        timing(args["cron"], args["every"], args["timezone"], min_interval=min_interval)
    assert caught.value.field == field


def test_the_shortest_gap_of_a_cron_is_checked_against_the_minimum() -> None:
    assert timing("* * * * *", None, "UTC", min_interval=60).cron == "* * * * *"
    assert timing("0 */2 * * *", None, "UTC", min_interval=3600).cron == "0 */2 * * *"
    with pytest.raises(InvalidSchedule):
        timing("0,1 8 * * *", None, "UTC", min_interval=120)  # 08:00 and 08:01

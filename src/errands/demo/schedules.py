"""Schedules in the demo: a search that runs again on its own.

A finished search's page offers "Repeat this search": every day, or one day a week, at
a time of day in the browser's time zone. The page's script fills in the zone
(``Intl.DateTimeFormat().resolvedOptions().timeZone``) and the current local time; both
stay editable, and without the script they are UTC and the server's clock. The server
turns the form into a cron expression (``M H * * *``, or ``M H * * D``) and creates one
of errands' users' schedules (``app.schedules``) for the signed-in user, with the
search's task name and payload; the worker the demo runs creates a search on each tick.

The Schedules page lists the user's schedules, with pause, resume and delete. As for
tasks, every call passes the user's owner id, so another user's schedule answers the
demo's 404 page exactly like a missing one. A task a schedule created says so on its
page. Administrators see every schedule at ``/admin/schedules`` (``admin.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Router

from .. import Errands, InvalidPayload, InvalidSchedule, Schedule, ScheduleNotFound, TaskRecord
from .store import User
from .tasks import title_of

if TYPE_CHECKING:
    from .web import Demo

#: The form's weekly choices and their day numbers in cron (0 is Sunday).
WEEKDAYS = {
    "monday": 1,
    "tuesday": 2,
    "wednesday": 3,
    "thursday": 4,
    "friday": 5,
    "saturday": 6,
    "sunday": 0,
}
REPEATS = ("daily", *WEEKDAYS)
_DAY_NAMES = {number: name.capitalize() for name, number in WEEKDAYS.items()} | {7: "Sunday"}
#: A time of day as ``<input type="time">`` sends it (seconds only if they are zero).
_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)(?::00)?")
PAGE_SIZE = 100
ZONE_EXAMPLE = "Europe/Berlin"


class RepeatError(ValueError):
    """A message for the person at the form."""


@dataclass(frozen=True, slots=True)
class Repeat:
    """What the "Repeat this search" form asks for."""

    cron: str
    timezone: str


def repeat_of(form: dict[str, str]) -> Repeat:
    """The schedule the form's ``repeat`` (``daily`` or a weekday), ``at`` (``HH:MM``)
    and ``timezone`` fields describe. The zone is only checked for being there: errands
    checks that it exists (``InvalidSchedule`` with the field ``timezone``)."""
    repeat = form.get("repeat", "")
    if repeat not in REPEATS:
        raise RepeatError("Choose how often: every day, or one day a week.")
    found = _TIME.fullmatch(form.get("at", "").strip())
    if found is None:
        raise RepeatError("Enter a time of day such as 08:30.")
    zone = form.get("timezone", "").strip()
    if not zone:
        raise RepeatError(f"Enter a time zone, such as {ZONE_EXAMPLE}.")
    day = "*" if repeat == "daily" else str(WEEKDAYS[repeat])
    return Repeat(f"{int(found[2])} {int(found[1])} * * {day}", zone)


def form_values(submitted: dict[str, str] | None) -> dict[str, Any]:
    """The repeat form's fields for the task page: those submitted (shown again with
    their message), or a fresh form's (which the browser's script fills in)."""
    if submitted is not None:
        fields = ("repeat", "at", "timezone")
        return {k: submitted.get(k, "") for k in fields} | {"fill": False}
    now = datetime.now(UTC)
    return {"repeat": "daily", "at": now.strftime("%H:%M"), "timezone": "UTC", "fill": True}


def refusal(exc: InvalidSchedule | InvalidPayload, zone: str, limit: int | None) -> str:
    """The form's message when errands refuses the schedule."""
    if isinstance(exc, InvalidSchedule) and exc.field == "timezone":
        shown = zone if len(zone) <= 64 else zone[:64] + "…"
        return f"“{shown}” is not a time zone this site knows. Use a name such as {ZONE_EXAMPLE}."
    if isinstance(exc, InvalidSchedule) and exc.field == "schedules":
        most = f"{limit} schedules" if limit is not None else "as many schedules as allowed"
        return (
            f"You already have {most}, the most one account may have. Delete one on the "
            "Schedules page to repeat this search."
        )
    return f"This search cannot be repeated: {exc.message}"


# -- words and times for the pages ---------------------------------------------------------
def what(schedule: Schedule) -> str:
    """What a schedule runs, as the task lists name its tasks."""
    return title_of(schedule.name, schedule.payload)


def repeats(schedule: Schedule) -> str:
    """When a schedule runs, in words: "daily at 08:00 (Europe/Berlin)", "weekly on
    Monday at 08:00 (Europe/Berlin)", "every 15 minutes", or its cron expression."""
    zone = f" ({schedule.timezone})"
    if schedule.every is not None:
        return f"every {interval(schedule.every.total_seconds())}"
    fields = (schedule.cron or "").split()
    if len(fields) == 5 and fields[2:4] == ["*", "*"]:
        minute, hour, day = fields[0], fields[1], fields[4]
        if minute.isdigit() and hour.isdigit():
            at = f"{int(hour):02d}:{int(minute):02d}"
            if day == "*":
                return f"daily at {at}{zone}"
            if day.isdigit() and int(day) in _DAY_NAMES:
                return f"weekly on {_DAY_NAMES[int(day)]} at {at}{zone}"
    return f"on cron “{schedule.cron}”{zone}"


def interval(seconds: float) -> str:
    """``every``'s words: "15 minutes", "2 hours", "90 seconds"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
    return f"{seconds:g} seconds"


def zoned(value: datetime | None, zone: str = "UTC") -> str:
    """A time as the schedule's zone reads it: "Mon 2026-06-01 08:00 CEST"."""
    if value is None:
        return ""
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        tz = ZoneInfo("UTC")
    return value.astimezone(tz).strftime("%a %Y-%m-%d %H:%M %Z")


FILTERS = {"what": what, "repeats": repeats, "zoned": zoned}


async def origin(app: Errands, record: TaskRecord, owner: str) -> Schedule | None:
    """The schedule that created ``record``, if it still exists."""
    if record.schedule_id is None:
        return None
    try:
        return await app.schedules.get(record.schedule_id, owner=owner)
    except ScheduleNotFound:
        return None


# -- the pages ------------------------------------------------------------------------------
def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


async def listing(app: Errands, owner: Any, after: str | None) -> tuple[list[Schedule], str | None]:
    """A page of ``owner``'s schedules (``ANY_OWNER``: everyone's) after the id
    ``after`` (a bad one: from the start), and the cursor of the next page."""
    try:
        found = await app.schedules.list(owner=owner, limit=PAGE_SIZE + 1, cursor=after)
    except ValueError:
        found = await app.schedules.list(owner=owner, limit=PAGE_SIZE + 1)
    more = found[PAGE_SIZE - 1].id if len(found) > PAGE_SIZE else None
    return found[:PAGE_SIZE], more


def add_pages(pages: Router, demo: Demo) -> None:
    app = demo.errands

    async def repeat(request: Request, user: User, data: dict[str, str]) -> Response:
        record = await app.get(request.path_params["task_id"], owner=user.owner)
        if record.name != "search" or record.is_group:  # a group cannot be scheduled
            return _redirect(f"/tasks/{record.id}")
        try:
            when = repeat_of(data)
            await app.schedules.create(
                record.name,
                record.payload,
                owner=user.owner,
                cron=when.cron,
                timezone=when.timezone,
            )
        except RepeatError as exc:
            return await demo.task_page(request, user, record, 422, str(exc), data)
        except (InvalidSchedule, InvalidPayload) as exc:
            full = isinstance(exc, InvalidSchedule) and exc.field == "schedules"
            zone = data.get("timezone", "").strip()
            message = refusal(exc, zone, demo.settings.max_schedules_per_user)
            return await demo.task_page(request, user, record, 409 if full else 422, message, data)
        return _redirect("/schedules")

    async def schedules_page(request: Request, user: User, data: dict[str, str]) -> Response:
        after = request.query_params.get("after") or None
        found, more = await listing(app, user.owner, after)
        return demo.render(request, "schedules.html", schedules=found, more=more, after=after)

    async def schedule_page(request: Request, user: User, data: dict[str, str]) -> Response:
        schedule = await app.schedules.get(request.path_params["schedule_id"], owner=user.owner)
        return demo.render(request, "schedule.html", schedule=schedule)

    async def pause(request: Request, user: User, data: dict[str, str]) -> Response:
        schedule_id = request.path_params["schedule_id"]
        await app.schedules.pause(schedule_id, owner=user.owner)
        return _redirect(_back(data, schedule_id))

    async def resume(request: Request, user: User, data: dict[str, str]) -> Response:
        schedule_id = request.path_params["schedule_id"]
        await app.schedules.resume(schedule_id, owner=user.owner)
        return _redirect(_back(data, schedule_id))

    async def delete(request: Request, user: User, data: dict[str, str]) -> Response:
        await app.schedules.delete(request.path_params["schedule_id"], owner=user.owner)
        return _redirect("/schedules")

    pages.add_route("/tasks/{task_id}/repeat", demo.members(repeat), methods=["POST"])
    pages.add_route("/schedules", demo.members(schedules_page), methods=["GET"])
    pages.add_route("/schedules/{schedule_id}", demo.members(schedule_page), methods=["GET"])
    for action, handler in (("pause", pause), ("resume", resume), ("delete", delete)):
        path = f"/schedules/{{schedule_id}}/{action}"
        pages.add_route(path, demo.members(handler), methods=["POST"])


def _back(data: dict[str, str], schedule_id: str) -> str:
    """Where a pause or resume goes back to: the schedule's page or the list."""
    return f"/schedules/{schedule_id}" if data.get("back") == "schedule" else "/schedules"

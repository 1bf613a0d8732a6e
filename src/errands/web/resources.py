"""The task and schedule resources: what the HTTP API shows of a record or a schedule.

Modelled on AIP-151's long-running operation: ``done`` tells whether the task has
finished, and a finished task carries exactly one of ``result`` (succeeded) or
``error`` (failed or cancelled). Errors are the record's user-safe type and message,
never a traceback; administrators also see ``owner`` and ``error.detail``. A task a
schedule created also carries ``schedule_id``, ``scheduled_for`` (its tick) and a
``schedule`` link; a group's own task carries ``group`` (``{"size"}``, its number of
parts) and a ``children`` link; a part of a group (or its ``then`` task) carries
``parent_id``, ``group_index`` and a ``group`` link. Other tasks' resources have none
of these.

The pydantic models document the shape in ``/openapi.json``; responses are built as
plain dicts by :func:`resource` and :func:`schedule_resource` (the models are not run
per request).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from ..records import CANCELLED_ERROR, Schedule, Status, TaskError, TaskRecord


class ProgressModel(BaseModel):
    current: float | None = None
    total: float | None = None
    percent: float | None = Field(None, description="0–100, when current and total are known")
    message: str | None = None
    eta_seconds: float | None = Field(
        None, description="Estimated seconds to completion, from the rate so far"
    )


class ErrorModel(BaseModel):
    type: str = Field(description="The error's kind, e.g. TaskFailed, TaskTimeout, WorkerLost")
    message: str = Field(description="A message fit for the task's owner")
    detail: str | None = Field(None, description="The traceback (administrators only)")


class LinksModel(BaseModel):
    self: str
    events: str
    output: str
    cancel: str
    ws: str | None = Field(None, description="The WebSocket, where the framework serves one")
    schedule: str | None = Field(None, description="The schedule that created the task")
    children: str | None = Field(None, description="A group's parts, in order")
    group: str | None = Field(None, description="The group the task is a part of")


class GroupModel(BaseModel):
    size: int = Field(description="The group's number of parts (its `then` task aside)")


class TaskResource(BaseModel):
    """A task, as its owner sees it."""

    id: str
    name: str
    status: Status
    done: bool
    payload: Any = None
    progress: ProgressModel
    result: Any = Field(None, description="The return value; present when status is succeeded")
    error: ErrorModel | None = Field(None, description="Present when failed or cancelled")
    attempts: int
    max_attempts: int
    priority: int
    cancel_requested: bool
    version: int = Field(description="Grows with every change; the ETag and the event id")
    output_floor: int = Field(
        description="The current attempt's output items have `seq` above this (it rises "
        "when a new attempt begins; items at or below it are no longer the output)"
    )
    run_at: datetime
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    schedule_id: str | None = Field(
        None, description="The schedule that created the task (absent for other tasks)"
    )
    scheduled_for: datetime | None = Field(
        None, description="The schedule's tick the task was created for"
    )
    group: GroupModel | None = Field(
        None, description="Present on a group's own task (absent for other tasks)"
    )
    parent_id: str | None = Field(
        None, description="The group the task is a part of (absent for other tasks)"
    )
    group_index: int | None = Field(
        None, description="The part's place in its group, from 0; its `then` task is last"
    )
    owner: str | None = Field(None, description="Administrators only")
    links: LinksModel


class TaskPage(BaseModel):
    items: list[TaskResource]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page")


class ChildrenPage(BaseModel):
    items: list[TaskResource] = Field(description="The group's parts, in order")
    next_cursor: int | None = Field(
        None,
        description="The last item's `group_index` when the page is full: pass it as "
        "`after` for the next page (null: no more)",
    )


class OutputItem(BaseModel):
    seq: int
    data: Any = None


class OutputPage(BaseModel):
    items: list[OutputItem]
    last_seq: int = Field(description="Pass as `after` for the items that follow")
    output_floor: int = Field(
        description="The current attempt's items have `seq` above this; items at or "
        "below it, read before, belong to an earlier attempt: drop them"
    )


class ScheduleLinksModel(BaseModel):
    self: str
    last_task: str | None = Field(None, description="The task the last tick created")


class ScheduleResource(BaseModel):
    """A schedule: a task of ``name`` with ``payload``, created for ``owner`` on every
    tick of ``cron`` (read in ``timezone``) or every ``every`` seconds."""

    id: str
    owner: str
    name: str
    payload: Any = None
    cron: str | None = Field(description="Five fields (null for an interval)")
    every: float | None = Field(description="Seconds between ticks (null for cron)")
    timezone: str = Field(description="The time zone cron is read in, e.g. Europe/Berlin")
    paused: bool
    next_run_at: datetime | None = Field(description="The next tick; null while paused")
    last_task_id: str | None = Field(description="The task the last tick created")
    last_run_at: datetime | None = Field(description="The last tick that created a task")
    created_at: datetime
    links: ScheduleLinksModel


class SchedulePage(BaseModel):
    items: list[ScheduleResource]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page")


_FAILED = TaskError("Error", "The task failed.")
#: What the resource (and the dashboard) shows of a record's progress, in this order.
PROGRESS_FIELDS = ("current", "total", "percent", "message")
#: The record's fields the resource shows as they are, and its times (ISO 8601).
_AS_IS = ("attempts", "max_attempts", "priority", "cancel_requested", "version", "output_floor")
_TIMES = ("run_at", "created_at", "updated_at", "started_at", "finished_at")
_LINKS = ("events", "output", "cancel")
_WS_LINKS = (*_LINKS, "ws")


def member(collection: str, item_id: str) -> str:
    """The URL path of ``item_id`` in ``collection`` (``/api/tasks`` → ``/api/tasks/ID``)."""
    return f"{collection.rstrip('/')}/{item_id}"


def iso(when: datetime | None) -> str | None:
    """A time as the resources show it (ISO 8601, with its offset), or None."""
    return None if when is None else when.isoformat()


def resource(
    record: TaskRecord,
    collection: str,
    now: datetime,
    admin: bool = False,
    ws: bool = True,
    schedules: str | None = None,
) -> dict[str, Any]:
    """The resource of ``record``; ``collection`` is the URL path of the task collection
    (``/api/tasks``); ``ws``: link the task's WebSocket (only where one is served);
    ``schedules``: the URL path of the schedule collection, where one is served (a task
    a schedule created links it)."""
    self_link = member(collection, record.id)
    progress = {k: getattr(record.progress, k) for k in PROGRESS_FIELDS}
    doc: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "status": record.status.value,
        "done": record.done,
        "payload": record.payload,
        "progress": {**progress, "eta_seconds": record.eta_seconds(now)},
    }
    if record.status is Status.SUCCEEDED:
        doc["result"] = record.result
    elif record.status in (Status.FAILED, Status.CANCELLED):
        cancelled = record.status is Status.CANCELLED
        error = record.error or (CANCELLED_ERROR if cancelled else _FAILED)
        doc["error"] = {"type": error.type, "message": error.message}
        if admin and record.error_detail:
            doc["error"]["detail"] = record.error_detail
    for name in _AS_IS:
        doc[name] = getattr(record, name)
    for name in _TIMES:
        doc[name] = iso(getattr(record, name))
    if record.schedule_id is not None:
        doc["schedule_id"] = record.schedule_id
        doc["scheduled_for"] = iso(record.scheduled_for)
    if record.group_size is not None:
        doc["group"] = {"size": record.group_size}
    if record.parent_id is not None:
        doc["parent_id"] = record.parent_id
        doc["group_index"] = record.group_index
    if admin:
        doc["owner"] = record.owner
    links = {link: f"{self_link}/{link}" for link in (_WS_LINKS if ws else _LINKS)}
    doc["links"] = {"self": self_link, **links}
    if record.schedule_id is not None and schedules is not None:
        doc["links"]["schedule"] = member(schedules, record.schedule_id)
    if record.group_size is not None:
        doc["links"]["children"] = f"{self_link}/children"
    if record.parent_id is not None:
        doc["links"]["group"] = member(collection, record.parent_id)
    return doc


def schedule_resource(schedule: Schedule, schedules: str, tasks: str | None) -> dict[str, Any]:
    """The resource of ``schedule``; ``schedules`` and ``tasks`` are the URL paths of
    the schedule and task collections (``tasks`` None: no task link)."""
    every = None if schedule.every is None else schedule.every.total_seconds()
    links = {"self": member(schedules, schedule.id)}
    if schedule.last_task_id is not None and tasks is not None:
        links["last_task"] = member(tasks, schedule.last_task_id)
    return {
        "id": schedule.id,
        "owner": schedule.owner,
        "name": schedule.name,
        "payload": schedule.payload,
        "cron": schedule.cron,
        # Whole seconds as an integer (3600, not 3600.0).
        "every": int(every) if every is not None and every.is_integer() else every,
        "timezone": schedule.timezone,
        "paused": schedule.paused,
        "next_run_at": iso(schedule.next_run_at),
        "last_task_id": schedule.last_task_id,
        "last_run_at": iso(schedule.last_run_at),
        "created_at": iso(schedule.created_at),
        "links": links,
    }


def dumps(doc: Any) -> bytes:
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate (from a "\ud800" escape): escape it again
        return json.dumps(doc, separators=(",", ":")).encode()

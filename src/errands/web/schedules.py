"""The schedules of the HTTP API, free of any web framework (as ``protocol`` is for
tasks): create, list, read, pause or resume, and delete the caller's schedules.

The adapters that serve the task API serve these too, each from its own
:class:`~errands.web.protocol.Call` (whose ``schedules`` is the URL path of the schedule
collection). The rules are the tasks': every call goes through ``app.schedules`` with the
caller's owner, so someone else's schedule gets the bytes a missing one gets (404, "No
such schedule."); administrators act on every owner's and list any owner's
(``?owner=ID`` or ``?owner=*``); bad input is a 422 naming the field and writes nothing.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, TypeAdapter, ValidationError

from ..errors import InvalidPayload, InvalidSchedule, PayloadTooLarge, UnknownTask
from ..ids import is_task_id
from ..records import Schedule
from ..schedules import Schedules, SyncSchedules
from .problems import Problem, validation_problem
from .protocol import PRIVATE, Blocking, Call, Reply, TaskProtocol, json_body
from .resources import dumps, schedule_resource

#: The longest interval a schedule may have: a hundred years (its ticks must stay
#: within the years the database's timestamps hold).
MAX_EVERY = 100 * 365 * 86400


class NewSchedule(BaseModel):
    """The body of ``POST /schedules``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255, description="The task to create")
    payload: Any = None
    cron: str | None = Field(
        None, max_length=255, description="Five fields, e.g. `0 8 * * 1`; or give `every`"
    )
    every: Annotated[float, Field(strict=True, le=MAX_EVERY)] | None = Field(
        None, description="Seconds between ticks; or give `cron`"
    )
    timezone: str = Field(
        "UTC", min_length=1, max_length=64, description="The time zone cron is read in"
    )


class ScheduleChange(BaseModel):
    """The body of ``PATCH /schedules/{id}``."""

    model_config = ConfigDict(extra="forbid")

    paused: StrictBool = Field(description="true pauses; false resumes (from now)")


NEW_SCHEDULE = TypeAdapter(NewSchedule)
SCHEDULE_CHANGE = TypeAdapter(ScheduleChange)


class ScheduleQuery(BaseModel):
    """The query of ``GET /schedules``."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = None
    owner: str | None = None


class BlockingSchedules:
    """``app.sync.schedules`` behind the async methods :class:`ScheduleProtocol`
    awaits: awaiting them never suspends (see :class:`~errands.web.protocol.Blocking`)."""

    def __init__(self, schedules: SyncSchedules) -> None:
        self.sync = schedules

    async def create(self, name: str, payload: Any = None, **options: Any) -> Schedule:
        return self.sync.create(name, payload, **options)

    async def list(self, **args: Any) -> builtins.list[Schedule]:
        return self.sync.list(**args)

    async def get(self, schedule_id: str, *, owner: str) -> Schedule:
        return self.sync.get(schedule_id, owner=owner)

    async def pause(self, schedule_id: str, *, owner: str) -> Schedule:
        return self.sync.pause(schedule_id, owner=owner)

    async def resume(self, schedule_id: str, *, owner: str) -> Schedule:
        return self.sync.resume(schedule_id, owner=owner)

    async def delete(self, schedule_id: str, *, owner: str) -> None:
        self.sync.delete(schedule_id, owner=owner)


def _validated(adapter: TypeAdapter[Any], doc: Any) -> Any:
    try:
        return adapter.validate_python(doc)
    except ValidationError as exc:
        raise validation_problem(exc.errors(include_url=False)) from None


def _invalid(field: str, message: str) -> Problem:
    return validation_problem([{"loc": [field], "msg": message}])


@dataclass(frozen=True, eq=False)
class ScheduleProtocol:
    """The handlers of the schedule resources, one method per resource and verb.

    ``schedules``: ``app.schedules`` (or :class:`BlockingSchedules`); ``body_limit``:
    the largest request body, as for tasks."""

    schedules: Schedules | BlockingSchedules
    body_limit: int

    @classmethod
    def of(cls, api: TaskProtocol) -> ScheduleProtocol:
        """The schedule handlers beside the task API ``api`` (its app, its body limit;
        in the calling thread when ``api`` runs on :class:`Blocking`)."""
        app = api.app
        if isinstance(app, Blocking):
            return cls(BlockingSchedules(app.sync.schedules), api.body_limit)
        return cls(app.schedules, api.body_limit)

    def resource(self, call: Call, schedule: Schedule) -> dict[str, Any]:
        if call.schedules is None:
            raise RuntimeError("the adapter serves schedules without their collection's URL")
        return schedule_resource(schedule, call.schedules, call.collection or None)

    def _reply(self, call: Call, schedule: Schedule, status: int = 200) -> Reply:
        doc = self.resource(call, schedule)
        headers = dict(PRIVATE)
        if status == 201:
            headers = {"Location": doc["links"]["self"], **headers}
        return Reply(status, dumps(doc), headers)

    async def create(self, call: Call, body: bytes) -> Reply:
        """``POST /schedules``: 201 with the schedule and its ``Location``."""
        doc = json_body(call, body, self.body_limit, "the schedule")
        new: NewSchedule = _validated(NEW_SCHEDULE, doc)
        try:
            schedule = await self.schedules.create(
                new.name,
                new.payload,
                owner=call.owner,
                cron=new.cron,
                every=new.every,
                timezone=new.timezone,
            )
        except InvalidSchedule as exc:
            raise _invalid(exc.field, exc.message.removeprefix(f"{exc.field}: ")) from None
        except UnknownTask:
            raise _invalid("name", "no task is registered under this name") from None
        except PayloadTooLarge as exc:
            raise Problem(413, exc.message) from None
        except InvalidPayload as exc:
            raise validation_problem(exc.errors or [{"msg": exc.message}], ["payload"]) from None
        except ValueError:
            # croniter finds no date for a valid-looking expression (the 30th of
            # February): the expression never fires.
            if new.cron is None:
                raise
            raise _invalid("cron", "has no date to run on") from None
        return self._reply(call, schedule, 201)

    async def list(self, call: Call, query: ScheduleQuery) -> Reply:
        """``GET /schedules``: the caller's schedules, oldest first; ``next_cursor`` is
        the last one's id when the page is full."""
        refusal = call.owner_refusal(query.owner)
        if refusal is None and query.owner is not None and "\x00" in query.owner:
            refusal = {"loc": ["owner"], "msg": "an owner's id, or * for all"}
        errors = [refusal] if refusal else []
        if query.cursor and not is_task_id(query.cursor):
            errors.append({"loc": ["cursor"], "msg": "not a cursor of this list"})
        if errors:
            raise validation_problem(errors)
        found = await self.schedules.list(
            owner=call.listed_owner(query.owner), limit=query.limit, cursor=query.cursor or None
        )
        doc = {
            "items": [self.resource(call, s) for s in found],
            "next_cursor": found[-1].id if len(found) == query.limit else None,
        }
        return Reply(200, dumps(doc), dict(PRIVATE))

    async def get(self, call: Call, schedule_id: str) -> Reply:
        """``GET /schedules/{id}``."""
        return self._reply(call, await self.schedules.get(schedule_id, owner=call.who))

    async def change(self, call: Call, schedule_id: str, body: bytes) -> Reply:
        """``PATCH /schedules/{id}`` with ``{"paused": true}`` (pause) or ``false``
        (resume: the next tick is the first after now)."""
        doc = json_body(call, body, self.body_limit, "the change")
        change: ScheduleChange = _validated(SCHEDULE_CHANGE, doc)
        faces = self.schedules
        act = faces.pause if change.paused else faces.resume
        return self._reply(call, await act(schedule_id, owner=call.who))

    async def delete(self, call: Call, schedule_id: str) -> Reply:
        """``DELETE /schedules/{id}``: 204 (the tasks it created stay)."""
        await self.schedules.delete(schedule_id, owner=call.who)
        return Reply(204, b"", {}, None)


__all__ = [
    "MAX_EVERY",
    "NEW_SCHEDULE",
    "SCHEDULE_CHANGE",
    "BlockingSchedules",
    "NewSchedule",
    "ScheduleChange",
    "ScheduleProtocol",
    "ScheduleQuery",
]

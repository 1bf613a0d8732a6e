"""The live event sequence of one task, shared by the SSE and WebSocket endpoints.

Events, in order:

- ``output`` — one per emitted item: ``{"seq": n, "data": ...}``;
- ``status`` — the task resource, when the status (or anything but progress) changed;
- ``progress`` — the task resource, when only the progress changed;
- ``attempt`` — a new attempt began (a retry, an expired lease, a hand-back):
  ``{"attempt": n, "output_floor": f}``. The items the client holds belong to an
  earlier attempt: it drops them; the new attempt's items follow (their ``seq`` is above
  ``f``). A status event with the new attempt's record comes next;
- ``done`` — the task resource of the finished task, after all its outputs; last.

Every event has an id ``"<version>-<seq>"``: the newest record version and output
sequence number the client has received with it. Each event's id is greater than the
one before (the version grows with record events, the sequence with outputs and
attempts), and a client that reconnects with its last id (``Last-Event-ID``) gets
exactly the events it has not seen — starting with ``attempt`` if its id is from an
earlier attempt. A record event always carries the newest state: versions a client did
not see in between are skipped, never replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime

from ..records import Progress, Status, TaskRecord
from .hub import ChangeHub, TaskFeed
from .problems import Problem
from .resources import dumps, resource

#: The database's integers are 64-bit.
MAX_INT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Cursor:
    version: int = 0
    seq: int = 0

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        """``"<version>-<seq>"``; 422 for anything else, or for numbers no task reaches
        (the database's integers are 64-bit)."""
        if not text:
            return cls()
        version, sep, seq = text.strip().partition("-")
        try:
            cursor = cls(int(version), int(seq) if sep else 0)
        except ValueError:
            cursor = cls(-1, -1)
        if not (0 <= cursor.version <= MAX_INT and 0 <= cursor.seq <= MAX_INT):
            raise Problem(
                422,
                "Invalid Last-Event-ID: expected <version>-<seq>.",
                errors=[{"field": "Last-Event-ID", "message": "expected <version>-<seq>"}],
            )
        return cursor

    def __str__(self) -> str:
        return f"{self.version}-{self.seq}"


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    id: str
    #: JSON text.
    data: str

    def sse(self) -> bytes:
        return f"id: {self.id}\nevent: {self.kind}\ndata: {self.data}\n\n".encode()

    def ws(self) -> str:
        return f'{{"event":"{self.kind}","id":"{self.id}","data":{self.data}}}'


def _encoded(
    feed: TaskFeed,
    record: TaskRecord,
    collection: str,
    admin: bool,
    ws: bool,
    schedules: str | None,
) -> str:
    key = (record.version, collection, admin, ws, schedules)
    text = feed.cache.get(key)
    if text is None:
        now = datetime.now(UTC)
        text = dumps(resource(record, collection, now, admin, ws, schedules)).decode()
        feed.cache[key] = text
    return text  # type: ignore[no-any-return]


async def task_events(
    hub: ChangeHub,
    task: TaskRecord,
    *,
    collection: str,
    admin: bool,
    cursor: Cursor,
    keepalive: float,
    ws: bool = True,
    schedules: str | None = None,
) -> AsyncGenerator[Event | None, None]:
    """The events of the task after ``cursor``, watching it (``hub.task``) while
    iterated; None now and then when nothing happened for ``keepalive`` seconds (the
    transport sends a keep-alive). ``ws`` and ``schedules``: as for ``resource``."""
    async with hub.task(task) as feed:
        version, seq = cursor.version, cursor.seq
        if (version, seq) == (0, 0) and feed.record is not None:
            seq = feed.record.output_floor  # a new client holds nothing to drop
        last_status: Status | None = None
        last_progress: Progress | None = None
        while True:
            waiter = feed.changed
            record = feed.record
            if record is not None and record.output_floor > seq:
                seq = record.output_floor
                attempt = {"attempt": record.attempts, "output_floor": seq}
                yield Event("attempt", f"{version}-{seq}", dumps(attempt).decode())
            floor = record.output_floor if record is not None else 0
            while True:  # outputs first: a finished record comes after all of them
                items = feed.items_after(seq)
                if items is None:
                    items = await hub.outputs(feed.task_id, seq, floor)
                if not items:
                    break
                for s, data in items:
                    seq = s
                    yield Event(
                        "output", f"{version}-{s}", dumps({"seq": s, "data": data}).decode()
                    )
            if feed.gone:
                yield Event("deleted", f"{version}-{seq}", dumps({"id": feed.task_id}).decode())
                return
            record = feed.record
            if record is not None and record.output_floor > seq:
                continue  # a new attempt began meanwhile: say so first
            if record is not None and record.done:
                # Last, once every output is out (also for a resumed client that already
                # has the final version but not every item).
                if feed.complete and seq >= feed.top:
                    final = max(record.version, version)
                    text = _encoded(feed, record, collection, admin, ws, schedules)
                    yield Event("done", f"{final}-{seq}", text)
                    return
            elif record is not None and record.version > version:
                only_progress = last_status is record.status and last_progress != record.progress
                kind = "progress" if only_progress else "status"
                version = record.version
                last_status, last_progress = record.status, record.progress
                yield Event(
                    kind,
                    f"{version}-{seq}",
                    _encoded(feed, record, collection, admin, ws, schedules),
                )
                continue
            try:
                # asyncio.timeout, not wait_for: no extra task per wait (a thousand watchers
                # of one task wake together on every change).
                async with asyncio.timeout(keepalive):
                    await waiter.wait()
            except TimeoutError:
                yield None


async def until_disconnected(receive: object) -> None:
    """Return when the ASGI ``receive`` callable reports the client gone."""
    while True:
        message = await receive()  # type: ignore[operator]
        if message["type"] in ("http.disconnect", "websocket.disconnect"):
            return


async def race(
    work: asyncio.Future[None] | asyncio.Task[None], watcher: asyncio.Task[None]
) -> None:
    """Run ``work`` until it ends or ``watcher`` does (the client left): then cancel
    the other and wait for it, so nothing is left running."""
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (work, watcher):
            t.cancel()  # nothing, if it is done
        for t in (work, watcher):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
    if work.done() and not work.cancelled() and work.exception() is not None:
        raise work.exception()  # type: ignore[misc]

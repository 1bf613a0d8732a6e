"""Fan-out of record changes to the live views of one process (SSE, WebSocket, waits).

A web process may have thousands of clients watching tasks. They do not each query
the database: the hub keeps one *feed* per watched task (the newest record and the
outputs read so far) and one *owner watch* per "my tasks" stream, and

- hears change hints from the notifier (Unix datagrams on SQLite, LISTEN/NOTIFY on
  PostgreSQL), and
- every ``poll_interval`` runs **one** indexed query for all of them ("which watched
  records changed since t?", on ``errands_task.updated_at``), so a lost hint costs at
  most one interval.

A changed feed is re-read once (record, then its new outputs, in one read
transaction) and every client watching it is woken to take what it has not sent yet.
All of this state lives on the event loop of the web server; notifier callbacks come
from other threads and are handed over with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..records import BlobRef, Change, TaskRecord
from ..store.database import log_failure

if TYPE_CHECKING:
    from ..events.notifier import Subscription
    from ..runtime import Runtime

log = logging.getLogger("errands.events")

#: Outputs a feed keeps in memory; clients further behind read the rest themselves.
FEED_WINDOW = 2000
READ_LIMIT = 1000
_ID_CHUNK = 500


#: Task id → (record, items of its current attempt), as the driver's ``task_snapshot``.
Snapshots = dict[str, tuple[TaskRecord, list[tuple[int, Any]]]]


def _holds_blobs(record: TaskRecord, items: list[tuple[int, Any]]) -> bool:
    return isinstance(record.result, BlobRef) or any(isinstance(d, BlobRef) for _, d in items)


class TaskFeed:
    """The newest state of one watched task, shared by all its watchers."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.record: TaskRecord | None = None
        #: True once the task was deleted while watched.
        self.gone = False
        #: Outputs with ``base < seq <= top``, in order: items of the record's current
        #: attempt only (their sequence numbers are above its ``output_floor``).
        self.items: list[tuple[int, Any]] = []
        self.base = 0
        self.top = 0
        #: False while more outputs are known to wait in the database.
        self.complete = True
        self.refs = 0
        self.changed = asyncio.Event()
        #: Encoded representations of the current record, by whoever needs them.
        self.cache: dict[Any, Any] = {}

    def items_after(self, seq: int) -> list[tuple[int, Any]] | None:
        """Outputs after ``seq``, or None when ``seq`` is older than the window."""
        if seq < self.base:
            return None
        if seq >= self.top:
            return []
        return [item for item in self.items if item[0] > seq]

    def _apply(self, record: TaskRecord, items: list[tuple[int, Any]], complete: bool) -> None:
        if self.record is None or record.version != self.record.version:
            self.cache.clear()
        self._set_record(record)
        if items:
            self.items.extend(items)
            self.top = items[-1][0]
            if len(self.items) > FEED_WINDOW:
                drop = len(self.items) - FEED_WINDOW // 2
                self.base = self.items[drop - 1][0]
                del self.items[:drop]
        self.complete = complete
        self._wake()

    def _set_record(self, record: TaskRecord) -> None:
        """Take ``record`` as the newest state; when a new attempt began, the items of
        earlier ones (at or below its floor) stop being the task's output."""
        floor = record.output_floor
        if floor > self.base:
            self.items = [item for item in self.items if item[0] > floor]
            self.base = floor
            self.top = max(self.top, floor)
        self.record = record

    def _wake(self) -> None:
        old, self.changed = self.changed, asyncio.Event()
        old.set()


class OwnerWatch:
    """Changes to one owner's tasks, for one "my tasks" stream."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.pending: dict[str, int] = {}
        self.changed = asyncio.Event()
        #: The newest version sent per task (bounded), so repeated hints send nothing.
        self.sent: OrderedDict[str, int] = OrderedDict()

    def _push(self, change: Change) -> None:
        newest = max(self.sent.get(change.task_id, 0), self.pending.get(change.task_id, 0))
        if change.version > newest:
            self.pending[change.task_id] = change.version
            self.changed.set()

    def take(self) -> list[str]:
        ids, self.pending = list(self.pending), {}
        self.changed.clear()
        return ids

    def mark_sent(self, task_id: str, version: int) -> bool:
        """Record that ``version`` went out; False if it (or a newer one) already had."""
        if self.sent.get(task_id, 0) >= version:
            return False
        self.sent[task_id] = version
        self.sent.move_to_end(task_id)
        if len(self.sent) > 10_000:
            self.sent.popitem(last=False)
        return True


class ChangeHub:
    """One per app and event loop: ``hub_for(app.runtime)``."""

    def __init__(self, runtime: Runtime, *, poll_interval: float = 1.0) -> None:
        self.runtime = runtime
        self.poll_interval = poll_interval
        self.feeds: dict[str, TaskFeed] = {}
        self.owners: dict[str, set[OwnerWatch]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscription: Subscription | None = None
        self._pending: set[str] = set()
        self._refresher: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        #: Queries the poller ran (for tests and benchmarks).
        self.polls = 0

    # -- lifetime ----------------------------------------------------------------------
    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None:  # a new server loop (tests): start afresh
            self.feeds.clear()
            self.owners.clear()
            self._pending.clear()
            self._refresher = self._poller = None
        self._loop = loop
        if self._subscription is None:
            self._subscription = self.runtime.notifier.subscribe_changes(self._on_changes)

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll_loop())

    @property
    def watchers(self) -> int:
        """Open task feeds' watchers plus owner watches (0 when nobody is watching)."""
        return sum(f.refs for f in self.feeds.values()) + sum(len(s) for s in self.owners.values())

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        for task in (self._poller, self._refresher):
            if task is not None and not task.done():
                with contextlib.suppress(RuntimeError):
                    task.cancel()

    # -- watching ----------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def task(self, record: TaskRecord) -> Any:
        """Watch a task whose record the caller has read (the owner check is the
        caller's): ``async with hub.task(record) as feed``."""
        self._bind()
        feed = self.feeds.get(record.id)
        if feed is None:
            feed = self.feeds[record.id] = TaskFeed(record.id)
            feed.refs += 1
            try:
                top = await self.runtime.db.aread(self.runtime.db.driver.output_top, record.id)
            except BaseException:
                self._release(feed)
                raise
            if top > feed.top:  # else a refresh filled the feed meanwhile: keep it
                feed.base = feed.top = top
                feed.items.clear()
            if feed.record is None or feed.record.version < record.version:
                feed._set_record(record)
            # The read above may have missed a change: look once more.
            self._pending.add(record.id)
            self._kick()
        else:
            feed.refs += 1
        self._ensure_poller()
        try:
            yield feed
        finally:
            self._release(feed)

    def _release(self, feed: TaskFeed) -> None:
        feed.refs -= 1
        if feed.refs <= 0 and self.feeds.get(feed.task_id) is feed:
            del self.feeds[feed.task_id]

    @contextlib.asynccontextmanager
    async def owner(self, owner: str) -> Any:
        """Watch every task of ``owner``: ``async with hub.owner(o) as watch``."""
        self._bind()
        watch = OwnerWatch(owner)
        self.owners.setdefault(owner, set()).add(watch)
        self._ensure_poller()
        try:
            yield watch
        finally:
            watches = self.owners.get(owner)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self.owners[owner]

    async def outputs(self, task_id: str, after: int, floor: int) -> list[tuple[int, Any]]:
        """Read outputs straight from the database (for a client behind the window):
        items after ``after`` of the attempt whose floor is ``floor`` (none if another
        attempt began since; the feed learns of it with the next change)."""
        items = await self.runtime.db.aread(
            self.runtime.db.driver.output_items, task_id, after, READ_LIMIT, floor
        )
        if any(isinstance(data, BlobRef) for _, data in items):
            items = await asyncio.to_thread(self.runtime.blobs.items, items)
        return items

    # -- hearing of changes ------------------------------------------------------------
    def _on_changes(self, changes: Sequence[Change]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._dispatch, list(changes))

    def _dispatch(self, changes: Sequence[Change]) -> None:
        for c in changes:
            feed = self.feeds.get(c.task_id)
            if feed is not None and (feed.record is None or c.version > feed.record.version):
                self._pending.add(c.task_id)
            for watch in self.owners.get(c.owner, ()):
                watch._push(c)
        self._kick()

    def _kick(self) -> None:
        if self._pending and (self._refresher is None or self._refresher.done()):
            self._refresher = asyncio.ensure_future(self._refresh())

    async def _refresh(self) -> None:
        while self._pending:
            ids, self._pending = self._pending, set()
            wants = {i: self.feeds[i].top for i in ids if i in self.feeds}
            if not wants:
                continue
            try:
                snaps = await self.runtime.db.aread(
                    self.runtime.db.driver.task_snapshot, wants, READ_LIMIT
                )
                if any(_holds_blobs(*snap) for snap in snaps.values()):
                    snaps = await asyncio.to_thread(self._load_blobs, snaps)
            except Exception as exc:
                log_failure(log, exc, "errands: reading changed tasks failed")
                self._pending |= set(wants)
                await asyncio.sleep(self.poll_interval)
                continue
            for task_id, after in wants.items():
                feed = self.feeds.get(task_id)
                if feed is None:
                    continue
                if feed.top < after:  # a new feed replaced the one read for: read again
                    self._pending.add(task_id)
                    continue
                snap = snaps.get(task_id)
                if snap is None:
                    feed.gone = True
                    feed._wake()
                    continue
                record, items = snap
                items = [item for item in items if item[0] > feed.top]
                complete = len(snap[1]) < READ_LIMIT
                feed._apply(record, items, complete)
                if not complete:
                    self._pending.add(task_id)

    def _load_blobs(self, snaps: Snapshots) -> Snapshots:
        """The values of the snapshots kept in the blob store, loaded (read after the
        database transaction: they may be megabytes)."""
        blobs = self.runtime.blobs
        return {i: (blobs.record(r), blobs.items(items)) for i, (r, items) in snaps.items()}

    async def _poll_loop(self) -> None:
        lookback = timedelta(seconds=2.0 + self.poll_interval)
        while self.feeds or self.owners:
            await asyncio.sleep(self.poll_interval)
            since = datetime.now(UTC) - lookback
            ids, owners = list(self.feeds), list(self.owners)
            try:
                for i in range(0, max(len(ids), len(owners)), _ID_CHUNK):
                    changes = await self.runtime.db.aread(
                        self.runtime.db.driver.task_changes_since,
                        since,
                        ids[i : i + _ID_CHUNK],
                        owners[i : i + _ID_CHUNK],
                    )
                    self.polls += 1
                    self._dispatch(changes)
            except Exception as exc:
                log_failure(log, exc, "errands: polling for changes failed")


_HUBS: weakref.WeakKeyDictionary[Runtime, ChangeHub] = weakref.WeakKeyDictionary()


def hub_for(runtime: Runtime) -> ChangeHub:
    """The hub of an app's runtime (made on first use, closed with the app)."""
    hub = _HUBS.get(runtime)
    if hub is None:
        hub = _HUBS[runtime] = ChangeHub(runtime)
        runtime.on_close(hub.close)
    return hub

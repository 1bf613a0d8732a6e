"""The notifier interface, the in-process implementation, and what the cross-process
notifiers share.

Callbacks run on whatever thread delivers the message (a listener thread for
cross-process notifiers, the publisher's thread for in-process delivery); they must be
quick and thread-safe (typically ``loop.call_soon_threadsafe`` or ``Event.set``).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from ..records import Change, Status
from ..store.codec import json_text
from ..store.values import Carrier

#: A new-jobs hint about one new job: (its task name, its task id). The workers that
#: run the name agree on one of them to claim it at once (``errands.worker``); a hint
#: without one (None: several jobs, or jobs queued again) wakes every worker.
Hint = tuple[str, str]
JobsCallback = Callable[[Hint | None], None]
CancelCallback = Callable[[Sequence[str]], None]
ChangesCallback = Callable[[Sequence[Change]], None]
T = TypeVar("T")
ListenerT = TypeVar("ListenerT")
SenderT = TypeVar("SenderT")


class Subscription(Protocol):
    def close(self) -> None: ...


class Notifier(Protocol):
    #: True when messages reach other processes (else only this one).
    cross_process: bool

    def publish_jobs(self, hint: Hint | None = None) -> None: ...
    def publish_cancel(self, task_ids: Sequence[str]) -> None: ...
    def publish_changes(self, changes: Sequence[Change]) -> None: ...
    def listen_worker(self, on_jobs: JobsCallback, on_cancel: CancelCallback) -> Subscription: ...
    def subscribe_changes(self, callback: ChangesCallback) -> Subscription: ...
    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Within the block, this thread's messages to other processes may be held and
        sent together at its end (one round trip on PostgreSQL)."""
        ...

    def carrier(
        self,
        *,
        jobs: bool = False,
        hint: Hint | None = None,
        changes: Sequence[Change] = (),
        written: bool = False,
    ) -> Carrier | None:
        """A write's notifications, for the write's own statement to send (see
        ``Carrier``): the new-jobs hint (about the one job ``hint`` names), these
        changes, and with ``written`` the changes of the records the statement writes.
        Carried messages reach every subscriber, this process's too, once the
        transaction commits; nothing is to be published for them. None: this notifier
        cannot be carried (publish after the commit)."""
        ...

    def close(self) -> None: ...


class _Handle(Generic[T]):
    def __init__(self, registry: set[T], item: T, lock: threading.Lock) -> None:
        self._registry, self._item, self._lock = registry, item, lock

    def close(self) -> None:
        with self._lock:
            self._registry.discard(self._item)


class LocalNotifier:
    """Delivers messages to subscribers in this process only."""

    cross_process = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: set[tuple[JobsCallback, CancelCallback]] = set()
        self._changes: set[ChangesCallback] = set()

    def publish_jobs(self, hint: Hint | None = None) -> None:
        for on_jobs, _ in self._snapshot(self._workers):
            on_jobs(hint)

    def publish_cancel(self, task_ids: Sequence[str]) -> None:
        for _, on_cancel in self._snapshot(self._workers):
            on_cancel(task_ids)

    def publish_changes(self, changes: Sequence[Change]) -> None:
        if changes:
            for callback in self._snapshot(self._changes):
                callback(changes)

    def listen_worker(self, on_jobs: JobsCallback, on_cancel: CancelCallback) -> Subscription:
        return self._add(self._workers, (on_jobs, on_cancel))

    def subscribe_changes(self, callback: ChangesCallback) -> Subscription:
        return self._add(self._changes, callback)

    def batch(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def carrier(
        self,
        *,
        jobs: bool = False,
        hint: Hint | None = None,
        changes: Sequence[Change] = (),
        written: bool = False,
    ) -> Carrier | None:
        return None

    def _add(self, registry: set[T], item: T) -> Subscription:
        with self._lock:
            registry.add(item)
        return _Handle(registry, item, self._lock)

    def _snapshot(self, registry: set[T]) -> list[T]:
        with self._lock:
            return list(registry)

    def close(self) -> None:
        with self._lock:
            self._workers.clear()
            self._changes.clear()


class CrossProcessNotifier(Generic[ListenerT, SenderT]):
    """What the cross-process notifiers share. A message is delivered in this process
    at once, then sent to the others as text: a tag (``J`` new jobs, ``C`` cancel these
    task ids, ``V`` these changes) and a JSON body, at most ``chunk`` changes (or twice
    as many task ids) per message. A subclass sends messages on a channel
    (:meth:`_send`), opens its sender on first use (:meth:`_open_sender`) and a listener
    per channel (:meth:`_listen`), which hands what it hears to :meth:`_heard`."""

    cross_process = True
    #: Where worker messages and change messages travel (a channel, a socket folder).
    workers_channel: str
    changes_channel: str
    chunk: int

    def __init__(self) -> None:
        self._local = LocalNotifier()
        self._lock = threading.Lock()
        self._listeners: dict[str, ListenerT] = {}
        self._sender: SenderT | None = None
        self._closed = False

    def _send(self, channel: str, message: str) -> None:
        raise NotImplementedError

    def _open_sender(self) -> SenderT:
        raise NotImplementedError

    def _listen(self, channel: str) -> ListenerT:
        raise NotImplementedError

    # -- publishing ------------------------------------------------------------------
    def publish_jobs(self, hint: Hint | None = None) -> None:
        self._local.publish_jobs(hint)
        self._send(self.workers_channel, jobs_message(hint))

    def publish_cancel(self, task_ids: Sequence[str]) -> None:
        if not task_ids:
            return
        self._local.publish_cancel(task_ids)
        size = self.chunk * 2
        for i in range(0, len(task_ids), size):
            self._send(self.workers_channel, "C" + json.dumps(list(task_ids[i : i + size])))

    def publish_changes(self, changes: Sequence[Change]) -> None:
        if not changes:
            return
        self._local.publish_changes(changes)
        for message in self._change_messages(changes):
            self._send(self.changes_channel, message)

    def _change_messages(self, changes: Sequence[Change]) -> list[str]:
        rows = [[c.task_id, c.owner, c.version, c.status.value] for c in changes]
        return ["V" + json_text(rows[i : i + self.chunk]) for i in range(0, len(rows), self.chunk)]

    def carrier(
        self,
        *,
        jobs: bool = False,
        hint: Hint | None = None,
        changes: Sequence[Change] = (),
        written: bool = False,
    ) -> Carrier | None:
        return None

    def _opened_sender(self) -> SenderT | None:
        """The sender, opened on first use; None once the notifier is closed."""
        if self._sender is None:
            with self._lock:
                if self._closed:
                    return None
                if self._sender is None:
                    self._sender = self._open_sender()
        return self._sender

    # -- subscribing -----------------------------------------------------------------
    def listen_worker(self, on_jobs: JobsCallback, on_cancel: CancelCallback) -> Subscription:
        self._ensure_listener(self.workers_channel)
        return self._local.listen_worker(on_jobs, on_cancel)

    def subscribe_changes(self, callback: ChangesCallback) -> Subscription:
        self._ensure_listener(self.changes_channel)
        return self._local.subscribe_changes(callback)

    def _ensure_listener(self, channel: str) -> None:
        with self._lock:
            if channel not in self._listeners and not self._closed:
                self._listeners[channel] = self._listen(channel)

    def _heard(self, message: str) -> None:
        """Deliver in this process a message that another process sent."""
        tag, body = message[:1], message[1:]
        if tag == "J":
            self._local.publish_jobs(_hint(body))
        elif tag == "C":
            self._local.publish_cancel(json.loads(body))
        elif tag == "V":
            rows = json.loads(body)
            self._local.publish_changes([Change(t, o, v, Status(s)) for t, o, v, s in rows])

    def _stop_listening(self) -> list[ListenerT]:
        """Mark the notifier closed; the listeners it had."""
        with self._lock:
            self._closed = True
            listeners, self._listeners = list(self._listeners.values()), {}
        return listeners


def jobs_message(hint: Hint | None) -> str:
    """The new-jobs message: ``J``, followed by the hint as JSON when there is one."""
    return "J" if hint is None else "J" + json_text(hint)


def _hint(body: str) -> Hint | None:
    """The hint a new-jobs message's body holds (none from a sender that sends none)."""
    if not body:
        return None
    try:
        name, task_id = json.loads(body)
    except ValueError:
        return None
    return (name, task_id) if isinstance(name, str) and isinstance(task_id, str) else None

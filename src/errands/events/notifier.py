"""The notifier interface and the in-process implementation.

Callbacks run on whatever thread delivers the message (a listener thread for
cross-process notifiers, the publisher's thread for in-process delivery); they must be
quick and thread-safe (typically ``loop.call_soon_threadsafe`` or ``Event.set``).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from ..records import Change, Status

JobsCallback = Callable[[], None]
CancelCallback = Callable[[Sequence[str]], None]
ChangesCallback = Callable[[Sequence[Change]], None]


class Subscription(Protocol):
    def close(self) -> None: ...


class Notifier(Protocol):
    #: True when messages reach other processes (else only this one).
    cross_process: bool

    def publish_jobs(self) -> None: ...
    def publish_cancel(self, task_ids: Sequence[str]) -> None: ...
    def publish_changes(self, changes: Sequence[Change]) -> None: ...
    def listen_worker(self, on_jobs: JobsCallback, on_cancel: CancelCallback) -> Subscription: ...
    def subscribe_changes(self, callback: ChangesCallback) -> Subscription: ...
    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Within the block, this thread's messages to other processes may be held and
        sent together at its end (one round trip on PostgreSQL)."""
        ...

    def close(self) -> None: ...


class _Handle:
    def __init__(self, registry: set[object], item: object, lock: threading.Lock) -> None:
        self._registry, self._item, self._lock = registry, item, lock

    def close(self) -> None:
        with self._lock:
            self._registry.discard(self._item)


class LocalNotifier:
    """Delivers messages to subscribers in this process only."""

    cross_process = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: set[object] = set()
        self._changes: set[object] = set()

    def publish_jobs(self) -> None:
        for on_jobs, _ in self._worker_callbacks():
            on_jobs()

    def publish_cancel(self, task_ids: Sequence[str]) -> None:
        for _, on_cancel in self._worker_callbacks():
            on_cancel(task_ids)

    def publish_changes(self, changes: Sequence[Change]) -> None:
        if not changes:
            return
        with self._lock:
            callbacks = list(self._changes)
        for cb in callbacks:
            cb(changes)  # type: ignore[operator]

    def listen_worker(self, on_jobs: JobsCallback, on_cancel: CancelCallback) -> Subscription:
        pair = (on_jobs, on_cancel)
        with self._lock:
            self._workers.add(pair)
        return _Handle(self._workers, pair, self._lock)

    def subscribe_changes(self, callback: ChangesCallback) -> Subscription:
        with self._lock:
            self._changes.add(callback)
        return _Handle(self._changes, callback, self._lock)

    def batch(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def _worker_callbacks(self) -> list[tuple[JobsCallback, CancelCallback]]:
        with self._lock:
            return list(self._workers)  # type: ignore[arg-type]

    def close(self) -> None:
        with self._lock:
            self._workers.clear()
            self._changes.clear()


def encode_changes(changes: Sequence[Change], size: int) -> Iterator[str]:
    """Changes as compact JSON messages of at most ``size`` changes each (for notifiers
    that carry them between processes)."""
    for i in range(0, len(changes), size):
        rows = [[c.task_id, c.owner, c.version, c.status.value] for c in changes[i : i + size]]
        yield json.dumps(rows, separators=(",", ":"))


def decode_changes(body: str | bytes) -> list[Change]:
    """The changes of one message made by :func:`encode_changes`."""
    return [Change(t, o, v, Status(s)) for t, o, v, s in json.loads(body)]

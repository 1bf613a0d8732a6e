"""Who waits on which task, in this process (``wait()``): change notifications are
routed to their callbacks, so a wait wakes as soon as its task changes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from .events.notifier import Notifier
from .records import Change


class Watchers:
    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self._lock = threading.Lock()
        self._by_task: dict[str, set[Callable[[Change], None]]] = {}
        self._subscription: Any = None

    def watch(self, task_id: str, callback: Callable[[Change], None]) -> Watch:
        """Call ``callback`` with the change (from a listener thread) whenever
        ``task_id`` changes, until the returned ``Watch`` is closed (a context manager)."""
        with self._lock:
            if self._subscription is None:
                self._subscription = self._notifier.subscribe_changes(self._on_changes)
            self._by_task.setdefault(task_id, set()).add(callback)
        return Watch(self, task_id, callback)

    def _unwatch(self, task_id: str, callback: Callable[[Change], None]) -> None:
        with self._lock:
            callbacks = self._by_task.get(task_id)
            if callbacks is not None:
                callbacks.discard(callback)
                if not callbacks:
                    del self._by_task[task_id]

    def _on_changes(self, changes: Sequence[Change]) -> None:
        with self._lock:
            hits = [(cb, c) for c in changes for cb in self._by_task.get(c.task_id, ())]
        for cb, change in hits:
            cb(change)


class Watch:
    def __init__(
        self, watchers: Watchers, task_id: str, callback: Callable[[Change], None]
    ) -> None:
        self._watchers, self._task_id, self._callback = watchers, task_id, callback

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._watchers._unwatch(self._task_id, self._callback)

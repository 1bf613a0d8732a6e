"""In-process observers of task lifecycle events (metrics, logging).

``app.observers.add(fn)``: ``fn(event)`` is called with a :class:`~errands.TaskEvent`
when this process submits a task or cancels a queued one, and when a worker in this
process starts an attempt or writes its outcome. Callbacks run on the caller's thread
and must be quick; an exception in one is logged and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .records import Status, TaskEvent

log = logging.getLogger("errands")

Observer = Callable[[TaskEvent], None]


class Observers:
    def __init__(self) -> None:
        self._callbacks: list[Observer] = []

    def add(self, callback: Observer) -> None:
        self._callbacks.append(callback)

    def remove(self, callback: Observer) -> None:
        self._callbacks.remove(callback)

    def emit(
        self, kind: str, task_id: str, name: str, status: Status, seconds: float | None
    ) -> None:
        if not self._callbacks:
            return
        event = TaskEvent(kind, task_id, name, status, seconds)
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                log.exception("errands: an observer failed")

"""TaskContext: what a running task function gets as its first argument.

Progress is coalesced: ``progress()`` only records the newest value in memory, and the
worker writes it at most once per ``progress_interval`` per task (and once more with
the final outcome), so a tight loop of calls costs a bounded number of writes and the
last value is always the one stored. Emitted items are buffered and written in order,
in batches, before the task's outcome.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .errors import TaskCancelled
from .records import storable_json, storable_text

_log = logging.getLogger("errands.task")


class TaskContext:
    """Handle of one attempt of one task, given to the task function."""

    def __init__(
        self, *, task_id: str, owner: str, name: str, attempt: int, max_attempts: int
    ) -> None:
        self.task_id = task_id
        self.owner = owner
        self.name = name
        #: 1 for the first run, 2 for the first retry, …
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.logger = logging.LoggerAdapter(_log, {"task_id": task_id, "task_name": name})
        self._lock = threading.Lock()
        self._progress: tuple[float | None, float | None, str | None] | None = None
        self._progress_dirty = False
        self._outputs: list[Any] = []
        self._cancel = False  # set once, read by the task's thread (a plain flag)

    # -- progress and output -----------------------------------------------------------
    def progress(
        self, current: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Report progress: ``current`` of ``total`` (both optional units), and a message."""
        if message is not None:
            message = storable_text(message[:1000])
        with self._lock:
            self._progress = (current, total, message)
            self._progress_dirty = True

    def emit(self, item: Any) -> None:
        """Append one JSON-serializable item to the task's output, readable while it runs
        (``TypeError`` or ``ValueError`` at once for an item that is not: NaN included)."""
        value = storable_json(item)
        with self._lock:
            self._outputs.append(value)

    # -- cancellation ------------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        """True once the task's owner asked to cancel it (or the worker is stopping it)."""
        return self._cancel

    def raise_if_cancelled(self) -> None:
        if self._cancel:
            raise TaskCancelled()

    # -- used by the worker ------------------------------------------------------------
    def _request_cancel(self) -> None:
        self._cancel = True

    def _take_progress(self) -> tuple[float | None, float | None, str | None] | None:
        """The newest progress if it changed since the last call, else None."""
        with self._lock:
            dirty, self._progress_dirty = self._progress_dirty, False
            return self._progress if dirty else None

    def _progress_unwritten(self) -> None:
        """The progress taken last was not written: take it again next time."""
        with self._lock:
            if self._progress is not None:
                self._progress_dirty = True

    def _final_progress(self) -> tuple[float | None, float | None, str | None] | None:
        with self._lock:
            self._progress_dirty = False
            return self._progress

    def _take_outputs(self) -> list[Any]:
        with self._lock:
            items, self._outputs = self._outputs, []
            return items

    def __repr__(self) -> str:
        return f"<TaskContext {self.name} {self.task_id} attempt {self.attempt}>"

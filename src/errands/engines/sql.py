"""The built-in engine: the queue is the ``errands_job`` table of the same database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..events import Notifier

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..worker import Worker, WorkerSettings


class SqlEngine:
    name = "sql"
    hinted = True
    #: The notifier of the runtime it serves (``attach``).
    _notifier: Notifier

    def attach(self, runtime: Runtime) -> None:
        self._notifier = runtime.notifier

    def queued(self, jobs: Sequence[tuple[str, float]]) -> None:
        self._notifier.publish_jobs()  # workers claim from the table; wake idle ones

    def request_cancel(self, task_ids: Sequence[str]) -> None:
        self._notifier.publish_cancel(task_ids)

    def worker(self, runtime: Runtime, settings: WorkerSettings) -> Worker:
        from ..worker import Worker

        return Worker(runtime, settings)

    def close(self) -> None:
        pass

"""The built-in engine: the queue is the ``errands_job`` table of the same database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table

from ..events import Notifier
from ..store.schema import job_table

if TYPE_CHECKING:
    from ..app import Errands
    from ..worker import Worker, WorkerSettings


class SqlEngine:
    name = "sql"

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    def queue_rows(self, jobs: Sequence[dict[str, Any]]) -> tuple[Table, Sequence[dict[str, Any]]]:
        return job_table, jobs

    def after_commit(self, task_ids: Sequence[str]) -> None:
        self._notifier.publish_jobs()

    def request_cancel(self, task_ids: Sequence[str]) -> None:
        self._notifier.publish_cancel(task_ids)

    def worker(self, app: Errands, settings: WorkerSettings) -> Worker:
        from ..worker import Worker

        return Worker(app, settings)

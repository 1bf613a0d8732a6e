"""The engine protocol: the narrow boundary between task records and execution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection

if TYPE_CHECKING:
    from ..app import Errands
    from ..worker import Worker, WorkerSettings


class Engine(Protocol):
    #: The name users select it by (``Errands(url, engine="sql")``).
    name: str

    def enqueue(self, conn: Connection, jobs: Sequence[dict[str, Any]]) -> None:
        """Queue the work for new records, inside the records' transaction.

        Each job holds ``task_id``, ``name``, ``owner``, ``priority`` and ``run_at``
        (Unix seconds)."""

    def after_commit(self, task_ids: Sequence[str]) -> None:
        """The transaction that enqueued these tasks has committed."""

    def request_cancel(self, task_ids: Sequence[str]) -> None:
        """The owners asked to cancel these running tasks; reach their workers."""

    def worker(self, app: Errands, settings: WorkerSettings) -> Worker:
        """A worker that runs this engine's work for ``app``."""

"""The engine protocol: the narrow boundary between task records and execution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..app import Errands
    from ..worker import Worker, WorkerSettings


class Engine(Protocol):
    #: The name users select it by (``Errands(url, engine="sql")``).
    name: str

    def attach(self, app: Errands) -> None:
        """Called once by the ``Errands`` app the engine serves."""

    def queued(self, jobs: Sequence[tuple[str, float]]) -> None:
        """A committed transaction queued these jobs, or queued them again (a retry, a
        job handed back or recovered): ``(task id, due time in Unix seconds)``. Must not
        block for long: it runs right after the caller's commit."""

    def request_cancel(self, task_ids: Sequence[str]) -> None:
        """The owners asked to cancel these running tasks; reach their workers."""

    def worker(self, app: Errands, settings: WorkerSettings) -> Worker:
        """A worker that runs this engine's work for ``app``."""

    def close(self) -> None:
        """Release what the engine holds (``Errands.close``)."""

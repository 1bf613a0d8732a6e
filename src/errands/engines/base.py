"""The engine protocol: the narrow boundary between task records and execution."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..runtime import Publisher

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..worker import Worker, WorkerSettings


class Engine(Publisher, Protocol):
    """Jobs are rows of ``errands_job``, inserted with their records (the store's
    driver does it); an engine hears of them after commit (``queued``), reaches the
    workers of tasks asked to cancel, and provides the workers."""

    #: The name users select it by (``Errands(url, engine="sql")``).
    name: str

    def attach(self, runtime: Runtime) -> None:
        """Called once by the ``Errands`` app the engine serves."""

    def worker(self, runtime: Runtime, settings: WorkerSettings) -> Worker:
        """A worker that runs this engine's work for ``app``."""

    def close(self) -> None:
        """Release what the engine holds (``Errands.close``)."""

"""Execution engines: what runs the work behind the task records.

An engine gets three calls from the record layer — enqueue a task inside the
transaction that creates its record, wake workers once that transaction has committed,
and reach the worker running a task whose owner asked to cancel it — and it provides
the workers. The built-in ``sql`` engine keeps its queue in ``errands_job``.
"""

from .base import Engine
from .sql import SqlEngine

__all__ = ["Engine", "SqlEngine"]

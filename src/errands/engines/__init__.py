"""Execution engines: what runs the work behind the task records.

The record layer calls an engine to get the rows that queue new work (inserted with the
records, in their transaction), to say that jobs were queued once that transaction has
committed, and to reach the worker of a task whose owner asked to cancel it; the engine
provides the workers. The built-in ``sql`` engine keeps its queue in ``errands_job``;
``errands.engines.celery.CeleryEngine`` runs the same jobs on Celery.
"""

from .base import Engine
from .sql import SqlEngine

__all__ = ["Engine", "SqlEngine"]

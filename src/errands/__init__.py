"""errands: background tasks that a web application's users can watch.

The public API is what this module exports; everything else is internal.
"""

from .app import ANY_OWNER, Errands, SyncErrands
from .context import TaskContext
from .errors import (
    ConfigurationError,
    DatabaseUnavailable,
    ErrandsError,
    IdempotencyConflict,
    InvalidPayload,
    InvalidTransition,
    PayloadTooLarge,
    Retry,
    StorageFull,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
    UnknownTask,
    WaitTimeout,
)
from .records import OutputPage, Page, Progress, Status, TaskError, TaskEvent, TaskRecord
from .registry import TaskDefinition
from .worker import Worker, WorkerSettings

__version__ = "0.1.0"

__all__ = [
    "ANY_OWNER",
    "ConfigurationError",
    "DatabaseUnavailable",
    "Errands",
    "ErrandsError",
    "IdempotencyConflict",
    "InvalidPayload",
    "InvalidTransition",
    "OutputPage",
    "Page",
    "PayloadTooLarge",
    "Progress",
    "Retry",
    "Status",
    "StorageFull",
    "SyncErrands",
    "TaskCancelled",
    "TaskContext",
    "TaskDefinition",
    "TaskError",
    "TaskEvent",
    "TaskFailed",
    "TaskNotFound",
    "TaskRecord",
    "TaskTimeout",
    "UnknownTask",
    "WaitTimeout",
    "Worker",
    "WorkerSettings",
]

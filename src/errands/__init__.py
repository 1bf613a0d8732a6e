"""errands: background tasks that a web application's users can watch.

The public API is what this module exports; everything else is internal.
"""

from .app import ANY_OWNER, SYSTEM_OWNER, Errands, SyncErrands
from .context import TaskContext
from .errors import (
    ConfigurationError,
    DatabaseUnavailable,
    ErrandsError,
    IdempotencyConflict,
    InvalidPayload,
    InvalidSchedule,
    InvalidTransition,
    PayloadTooLarge,
    Retry,
    ScheduleNotFound,
    StorageFull,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
    UnknownTask,
    WaitTimeout,
)
from .records import (
    OutputPage,
    Page,
    Progress,
    Schedule,
    Status,
    TaskError,
    TaskEvent,
    TaskRecord,
)
from .registry import TaskDefinition
from .worker import Worker, WorkerSettings

__version__ = "0.1.0"

__all__ = [
    "ANY_OWNER",
    "SYSTEM_OWNER",
    "ConfigurationError",
    "DatabaseUnavailable",
    "Errands",
    "ErrandsError",
    "IdempotencyConflict",
    "InvalidPayload",
    "InvalidSchedule",
    "InvalidTransition",
    "OutputPage",
    "Page",
    "PayloadTooLarge",
    "Progress",
    "Retry",
    "Schedule",
    "ScheduleNotFound",
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

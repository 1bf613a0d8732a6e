"""The bench tasks, Django ``@task`` functions run by either backend.

Both return ``time.time()`` taken as they start: the driver reads it back through the
backend's ``get_result`` (submit → start latency, first start of a drain).
"""

from __future__ import annotations

import time
from typing import Any

from errands.django.tasks_compat import task

from .models import Progress


@task()  # type: ignore[untyped-decorator]
def noop() -> float:
    """A trivial task: its start time."""
    return time.time()


@task(takes_context=True)  # type: ignore[untyped-decorator]
def report_progress(context: Any, reports: int) -> list[float]:
    """``reports`` progress reports, then [start time, seconds the reports took].

    errands: ``context.progress(k, reports)`` (``ErrandsTaskContext``; errands keeps the
    latest and writes it at most every 0.25 s, and with the outcome). django-tasks-db
    has no progress API: each report is one upsert of the task's ``Progress`` row, in
    autocommit — what a user of that backend writes to let a page show progress.
    """
    started = time.time()
    progress = getattr(context, "progress", None)
    for k in range(1, reports + 1):
        if progress is not None:
            progress(k, reports)
        else:
            Progress.objects.bulk_create(
                [Progress(task_id=context.task_result.id, current=k, total=reports)],
                update_conflicts=True,
                unique_fields=["task_id"],
                update_fields=["current", "total"],
            )
    return [started, time.time() - started]

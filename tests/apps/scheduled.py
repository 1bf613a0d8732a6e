"""The app of the schedule process tests: ``errands worker tests.apps.scheduled:app``.

Its code declares the schedules ``$ERRANDS_TEST_SCHEDULES`` lists (JSON: a list of
``{"key", "every"?, "cron"?}``, each a schedule of the task ``beat``), so a test can
start workers whose "code" declares different schedules, as two versions of an
application would. The database URL comes from ``$ERRANDS_DATABASE_URL``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from errands import Errands, TaskContext

app = Errands()


@app.task
async def beat(ctx: TaskContext, payload: dict[str, Any]) -> float:
    """A tick's task: when it ran."""
    return time.time()


for spec in json.loads(os.environ.get("ERRANDS_TEST_SCHEDULES", "[]")):
    app.schedule(
        "beat",
        {"key": spec["key"]},
        key=spec["key"],
        every=spec.get("every"),
        cron=spec.get("cron"),
    )

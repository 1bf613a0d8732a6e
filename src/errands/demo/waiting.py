"""Why a queued task waits: the user's own running tasks.

The demo runs its worker with ``max_running_per_owner`` (``DemoSettings.
max_running_per_user``): at most that many of one user's tasks of one kind run at once,
so one user's slow searches cannot fill every worker slot while another user's quick
search waits. A task held back by it says so on its page: "waiting: you already have
2 searches running". The note is worked out here, from the user's running tasks (an
owner-scoped count, like every read of the demo), when the page is served and again
each time its script asks (``GET /tasks/{id}/waiting``) while the task is queued; it
goes once the task starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from .. import Errands, Status, TaskRecord
from .tasks import MERGE

#: How the note names one, and several, of a kind of task.
KINDS = {
    "search": ("search", "searches"),
    "export": ("export", "exports"),
    MERGE: ("merge of searches", "merges of searches"),
}


async def note(app: Errands, tasks: Sequence[TaskRecord], owner: str) -> str | None:
    """Why the first of ``tasks`` that is queued and due waits, when it is because the
    owner already runs as many tasks of its kind as they may (None otherwise).
    ``tasks`` is a task, or a group's parts."""
    now = datetime.now(UTC)
    waiting = [t for t in tasks if t.status is Status.QUEUED and t.run_at <= now]
    caps = app.runtime.running_caps(sorted({t.name for t in waiting}))
    for task in waiting:
        cap = caps.get(task.name)
        if cap is None:
            continue
        running = await app.count(owner=owner, status=Status.RUNNING, name=task.name)
        if running >= cap:
            one, several = KINDS.get(task.name, ("task", "tasks"))
            kind = one if running == 1 else several
            return f"Waiting: you already have {running} {kind} running."
    return None

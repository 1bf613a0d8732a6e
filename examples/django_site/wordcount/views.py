"""The example's pages, all for a signed-in user: start a count, watch it live, list
one's own tasks.

Every task is read with the signed-in user as its owner, so another user's task is a
404, exactly like one that does not exist.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from errands import TaskNotFound, TaskRecord
from errands.django import get_app

from .tasks import count_words

#: Seconds after each file when "slow motion" is ticked: the count then takes a few
#: seconds, long enough to watch.
SLOW_MOTION = 0.02
MAX_LIMIT = 1000


@login_required
@require_GET
def start_page(request: HttpRequest) -> HttpResponse:
    return render(request, "wordcount/start.html", {"max_limit": MAX_LIMIT})


@login_required
@require_POST
def start(request: HttpRequest) -> HttpResponse:
    """Enqueue a count (owned by the signed-in user, through ``OwnerMiddleware``), in
    the view's transaction: if it rolled back, the task would never have existed."""
    try:
        limit = min(max(int(request.POST.get("limit", "200")), 1), MAX_LIMIT)
    except ValueError:
        limit = 200
    pause = SLOW_MOTION if request.POST.get("slow") else 0.0
    with transaction.atomic():
        result = count_words.enqueue(limit=limit, pause=pause)
    return redirect("task", task_id=result.id)


@login_required
@require_GET
def task_page(request: HttpRequest, task_id: str) -> HttpResponse:
    record = _own_task(request, task_id)
    return render(request, "wordcount/task.html", {"task": record, "title": _title(record)})


@login_required
@require_GET
def my_tasks(request: HttpRequest) -> HttpResponse:
    page = get_app().sync.list(owner=str(request.user.pk), limit=50)
    rows = [(record, _title(record)) for record in page.items]
    return render(request, "wordcount/tasks.html", {"rows": rows})


def _own_task(request: HttpRequest, task_id: str) -> TaskRecord:
    """The signed-in user's task ``task_id``; 404 for anyone else's."""
    try:
        return get_app().sync.get(task_id, owner=str(request.user.pk))
    except TaskNotFound:
        raise Http404("No such task") from None


def _title(record: TaskRecord) -> str:
    """How a page names the task: the function's name and its arguments."""
    name = record.name.rpartition(".")[2]
    payload: Any = record.payload
    kwargs = payload.get("kwargs", {}) if isinstance(payload, dict) else {}
    if name == "count_words":
        return f"Count the words of {kwargs.get('limit', 200)} modules"
    return name

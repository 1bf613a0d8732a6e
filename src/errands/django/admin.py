"""errands' task records in Django's admin.

The records (:class:`~errands.django.models.Task`) are listed newest first, filtered by
status, task name (the registered tasks) and owner (those of the latest tasks, or any
one by clicking it in the list), and searched by exact id, exact owner or part of the
name. A record's page shows it read-only: progress, payload, result, error and
traceback. Nothing is added or edited by hand; changes go through errands, as actions
on the selected records:

- **Cancel** (permission ``errands.cancel_task``): a queued task ends at once, a running
  one is asked to stop; a finished one is left as it is.
- **Retry** (``errands.retry_task``): a failed or cancelled task is submitted again, as
  a new task of the same owner, name, payload and priority.
- **Delete** (Django's ``errands.delete_task``): a finished task and its output, through
  errands. Django's own deletion is off: it would leave the output behind.

Seeing the records takes ``errands.view_task`` (and, as for all of the admin, a staff
account). Each action says what became of every selected task (a finished task cannot
be cancelled, a succeeded one cannot be retried, …) and records what it changed in the
tasks' admin history.

The actions write on errands' own connections: on SQLite, do not run them inside a
transaction of Django's (``ATOMIC_REQUESTS``), which would hold the write lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from ..errors import ErrandsError, InvalidTransition, TaskNotFound
from ..operations import ANY_OWNER
from ..records import Progress, Status
from .conf import alias, get_app
from .models import Task

#: The owner filter offers the owners of this many of the newest records.
RECENT_OWNERS = 200
#: Payloads and results longer than this (as indented JSON) are cut on the page.
SHOWN_JSON = 64 * 1024
#: A message names this many tasks, then says how many more.
NAMED = 20

#: What an action did to one task: the message level, what happened, the task's label.
Outcome = tuple[int, str, str]

F = TypeVar("F", bound=Callable[..., Any])


def display(**options: Any) -> Callable[[F], F]:
    """Django's ``admin.display``, typed (it returns the function it marks)."""
    return cast("Callable[[F], F]", admin.display(**options))


def action(**options: Any) -> Callable[[F], F]:
    """Django's ``admin.action``, typed (it returns the function it marks)."""
    return cast("Callable[[F], F]", admin.action(**options))


class NameFilter(admin.SimpleListFilter):  # type: ignore[misc]
    """The registered task names (a scan of the table for its distinct names would
    grow with it)."""

    title = "task"
    parameter_name = "name"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        names = set(get_app().registry.names())
        if self.value():
            names.add(self.value())
        return [(name, name) for name in sorted(names)]

    def queryset(self, request: Any, queryset: Any) -> Any:
        return queryset.filter(name=self.value()) if self.value() else queryset


class OwnerFilter(admin.SimpleListFilter):  # type: ignore[misc]
    """The owners of the newest records, and the chosen one."""

    title = "owner"
    parameter_name = "owner"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        newest = model_admin.get_queryset(request).order_by("-id")
        owners = set(newest.values_list("owner", flat=True)[:RECENT_OWNERS])
        if self.value():
            owners.add(self.value())
        return [(owner, owner) for owner in sorted(owners)]

    def queryset(self, request: Any, queryset: Any) -> Any:
        return queryset.filter(owner=self.value()) if self.value() else queryset


class Outcomes:
    """What an action did to each task, grouped, as the admin's messages."""

    def __init__(self) -> None:
        self._groups: dict[tuple[int, str], list[str]] = {}

    def add(self, level: int, what: str, task: str) -> None:
        self._groups.setdefault((level, what), []).append(task)

    def report(self, model_admin: Any, request: Any) -> None:
        for (level, what), tasks in self._groups.items():
            named = ", ".join(tasks[:NAMED])
            more = f" and {len(tasks) - NAMED} more" if len(tasks) > NAMED else ""
            model_admin.message_user(request, f"{what}: {named}{more}", level)


def _pretty(value: Any) -> Any:
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    if len(text) > SHOWN_JSON:
        text = f"{text[:SHOWN_JSON]}\n… ({len(text)} characters in all)"
    return format_html("<pre>{}</pre>", text)


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):  # type: ignore[misc]
    list_display = (
        "id",
        "name",
        "owner_link",
        "status_text",
        "progress_percent",
        "attempts",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", NameFilter, OwnerFilter)
    search_fields = ("id__exact", "owner__exact", "name__icontains")
    search_help_text = "An id or an owner (exactly), or part of a task's name."
    ordering = ("-id",)
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # a count per owner and name: a scan each
    actions = ("cancel_tasks", "retry_tasks", "delete_tasks")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "name",
                    "owner",
                    "status_text",
                    ("attempts", "max_attempts"),
                    "priority",
                )
            },
        ),
        ("Progress", {"fields": ("progress_bar", "progress_message")}),
        ("Payload and result", {"fields": ("payload_json", "result_json")}),
        ("Error", {"fields": ("error_type", "error_message", "traceback")}),
        (
            "Times",
            {
                "fields": (
                    "created_at",
                    "run_at",
                    "started_at",
                    "finished_at",
                    "updated_at",
                    "expires_at",
                )
            },
        ),
        (
            "Bookkeeping",
            {
                "classes": ("collapse",),
                "fields": ("version", "output_floor", "idempotency_key", "result_ref"),
            },
        ),
    )
    readonly_fields = (
        "status_text",
        "progress_bar",
        "payload_json",
        "result_json",
        "traceback",
    )

    # -- what can be done: read, and errands' own actions ---------------------------------
    def get_queryset(self, request: Any) -> Any:
        return super().get_queryset(request).using(alias())

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False  # Django's deletion (see has_remove_permission)

    def has_cancel_permission(self, request: Any) -> bool:
        return bool(request.user.has_perm("errands.cancel_task"))

    def has_retry_permission(self, request: Any) -> bool:
        return bool(request.user.has_perm("errands.retry_task"))

    def has_remove_permission(self, request: Any) -> bool:
        return bool(request.user.has_perm("errands.delete_task"))

    # -- columns ---------------------------------------------------------------------------
    @display(description="owner", ordering="owner")
    def owner_link(self, task: Task) -> Any:
        url = reverse("admin:errands_task_changelist") + "?" + urlencode({"owner": task.owner})
        return format_html('<a href="{}">{}</a>', url, task.owner)

    @display(description="status", ordering="status")
    def status_text(self, task: Task) -> str:
        if task.status == Status.RUNNING and task.cancel_requested:
            return "running (cancel requested)"
        return str(task.status)

    @display(description="progress")
    def progress_percent(self, task: Task) -> str:
        percent = Progress(task.progress_current, task.progress_total).percent
        return self.get_empty_value_display() if percent is None else f"{percent:.0f}%"

    @display(description="progress")
    def progress_bar(self, task: Task) -> Any:
        current, total = task.progress_current, task.progress_total
        percent = Progress(current, total).percent
        if percent is None:
            return self.get_empty_value_display() if current is None else f"{current:g}"
        return format_html(
            '<progress max="100" value="{}"></progress> {}% ({} of {})',
            f"{percent:.1f}",
            f"{percent:.0f}",
            f"{current:g}",
            f"{total:g}",
        )

    @display(description="payload")
    def payload_json(self, task: Task) -> Any:
        return _pretty(task.payload)

    @display(description="result")
    def result_json(self, task: Task) -> Any:
        if task.status != Status.SUCCEEDED:
            return self.get_empty_value_display()
        if task.result_ref is None:
            return _pretty(task.result)
        try:  # too large for the row: in errands' blob store
            return _pretty(get_app().sync.get(task.id, owner=ANY_OWNER).result)
        except TaskNotFound:  # deleted meanwhile
            return self.get_empty_value_display()
        except ErrandsError as exc:  # the blob is missing, the database unavailable, …
            return f"(cannot be read: {exc})"

    @display(description="traceback")
    def traceback(self, task: Task) -> Any:
        if not task.error_detail:
            return self.get_empty_value_display()
        return format_html("<pre>{}</pre>", task.error_detail)

    # -- actions -------------------------------------------------------------------------
    @action(description="Cancel selected tasks", permissions=["cancel"])
    def cancel_tasks(self, request: Any, queryset: Any) -> None:
        def cancel(task: Task) -> Outcome:
            before = Status(task.status)
            record = get_app().sync.cancel(task.id, owner=ANY_OWNER)
            if record.status is Status.RUNNING:
                what = "Asked to stop (running)"
            elif record.status is Status.CANCELLED and before is not Status.CANCELLED:
                what = "Cancelled"
            else:
                return messages.WARNING, f"Not cancelled (already {record.status})", task.id
            self.log_change(request, task, what)
            return messages.SUCCESS, what, task.id

        self._each(request, queryset, cancel, "Not cancelled")

    @action(description="Retry selected tasks", permissions=["retry"])
    def retry_tasks(self, request: Any, queryset: Any) -> None:
        def retry(task: Task) -> Outcome:
            new = get_app().sync.retry(task.id, owner=ANY_OWNER)
            self.log_change(request, task, f"Submitted again as {new.id}")
            return messages.SUCCESS, "Submitted again (old → new)", f"{task.id} → {new.id}"

        self._each(request, queryset, retry, "Not retried")

    @action(description="Delete selected finished tasks", permissions=["remove"])
    def delete_tasks(self, request: Any, queryset: Any) -> None:
        def delete(task: Task) -> Outcome:
            get_app().sync.delete(task.id, owner=ANY_OWNER)
            self.log_deletions(request, [task])
            return messages.SUCCESS, "Deleted", task.id

        self._each(request, queryset, delete, "Not deleted")

    def _each(
        self, request: Any, queryset: Iterable[Task], act: Callable[[Task], Outcome], refused: str
    ) -> None:
        """``act`` on each task and report every outcome: errands' refusals (a task in
        the wrong state for it, one deleted meanwhile, the database unavailable) are
        outcomes too, never a crash."""
        outcomes = Outcomes()
        for task in queryset:
            try:
                level, what, label = act(task)
            except TaskNotFound:
                level, what, label = messages.WARNING, f"{refused} (deleted meanwhile)", task.id
            except InvalidTransition as exc:
                level, what, label = messages.WARNING, f"{refused} ({exc})", task.id
            except ErrandsError as exc:
                level, what, label = messages.ERROR, f"{refused} ({exc})", task.id
            outcomes.add(level, what, label)
        outcomes.report(self, request)

"""``path("tasks/", include("errands.django.urls"))``: errands' HTTP API in Django.

With that include: list and submit at ``tasks/``, a task at ``tasks/<id>``, its
output, cancel and events at ``tasks/<id>/output``, ``…/cancel`` and ``…/events``, and
the signed-in user's live changes at ``tasks/events``. URL names are in the ``errands``
namespace (``reverse("errands:task", args=[id])``).
"""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "errands"
urlpatterns = [
    path("", views.tasks, name="tasks"),
    path("events", views.owner_events, name="events"),
    path("<str:task_id>", views.task, name="task"),
    path("<str:task_id>/output", views.output, name="output"),
    path("<str:task_id>/cancel", views.cancel, name="cancel"),
    path("<str:task_id>/events", views.task_events, name="task-events"),
]

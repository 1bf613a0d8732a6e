"""``path("tasks/", include("errands.django.urls"))``: errands' HTTP API in Django.

With that include: list and submit at ``tasks/``, a task at ``tasks/<id>``, its
output, a group's parts, cancel and events at ``tasks/<id>/output``, ``…/children``,
``…/cancel`` and ``…/events``, and the signed-in user's live changes at
``tasks/events``. URL names are in the ``errands``
namespace (``reverse("errands:task", args=[id])``).

Users' schedules are a second include, beside the first:
``path("schedules/", include(errands.django.urls.schedule_urls))`` — list and create at
``schedules/``, read, pause or resume (``PATCH``) and delete at ``schedules/<id>``;
URL names in the ``errands_schedules`` namespace (``reverse("errands_schedules:schedule",
args=[id])``). Schedules link the tasks they created through the first include.
"""

from __future__ import annotations

from django.urls import URLPattern, path

from . import views

app_name = "errands"
urlpatterns = [
    path("", views.tasks, name="tasks"),
    path("events", views.owner_events, name="events"),
    path("<str:task_id>", views.task, name="task"),
    path("<str:task_id>/output", views.output, name="output"),
    path("<str:task_id>/children", views.children, name="children"),
    path("<str:task_id>/cancel", views.cancel, name="cancel"),
    path("<str:task_id>/events", views.task_events, name="task-events"),
]

schedule_urlpatterns: list[URLPattern] = [
    path("", views.schedules, name="schedules"),
    path("<str:schedule_id>", views.schedule, name="schedule"),
]
#: ``include(schedule_urls)``: the schedules' URLs, in their own namespace.
schedule_urls = (schedule_urlpatterns, views.SCHEDULES_APP)

"""The example's pages (errands' HTTP API is mounted at ``tasks/`` beside them)."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.start_page, name="start"),
    path("count", views.start, name="count"),
    path("count/<str:task_id>", views.task_page, name="task"),
    path("mine", views.my_tasks, name="my-tasks"),
]

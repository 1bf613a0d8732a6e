"""``path("tasks/", include("errands.django.urls"))``: errands' HTTP API in Django."""

from __future__ import annotations

app_name = "errands"
urlpatterns: list[object] = []

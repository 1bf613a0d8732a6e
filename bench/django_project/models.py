"""What a django-tasks-db task reports progress into (that backend has no progress of
its own): one row per task, upserted at every report. The errands runs leave it empty."""

from __future__ import annotations

from django.db import models


class Progress(models.Model):  # type: ignore[misc]
    task_id = models.CharField(max_length=64, unique=True)
    current = models.IntegerField()
    total = models.IntegerField()

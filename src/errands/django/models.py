"""The errands task records as a Django model, for the admin and for queries of the
host application (joins, reports). errands owns the table (``managed = False``): its
own migrations create and change it; write it through errands, not through this model.
"""

from __future__ import annotations

from django.db import models


class Task(models.Model):
    STATUSES = [
        ("queued", "queued"),
        ("running", "running"),
        ("succeeded", "succeeded"),
        ("failed", "failed"),
        ("cancelled", "cancelled"),
    ]

    id = models.CharField(max_length=36, primary_key=True)
    owner = models.CharField(max_length=255)
    name = models.CharField(max_length=255)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=STATUSES)
    progress_current = models.FloatField(null=True)
    progress_total = models.FloatField(null=True)
    progress_message = models.TextField(null=True)
    result = models.JSONField(null=True)
    error_type = models.CharField(max_length=255, null=True)
    error_message = models.TextField(null=True)
    error_detail = models.TextField(null=True)
    attempts = models.IntegerField()
    max_attempts = models.IntegerField()
    priority = models.IntegerField()
    run_at = models.DateTimeField()
    cancel_requested = models.BooleanField()
    version = models.IntegerField()
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)
    expires_at = models.DateTimeField(null=True)
    output_floor = models.IntegerField()

    class Meta:
        managed = False
        db_table = "errands_task"
        ordering = ["-id"]
        verbose_name = "task"

    def __str__(self) -> str:
        return f"{self.name} {self.id}"

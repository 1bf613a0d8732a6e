"""The errands task records as a Django model, for the admin and for queries of the
host application (joins, reports). errands owns the table (``managed = False``): its
own migrations create and change it; write it through errands, not through this model.

Its permissions are Django's ``view_task`` and ``delete_task`` (deleting goes through
errands) and errands' own ``cancel_task`` and ``retry_task``; there is no add or change
permission, as no record is added or edited by hand.

On PostgreSQL the JSON columns (``payload``, ``result``) are ``json``, not ``jsonb``:
they read as Python values, but Django's JSON lookups (``payload__key=…``) need
``jsonb`` and do not work there; filter on the other columns.
"""

from __future__ import annotations

from typing import Any

from django.db import models


class JSONColumn(models.JSONField):  # type: ignore[misc]
    """A JSON column of errands' tables: ``json`` on PostgreSQL (not Django's ``jsonb``),
    which the drivers hand over decoded already; on SQLite a column of numeric affinity,
    where a number is kept as a number and the rest as JSON text."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if connection.vendor == "postgresql" or not isinstance(value, str):
            return value
        return super().from_db_value(value, expression, connection)


class Task(models.Model):  # type: ignore[misc]
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
    payload = JSONColumn()
    status = models.CharField(max_length=16, choices=STATUSES)
    progress_current = models.FloatField(null=True)
    progress_total = models.FloatField(null=True)
    progress_message = models.TextField(null=True)
    result = JSONColumn(null=True)
    #: A result too large for the row: its key in errands' blob store (``result`` is null).
    result_ref = models.CharField(max_length=255, null=True)
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
    idempotency_key = models.CharField(max_length=255, null=True)

    class Meta:
        managed = False
        db_table = "errands_task"
        ordering = ["-id"]
        verbose_name = "task"
        default_permissions = ("view", "delete")
        permissions = [("cancel_task", "Can cancel task"), ("retry_task", "Can retry task")]

    def __str__(self) -> str:
        return f"{self.name} {self.id}"

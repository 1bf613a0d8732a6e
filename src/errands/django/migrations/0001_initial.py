"""errands' tables, created by errands' own migrations (the one source of the schema);
later versions are applied by ``manage.py migrate`` too (``conf.upgrade_schema``).

The ``Task`` model is unmanaged: its ``CreateModel`` only tells Django's migration
state about it (for ``makemigrations`` and the admin's permissions) and creates nothing.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

import errands.django.models


def upgrade(apps: Any, schema_editor: Any) -> None:
    from errands.django.conf import migrate

    migrate(schema_editor.connection.alias)


STATUSES = [
    ("queued", "queued"),
    ("running", "running"),
    ("succeeded", "succeeded"),
    ("failed", "failed"),
    ("cancelled", "cancelled"),
]


class Migration(migrations.Migration):  # type: ignore[misc]
    # errands migrates on connections of its own: Django holds no transaction meanwhile
    # (on SQLite it would hold the write lock errands' migration needs).
    atomic = False
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [
        migrations.RunPython(upgrade, migrations.RunPython.noop),
        migrations.CreateModel(
            name="Task",
            fields=[
                ("id", models.CharField(max_length=36, primary_key=True, serialize=False)),
                ("owner", models.CharField(max_length=255)),
                ("name", models.CharField(max_length=255)),
                ("payload", errands.django.models.JSONColumn()),
                ("status", models.CharField(choices=STATUSES, max_length=16)),
                ("progress_current", models.FloatField(null=True)),
                ("progress_total", models.FloatField(null=True)),
                ("progress_message", models.TextField(null=True)),
                ("result", errands.django.models.JSONColumn(null=True)),
                ("result_ref", models.CharField(max_length=255, null=True)),
                ("error_type", models.CharField(max_length=255, null=True)),
                ("error_message", models.TextField(null=True)),
                ("error_detail", models.TextField(null=True)),
                ("attempts", models.IntegerField()),
                ("max_attempts", models.IntegerField()),
                ("priority", models.IntegerField()),
                ("run_at", models.DateTimeField()),
                ("cancel_requested", models.BooleanField()),
                ("version", models.IntegerField()),
                ("created_at", models.DateTimeField()),
                ("updated_at", models.DateTimeField()),
                ("started_at", models.DateTimeField(null=True)),
                ("finished_at", models.DateTimeField(null=True)),
                ("expires_at", models.DateTimeField(null=True)),
                ("output_floor", models.IntegerField()),
                ("idempotency_key", models.CharField(max_length=255, null=True)),
            ],
            options={
                "verbose_name": "task",
                "db_table": "errands_task",
                "ordering": ["-id"],
                "permissions": [
                    ("cancel_task", "Can cancel task"),
                    ("retry_task", "Can retry task"),
                ],
                "managed": False,
                "default_permissions": ("view", "delete"),
            },
        ),
    ]

"""errands' tables, created by errands' own migrations (the one source of the schema);
later versions are applied by ``manage.py migrate`` too (``conf.upgrade_schema``)."""

from __future__ import annotations

from typing import Any

from django.db import migrations


def upgrade(apps: Any, schema_editor: Any) -> None:
    from errands.django.conf import migrate

    migrate(schema_editor.connection.alias)


class Migration(migrations.Migration):
    # errands migrates on connections of its own: Django holds no transaction meanwhile
    # (on SQLite it would hold the write lock errands' migration needs).
    atomic = False
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [migrations.RunPython(upgrade, migrations.RunPython.noop)]

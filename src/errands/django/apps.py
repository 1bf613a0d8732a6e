"""The Django app ``errands.django`` (label ``errands``)."""

from __future__ import annotations

from django.apps import AppConfig


class ErrandsConfig(AppConfig):
    name = "errands.django"
    label = "errands"
    verbose_name = "Errands"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate
        from django.utils.module_loading import autodiscover_modules

        from .conf import upgrade_schema

        # The tasks of every installed app (their ``tasks`` modules), as Celery and
        # Django's admin find theirs: the worker, the HTTP API and get_result know them.
        autodiscover_modules("tasks")
        post_migrate.connect(upgrade_schema, sender=self)
